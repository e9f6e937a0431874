"""Deterministic, seeded generator of synthetic reasoning tasks rendered in the DeepSeek-R1 chat style.

Families (each step of a thought looks back at facts stated far earlier, in the prompt or the thought):
  chain  - a linear chain of variable definitions (mod 10) given in shuffled order; the thought walks the
           chain from its root, restating each definition it looked up and the value it computes.
  sum    - add a list of distinct two-digit numbers; each thought line looks up the next number in the prompt
           and adds it to the running total with a written digit-by-digit scratchpad (units first).
  merge  - merge two sorted lists of distinct numbers; each line restates both list heads and takes the
           smaller, and the answer copies the taken numbers back out of the thought.

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

FAMILIES = ["chain", "sum", "merge"]

# Default difficulty (tuned so a few-million-parameter model learns them on 2 CPU cores within ~40 min).
SETTINGS = {
    "chain": {"min_len": 6, "max_len": 10},
    "sum": {"min_count": 4, "max_count": 7},
    "merge": {"min_len": 3, "max_len": 6},
}

LETTERS = "abcdefghijklmnopqrstuvwxyz"


# Easiest settings of the training curriculum (train.py ramps from these to SETTINGS): attention has to find
# its lookups in short contexts first; from scratch on full-length tasks the model stayed at chance on every
# looked-up digit for 1000 steps.
EASY_SETTINGS = {
    "chain": {"min_len": 2, "max_len": 3},
    "sum": {"min_count": 2, "max_count": 2},
    "merge": {"min_len": 1, "max_len": 2},
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


def gen_chain(rng: random.Random, s: dict) -> tuple[str, str, str]:
    n = rng.randint(s["min_len"], s["max_len"])
    names = rng.sample(LETTERS, n)
    root_val = rng.randint(0, 9)
    defs = [f"{names[0]} = {root_val}"]
    steps = [f"{names[0]} = {root_val}"]
    val = root_val
    for i in range(1, n):
        op = rng.choice("+-")
        k = rng.randint(1, 9)
        new = (val + k) % 10 if op == "+" else (val - k) % 10
        defs.append(f"{names[i]} = {names[i - 1]} {op} {k}")
        steps.append(f"{names[i]} = {names[i - 1]} {op} {k} = {val} {op} {k} = {new}")
        val = new
    shuffled = defs[:]
    rng.shuffle(shuffled)
    question = "values are mod 10.\n" + "\n".join(shuffled) + f"\nwhat is {names[-1]}?"
    thought = "\n".join(steps) + f"\nso {names[-1]} is {val}."
    return question, thought, str(val)


def gen_sum(rng: random.Random, s: dict) -> tuple[str, str, str]:
    n = rng.randint(s["min_count"], s["max_count"])
    nums = rng.sample(range(10, 100), n)
    question = "add the numbers.\n" + " ".join(str(x) for x in nums)
    lines = []
    total = 0
    for x in nums:
        a, b = f"{total:03d}", f"{x:03d}"
        cols = []
        carry = 0
        for j in (2, 1, 0):
            t = int(a[j]) + int(b[j]) + carry
            cols.append(f"{a[j]}+{b[j]}+{carry}={t:02d}")
            carry = t // 10
        total += x
        lines.append(f"{a} + {b}: " + " ".join(cols) + f" so {total:03d}")
    thought = "\n".join(lines) + f"\nso the sum is {total}."
    return question, thought, str(total)


def gen_merge(rng: random.Random, s: dict) -> tuple[str, str, str]:
    na = rng.randint(s["min_len"], s["max_len"])
    nb = rng.randint(s["min_len"], s["max_len"])
    pool = rng.sample(range(10, 100), na + nb)
    a = sorted(pool[:na])
    b = sorted(pool[na:])
    question = "merge the sorted lists.\na: " + " ".join(map(str, a)) + "\nb: " + " ".join(map(str, b))
    i = j = 0
    out = []
    lines = []
    while i < na or j < nb:
        ha = str(a[i]) if i < na else "end"
        hb = str(b[j]) if j < nb else "end"
        if j >= nb or (i < na and a[i] < b[j]):
            take = a[i]
            i += 1
        else:
            take = b[j]
            j += 1
        out.append(take)
        lines.append(f"a {ha} b {hb} take {take}")
    merged = " ".join(map(str, out))
    thought = "\n".join(lines) + "\nso the merged list is " + merged + "."
    return question, thought, merged


GENERATORS = {"chain": gen_chain, "sum": gen_sum, "merge": gen_merge}


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


def train_stream(seed: int, level=lambda: 1.0, full_fraction: float = 0.25):
    """Endless, seeded stream of training tasks of random families. `level()` (0..1) is the curriculum
    position; a `full_fraction` of tasks is always drawn at the full settings."""
    rng = random.Random(f"train-{seed}")
    while True:
        fam = rng.choice(FAMILIES)
        settings = SETTINGS if rng.random() < full_fraction else interpolate_settings(level())
        yield sample(fam, rng, heldout=False, settings=settings)


if __name__ == "__main__":
    rng = random.Random(0)
    for f in FAMILIES:
        ex = sample(f, rng, heldout=False)
        print(ex["prompt"] + ex["completion"])
        print("-----")
