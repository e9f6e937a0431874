"""Exports a trained model as a Hugging Face Qwen2 checkpoint directory: config.json, model.safetensors
(BF16, written by hand: 8-byte little-endian header length, JSON header, raw data), tokenizer files,
held-out test sets as JSONL, and accuracy.json measured with the BF16-rounded weights actually shipped.
"""
import copy
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402


def write_safetensors(path: str, tensors: dict[str, torch.Tensor]) -> None:
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name, t in tensors.items():
        t = t.detach().to(torch.bfloat16).contiguous()
        raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors_bf16(path: str) -> dict[str, torch.Tensor]:
    """Reads back what write_safetensors wrote (BF16 only) as f32 tensors."""
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = np.frombuffer(data[a:b], dtype="<i2").copy()
        out[name] = torch.from_numpy(raw).view(torch.bfloat16).float().reshape(info["shape"])
    return out


def config_json(cfg, tok) -> dict:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": tok.added[tasks.BOS],
        "eos_token_id": tok.added[tasks.EOS],
        "torch_dtype": "bfloat16",
    }


def export(model, tok, out: str, heldout_n: int, log=print, families: list[str] | None = None) -> dict:
    """Writes the model directory and evaluates its held-out sets of `families` (default: tasks.FAMILIES; a
    run trained on fewer families passes its own)."""
    from train import evaluate  # noqa: E402
    os.makedirs(out, exist_ok=True)
    sd = {k: v for k, v in model.state_dict().items()}
    if model.c.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    write_safetensors(os.path.join(out, "model.safetensors"), sd)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config_json(model.c, tok), f, indent=2)
        f.write("\n")
    tok.write(out)
    os.makedirs(os.path.join(out, "heldout"), exist_ok=True)
    sets = {}
    for fam in families or tasks.FAMILIES:
        sets[fam] = tasks.heldout_set(fam, heldout_n)
        tasks.write_jsonl(os.path.join(out, "heldout", f"{fam}.jsonl"), fam, sets[fam])
    # Evaluate exactly the shipped weights: read the BF16 file back into a copy of the model.
    shipped = copy.deepcopy(model)
    loaded = read_safetensors_bf16(os.path.join(out, "model.safetensors"))
    missing, unexpected = shipped.load_state_dict(loaded, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    res = evaluate(shipped, tok, sets)
    total = sum(r["correct"] for r in res.values())
    n = sum(r["n"] for r in res.values())
    acc = {
        "weights": "bf16 (model.safetensors as shipped)",
        "decoding": "greedy, full KV, PyTorch reference (tools/train/model.py)",
        "metric": "exact match of the text after </think> (stripped) with the answer",
        "overall": total / n,
        "families": res,
    }
    with open(os.path.join(out, "accuracy.json"), "w") as f:
        json.dump(acc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    log("accuracy " + json.dumps({f: (r["accuracy"], round(r["mean_thought_tokens"], 1)) for f, r in res.items()})
        + f" overall {total / n:.4f}")
    return acc
