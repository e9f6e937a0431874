"""Writes {text, ids} pairs (training-style texts of every family, both splits, plus a few odd strings) for
check_parity.ts, and the tokenizer files to compare against.

  /usr/bin/python3 tools/train/make_parity.py /tmp/parity 300
  deno run -A tools/train/check_parity.ts /tmp/parity /tmp/parity/parity.json
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402
from tokenizer import Tok  # noqa: E402


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    os.makedirs(out, exist_ok=True)
    tok = Tok()
    tok.write(out)
    rng = random.Random("parity")
    cases = []
    for i in range(n):
        ex = tasks.sample(tasks.FAMILIES[i % len(tasks.FAMILIES)], rng, heldout=i % 2 == 0)
        text = ex["prompt"] + ex["completion"]
        cases.append({"text": text, "ids": tok.encode(text)})
    for text in ["Hello World! \u00e4\u00f6\u00fc \U0001F600 tabs\tand  spaces\n\n", "lists listing the end ends sorted",
                 "<think>x</think><\uff5cUser\uff5c>"]:
        cases.append({"text": text, "ids": tok.encode(text)})
    with open(os.path.join(out, "parity.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)
    print(f"wrote {len(cases)} cases to {out}/parity.json")


if __name__ == "__main__":
    main()
