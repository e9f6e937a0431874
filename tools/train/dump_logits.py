"""Writes PyTorch logits of the exported checkpoint (BF16 weights read back from model.safetensors) for a few
held-out prompts, plus the PyTorch greedy continuation, so check_ref_forward.ts can compare Lethe's CPU
reference forward (and its Engine) against them.

  /usr/bin/python3 tools/train/dump_logits.py models/lethe-reasoner-tiny /tmp/logits.json [N_PER_FAMILY]
"""
import json
import os
import sys

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402
from export import read_safetensors_bf16  # noqa: E402
from model import Config, Qwen2, greedy_batch  # noqa: E402
from tokenizer import Tok  # noqa: E402


def main():
    d, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(1)
    cj = json.load(open(os.path.join(d, "config.json")))
    cfg = Config(cj["vocab_size"], cj["hidden_size"], cj["intermediate_size"], cj["num_hidden_layers"],
                 cj["num_attention_heads"], cj["num_key_value_heads"], cj["max_position_embeddings"],
                 cj["rms_norm_eps"], cj["rope_theta"], cj["tie_word_embeddings"])
    model = Qwen2(cfg)
    model.load_state_dict(read_safetensors_bf16(os.path.join(d, "model.safetensors")), strict=False)
    model.eval()
    tok = Tok()
    cases = []
    for fam in tasks.FAMILIES:
        rows = [json.loads(l) for l in open(os.path.join(d, "heldout", f"{fam}.jsonl"))][:n]
        for r in rows:
            ids = tok.encode(r["prompt"])
            gen = greedy_batch(model, [ids], tok.added[tasks.EOS], 512)[0]
            full = ids + gen
            with torch.no_grad():
                logits = model(torch.tensor([full]))[0]
            cases.append({"family": fam, "prompt_ids": ids, "greedy_ids": gen,
                          "logits": [[round(float(x), 5) for x in logits[p]] for p in range(len(full))]})
    json.dump(cases, open(out, "w"))
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
