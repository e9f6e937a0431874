"""Deterministic, seeded generator of synthetic reasoning tasks rendered in the DeepSeek-R1 chat style.

Families (every step of a thought looks a fact up far back in the prompt, keyed by a token the thought has
just written, then does a small local computation):
  walk   - pointer chasing: the prompt gives a map of arrows between two-digit numbers (one cycle, pairs in
           shuffled order), a start and a number of steps; each thought line counts down the steps left
           (`#k`: one token below 100, a `#k // 10` token and a digit from 100 on), names where the walk
           stands and looks up where its arrow points. Every lap of the walk reads the whole map again, so the
           map is the fact far back that must survive pruning while the walk's own past lines are never needed
           again.
  sum    - add a list of distinct two-digit numbers; each thought line names the number it added last, looks
           up the number that follows it in the prompt, and adds it to the running total with a written
           digit-by-digit scratchpad (units first, with carries).

Numbers 10..99 written with a leading space are single tokens (see tokenizer.py), so a lookup is "find the
token I just wrote, copy what follows it" - the attention pattern the KV policies must keep working.

Train and held-out splits are disjoint by construction: a question belongs to the held-out split exactly
when a hash of its text falls in the held-out bucket (see `is_heldout`).
"""
import hashlib
import random

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"

FAMILIES = ["walk", "sum"]

# Full difficulty: held-out sets and most of training. Thoughts of ~250-1200 (walk) and ~100-330 (sum) tokens.
# A walk takes 10-100 laps of a map of 3-6 arrows, so its thought is long against the facts it needs (the map
# and its last line), the shape of the long reasoning traces that KV pruning is for.
SETTINGS = {
    "walk": {"min_n": 3, "max_n": 6, "min_steps": 60, "max_steps": 299},
    "sum": {"min_count": 3, "max_count": 10},
}

# The first version's walks (4-12 arrows, 20-99 steps): stage 1 of the shipped model's training
# (`train.py --short-walks`, see README.md), which stage 2 then lengthens to SETTINGS.
SHORT_WALK = {"min_n": 4, "max_n": 12, "min_steps": 20, "max_steps": 99}

# Easiest settings of the training curriculum (train.py ramps from these to SETTINGS): attention finds its
# lookups in short contexts first.
EASY_SETTINGS = {
    "walk": {"min_n": 2, "max_n": 3, "min_steps": 1, "max_steps": 4},
    "sum": {"min_count": 2, "max_count": 3},
}


def interpolate_settings(level: float) -> dict:
    """Settings a fraction `level` (0..1) of the way from EASY_SETTINGS to SETTINGS (rounded)."""
    level = max(0.0, min(1.0, level))
    return {f: {k: round(EASY_SETTINGS[f][k] + level * (v - EASY_SETTINGS[f][k])) for k, v in s.items()}
            for f, s in SETTINGS.items()}


def is_heldout(question: str) -> bool:
    """One question in 8 (by SHA-256 of its text) is reserved for the held-out split."""
    return hashlib.sha256(question.encode("utf-8")).digest()[0] % 8 == 0


def render_prompt(question: str) -> str:
    return f"{BOS}{USER}{question}{ASSISTANT}{THINK}\n"


def render_completion(thought: str, answer: str) -> str:
    return f"{thought}\n{END_THINK}\n\n{answer}{EOS}"


def gen_walk(rng: random.Random, s: dict) -> tuple[str, str, str]:
    n = rng.randint(s["min_n"], s["max_n"])
    k = rng.randint(s["min_steps"], s["max_steps"])
    nums = rng.sample(range(10, 100), n)  # the cycle nums[0] -> nums[1] -> ... -> nums[-1] -> nums[0]
    nxt = {nums[i]: nums[(i + 1) % n] for i in range(n)}
    pairs = [f"{a}>{b}" for a, b in nxt.items()]
    rng.shuffle(pairs)
    cur = rng.choice(nums)
    question = f"walk {k} steps from {cur}. map: " + ", ".join(pairs) + "."
    lines = []
    for left in range(k, 0, -1):
        lines.append(f"#{left} {cur}>{nxt[cur]}")
        cur = nxt[cur]
    thought = "\n".join(lines) + f"\nso the walk ends at {cur}."
    return question, thought, str(cur)


def sum_line(prev: str, x: int, total: int) -> str:
    """One scratchpad line: `prev` is the token written last, x the number after it in the prompt."""
    r2, r1, r0 = (int(c) for c in f"{total:03d}")
    x1, x0 = divmod(x, 10)
    t0 = r0 + x0
    t1 = r1 + x1 + t0 // 10
    t2 = r2 + t1 // 10
    new = total + x
    assert new == t2 * 100 + (t1 % 10) * 10 + t0 % 10
    return f" {prev} {x}:{r0}+{x0}={t0:02d},{r1}+{x1}+{t0 // 10}={t1:02d},{r2}+{t1 // 10}={t2},={new:03d}"


def gen_sum(rng: random.Random, s: dict) -> tuple[str, str, str]:
    n = rng.randint(s["min_count"], s["max_count"])
    nums = rng.sample(range(10, 100), n)
    question = "add the numbers " + " ".join(str(x) for x in nums) + "."
    lines = []
    total = 0
    prev = "numbers"
    for x in nums:
        lines.append(sum_line(prev, x, total))
        total += x
        prev = str(x)
    lines.append(f" {prev}.")
    thought = "\n".join(lines) + f"\nso the sum is {total}."
    return question, thought, str(total)


def gen_copy(rng: random.Random, s: dict) -> tuple[str, str, str]:
    """Training-only warm-up (never evaluated): the sum family's lookups without its arithmetic. Each line
    names the number written last and copies the one that follows it in the prompt, the pure "find the token,
    copy its successor" step that the real families are built from."""
    n = rng.randint(s["min_count"], s["max_count"])
    nums = rng.sample(range(10, 100), n)
    question = "copy the numbers " + " ".join(str(x) for x in nums) + "."
    prev = "numbers"
    lines = []
    for x in nums:
        lines.append(f" {prev} {x}")
        prev = str(x)
    lines.append(f" {prev}.")
    return question, "\n".join(lines) + "\nso the list is " + " ".join(map(str, nums)) + ".", " ".join(map(str, nums))


GENERATORS = {"walk": gen_walk, "sum": gen_sum, "copy": gen_copy}


def sample(family: str, rng: random.Random, heldout: bool, settings: dict | None = None) -> dict:
    """Draws one task of `family` from the train (heldout=False) or held-out split."""
    s = (settings or SETTINGS)[family]
    while True:
        q, t, a = GENERATORS[family](rng, s)
        if is_heldout(q) == heldout:
            return {
                "family": family,
                "question": q,
                "prompt": render_prompt(q),
                "completion": render_completion(t, a),
                "answer": a,
            }


def heldout_set(family: str, n: int, seed: int = 1234) -> list[dict]:
    """The fixed held-out test set of a family (distinct questions, fixed seed)."""
    rng = random.Random(f"heldout-{family}-{seed}")
    seen = set()
    out = []
    while len(out) < n:
        ex = sample(family, rng, heldout=True)
        if ex["question"] not in seen:
            seen.add(ex["question"])
            out.append(ex)
    return out


def train_stream(seed: int, level=lambda: 1.0, full_fraction: float = 0.25, copy_fraction=lambda: 0.0):
    """Endless, seeded stream of training tasks of random families. `level()` (0..1) is the curriculum
    position; a `full_fraction` of tasks is always drawn at the full settings, and a `copy_fraction()` are the
    training-only copy warm-up."""
    rng = random.Random(f"train-{seed}")
    while True:
        if rng.random() < copy_fraction():
            yield sample("copy", rng, heldout=False, settings={"copy": {"min_count": 3, "max_count": 12}})
            continue
        fam = rng.choice(FAMILIES)
        settings = SETTINGS if rng.random() < full_fraction else interpolate_settings(level())
        yield sample(fam, rng, heldout=False, settings=settings)


if __name__ == "__main__":
    rng = random.Random(0)
    for f in FAMILIES:
        ex = sample(f, rng, heldout=False)
        print(ex["prompt"] + ex["completion"])
        print("-----")
