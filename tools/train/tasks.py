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
  prog   - run a small program: a loop that moves a pointer along a table of arrows and adds where it lands to
           a running total (mod 100). Each line counts down, looks the pointer's arrow up in the prompt's
           table and adds its target to the total carried from the line before with the sum's scratchpad. A
           line is ~24 tokens, so one lap of the table (3-6 lines) is longer than a small KV budget's recent
           window: unlike a walk, whose last lap repeats the whole map in a few recent tokens, the table must
           be kept alive far back in the prompt while the total (recent state, never recomputable) is carried
           line to line.

Numbers 10..99 written with a leading space are single tokens (see tokenizer.py), so a lookup is "find the
token I just wrote, copy what follows it" - the attention pattern the KV policies must keep working.

Train and held-out splits are disjoint by construction: a question belongs to the held-out split exactly
when a hash of its text falls in the held-out bucket (see `is_heldout`).
"""
import hashlib
import json
import random

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"

FAMILIES = ["walk", "sum", "prog"]

# Full difficulty: held-out sets and most of training. Thoughts of ~250-1200 (walk) and ~100-330 (sum) tokens.
# A walk takes 10-100 laps of a map of 3-6 arrows, so its thought is long against the facts it needs (the map
# and its last line), the shape of the long reasoning traces that KV pruning is for.
SETTINGS = {
    "walk": {"min_n": 3, "max_n": 6, "min_steps": 60, "max_steps": 299},
    "sum": {"min_count": 3, "max_count": 10},
    "prog": {"min_n": 3, "max_n": 6, "min_steps": 15, "max_steps": 50},
}

# The first version's walks (4-12 arrows, 20-99 steps): stage 1 of the shipped model's training
# (`train.py --short-walks`, see README.md), which stage 2 then lengthens to SETTINGS.
SHORT_WALK = {"min_n": 4, "max_n": 12, "min_steps": 20, "max_steps": 99}

# Easiest settings of the training curriculum (train.py ramps from these to SETTINGS): attention finds its
# lookups in short contexts first.
EASY_SETTINGS = {
    "walk": {"min_n": 2, "max_n": 3, "min_steps": 1, "max_steps": 4},
    "sum": {"min_count": 2, "max_count": 3},
    "prog": {"min_n": 2, "max_n": 3, "min_steps": 1, "max_steps": 4},
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


def shuffled_cycle(rng: random.Random, n: int) -> tuple[dict, list[str]]:
    """n distinct two-digit numbers in one cycle: the successor of each (in cycle order, the first number
    first) and its arrows `a>b` in shuffled order, as the walk's map and the program's table write them."""
    nums = rng.sample(range(10, 100), n)  # the cycle nums[0] -> nums[1] -> ... -> nums[-1] -> nums[0]
    nxt = {nums[i]: nums[(i + 1) % n] for i in range(n)}
    pairs = [f"{a}>{b}" for a, b in nxt.items()]
    rng.shuffle(pairs)
    return nxt, pairs


def write_jsonl(path: str, family: str, rows: list[dict]) -> None:
    """Task rows as the engine's evaluation reads them: prompt, answer and family per line."""
    with open(path, "w", encoding="utf-8") as f:
        for ex in rows:
            f.write(json.dumps({"prompt": ex["prompt"], "answer": ex["answer"], "family": family},
                               ensure_ascii=False) + "\n")


def gen_walk(rng: random.Random, s: dict) -> tuple[str, str, str]:
    n = rng.randint(s["min_n"], s["max_n"])
    k = rng.randint(s["min_steps"], s["max_steps"])
    nxt, pairs = shuffled_cycle(rng, n)
    cur = rng.choice(list(nxt))
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


def prog_line(left: int, cur: int, nxt: int, total: int) -> str:
    """One step of the program: `#left`, the arrow looked up, and total + nxt (mod 100) worked digit by digit
    with the sum's scratchpad (units, then tens with the carry; the hundreds are dropped)."""
    r1, r0 = divmod(total, 10)
    x1, x0 = divmod(nxt, 10)
    t0 = r0 + x0
    t1 = r1 + x1 + t0 // 10
    new = (total + nxt) % 100
    assert new == (t1 % 10) * 10 + t0 % 10
    return f"#{left} {cur}>{nxt}:{r0}+{x0}={t0:02d},{r1}+{x1}+{t0 // 10}={t1:02d},={new:02d}"


def gen_prog(rng: random.Random, s: dict) -> tuple[str, str, str]:
    n = rng.randint(s["min_n"], s["max_n"])
    k = rng.randint(s["min_steps"], s["max_steps"])
    nxt, pairs = shuffled_cycle(rng, n)
    cur = rng.choice(list(nxt))
    total = rng.randint(10, 99)
    question = f"run {k} steps from {cur} adding to {total}. table: " + ", ".join(pairs) + "."
    lines = []
    for left in range(k, 0, -1):
        lines.append(prog_line(left, cur, nxt[cur], total))
        total = (total + nxt[cur]) % 100
        cur = nxt[cur]
    thought = "\n".join(lines) + f"\nso the total is {total:02d}."
    return question, thought, f"{total:02d}"


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


GENERATORS = {"walk": gen_walk, "sum": gen_sum, "prog": gen_prog, "copy": gen_copy}


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


def distinct_heldout(family: str, rng: random.Random, n: int, seen: set) -> list[dict]:
    """n held-out tasks of `family` whose questions are not in `seen` nor repeated (adds them to `seen`)."""
    out = []
    while len(out) < n:
        ex = sample(family, rng, heldout=True)
        if ex["question"] not in seen:
            seen.add(ex["question"])
            out.append(ex)
    return out


def heldout_set(family: str, n: int, seed: int = 1234) -> list[dict]:
    """The fixed held-out test set of a family (distinct questions, fixed seed)."""
    return distinct_heldout(family, random.Random(f"heldout-{family}-{seed}"), n, set())


def train_stream(seed: int, level=lambda: 1.0, full_fraction: float = 0.25, copy_fraction=lambda: 0.0,
                 family_weights: dict | None = None):
    """Endless, seeded stream of training tasks of random families. `level()` (0..1) is the curriculum
    position; a `full_fraction` of tasks is always drawn at the full settings, and a `copy_fraction()` are the
    training-only copy warm-up. `family_weights` (default: walk and sum alike, the first two stages' mix)
    weights the families drawn."""
    rng = random.Random(f"train-{seed}")
    weights = family_weights or {"walk": 1, "sum": 1}
    fams = list(weights)
    equal = len(set(weights.values())) == 1
    while True:
        if rng.random() < copy_fraction():
            yield sample("copy", rng, heldout=False, settings={"copy": {"min_count": 3, "max_count": 12}})
            continue
        # Equal weights draw with rng.choice, as the first two stages did, so their streams are unchanged.
        fam = rng.choice(fams) if equal else rng.choices(fams, weights=[weights[f] for f in fams])[0]
        settings = SETTINGS if rng.random() < full_fraction else interpolate_settings(level())
        yield sample(fam, rng, heldout=False, settings=settings)


def fresh_sets(seed: int, n: int, families: list[str] | None = None) -> dict[str, list[dict]]:
    """Held-out-split tasks drawn with a new generator seed, for claims that must hold on samples never seen
    while settings were chosen: questions in the shipped held-out files (seed 1234, whose #30-59 are the
    settings split) or the trainer's quick sets (seed 999) are skipped."""
    out = {}
    for fam in families or FAMILIES:
        seen = {ex["question"] for ex in heldout_set(fam, 200) + heldout_set(fam, 30, seed=999)}
        out[fam] = distinct_heldout(fam, random.Random(f"fresh-{fam}-{seed}"), n, seen)
    return out


if __name__ == "__main__":
    import argparse
    import os

    ap = argparse.ArgumentParser(description="Prints one example per family, or writes fresh held-out sets.")
    ap.add_argument("--fresh-seed", type=int, help="write N fresh held-out tasks per family drawn with this seed")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", default="bench/data/reasoner-fresh", help="directory of FAMILY.jsonl (--fresh-seed)")
    args = ap.parse_args()
    if args.fresh_seed is None:
        rng = random.Random(0)
        for f in FAMILIES:
            ex = sample(f, rng, heldout=False)
            print(ex["prompt"] + ex["completion"])
            print("-----")
    else:
        os.makedirs(args.out, exist_ok=True)
        for fam, rows in fresh_sets(args.fresh_seed, args.n).items():
            path = os.path.join(args.out, f"{fam}.jsonl")
            write_jsonl(path, fam, rows)
            print(f"{path}: {len(rows)} tasks (seed {args.fresh_seed})")
