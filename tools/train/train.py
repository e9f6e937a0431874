"""Trains lethe-reasoner-tiny (a Qwen2-architecture model of ~3M parameters) on the synthetic reasoning tasks
of tasks.py, on CPU, seeded and reproducible, then exports it with export.py.

  /usr/bin/python3 tools/train/train.py --out models/lethe-reasoner-tiny

Loss counts only the thought-and-answer tokens (everything after the prompt's `<think>\\n`, EOS included).
"""
import argparse
import json
import math
import os
import random
import sys
import time

# One thread everywhere: on this shared 2-core machine, multi-threaded OpenMP/OpenBLAS stalls on preempted
# sibling threads and measured 3-4x slower than a single thread. Must be set before torch loads OpenBLAS.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402
from model import Config, Qwen2, greedy_batch  # noqa: E402
from tokenizer import Tok  # noqa: E402


# The fewest recent thought tokens a family's step needs besides the prompt: the walk's last line (its
# counter and where it stands), the sum's last scratchpad line (its running total), the program's last line
# (its counter, pointer and total).
LOCAL_MIN_WINDOW = {"walk": 8, "sum": 40, "prog": 40, "copy": 8}


def encode_example(tok: Tok, ex: dict) -> tuple[list[int], int, str]:
    p = tok.encode(ex["prompt"])
    full = tok.encode(ex["prompt"] + ex["completion"])
    assert full[: len(p)] == p, "prompt tokens must be a prefix of the full text's tokens"
    return full, len(p), ex["family"]


def local_visibility(length: int, prompt_len: int, window: int) -> torch.Tensor:
    """[length, length] bool: a thought token sees the prompt and the last `window` tokens only."""
    q = torch.arange(length)[:, None]
    k = torch.arange(length)[None, :]
    return (k < prompt_len) | (q - k < window)


def batches(tok: Tok, seed: int, tokens_per_batch: int, level=lambda: 1.0, pool_size: int = 256,
            copy_fraction=lambda: 0.0, local_fraction: float = 0.0, local_max_window: int = 128,
            family_weights: dict | None = None):
    """Endless stream of (ids, loss_mask, visible or None) batches; a pool of examples is sorted by length and cut
    into batches of about `tokens_per_batch` padded tokens, whose order is then shuffled (all seeded). A
    `local_fraction` of the examples is trained with its thought seeing only the prompt and a random window
    of recent tokens (`local_visibility`); the rest see everything before them."""
    stream = tasks.train_stream(seed, level, copy_fraction=copy_fraction, family_weights=family_weights)
    rng = random.Random(f"batches-{seed}")
    local_rng = random.Random(f"local-{seed}")
    while True:
        pool = [encode_example(tok, next(stream)) for _ in range(pool_size)]
        pool.sort(key=lambda e: len(e[0]))
        group: list = []
        groups = []
        for e in pool:
            if group and (len(group) + 1) * len(e[0]) > tokens_per_batch:
                groups.append(group)
                group = []
            group.append(e)
        if group:
            groups.append(group)
        rng.shuffle(groups)
        for g in groups:
            L = max(len(e[0]) for e in g)
            ids = torch.zeros(len(g), L, dtype=torch.long)
            mask = torch.zeros(len(g), L, dtype=torch.bool)
            visible = None  # None: every example sees everything before it
            for i, (full, np_, fam) in enumerate(g):
                ids[i, : len(full)] = torch.tensor(full)
                mask[i, np_: len(full)] = True  # positions whose token is a target
                if local_rng.random() < local_fraction:
                    w = local_rng.randint(LOCAL_MIN_WINDOW[fam], max(LOCAL_MIN_WINDOW[fam], local_max_window))
                    if visible is None:
                        visible = torch.ones(len(g), L, L, dtype=torch.bool)
                    visible[i] = local_visibility(L, np_, w)
            yield ids, mask, visible


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def evaluate(model: Qwen2, tok: Tok, sets: dict, batch: int = 100, max_new: int = 1400) -> dict:
    """Greedy, full-KV exact match of the final answer per family; also mean generated thought length."""
    model.eval()
    eos = tok.added[tasks.EOS]
    end_think = tok.added[tasks.END_THINK]
    res = {}
    for fam, exs in sets.items():
        ok = 0
        thought_lens = []
        samples = []
        for i in range(0, len(exs), batch):
            chunk = exs[i: i + batch]
            outs = greedy_batch(model, [tok.encode(e["prompt"]) for e in chunk], eos, max_new)
            for e, o in zip(chunk, outs):
                text = tok.decode([t for t in o if t != eos])
                ans = text.split(tasks.END_THINK)[-1].strip() if tasks.END_THINK in text else None
                ok += ans == e["answer"]
                thought_lens.append(o.index(end_think) if end_think in o else len(o))
                if len(samples) < 2 and ans != e["answer"]:
                    samples.append({"prompt": e["prompt"], "want": e["answer"], "got": text[-200:]})
        res[fam] = {"n": len(exs), "correct": ok, "accuracy": ok / len(exs),
                    "mean_thought_tokens": sum(thought_lens) / len(thought_lens), "wrong_samples": samples}
    model.train()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/lethe-reasoner-tiny")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--tokens-per-batch", type=int, default=3072)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--beta2", type=float, default=0.98)
    ap.add_argument("--curriculum", type=float, default=0.3,
                    help="fraction of the steps over which tasks grow from tasks.EASY_SETTINGS to SETTINGS")
    ap.add_argument("--copy-warmup", type=int, default=400,
                    help="first steps trained on the copy task alone (tasks.gen_copy; never evaluated): it forms "
                         "the find-and-copy attention the real tasks are built from, which they alone did not "
                         "form in 5 M tokens")
    ap.add_argument("--copy-fraction", type=float, default=0.25,
                    help="fraction of copy tasks mixed in after the warm-up")
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=500, help="quick eval (30/family) every N steps; 0 = off")
    ap.add_argument("--heldout-n", type=int, default=200)
    ap.add_argument("--ckpt", default="/tmp/lethe-reasoner-tiny.pt")
    ap.add_argument("--init-from", default="",
                    help="continue from this saved checkpoint (fresh optimizer and schedule; log appended)")
    ap.add_argument("--init-from-model", default="",
                    help="start from an exported model directory (its safetensors and tokenizer.json; fresh "
                         "optimizer and schedule, log appended); embedding rows are matched by token text")
    ap.add_argument("--local-fraction", type=float, default=0.5,
                    help="fraction of examples whose thought sees only the prompt and a random window of recent "
                         "tokens (train.LOCAL_MIN_WINDOW .. --local-max-window): the task's steps need nothing "
                         "else, and without it the model leaned on its whole past thought, so that no KV policy "
                         "could prune it")
    ap.add_argument("--local-max-window", type=int, default=128)
    ap.add_argument("--short-walks", action="store_true",
                    help="train on tasks.SHORT_WALK (the first version's walks) instead of SETTINGS' long ones: "
                         "stage 1 of the shipped model (README.md)")
    ap.add_argument("--families", default="walk:1,sum:1",
                    help="families trained and their weights in the task stream (family:weight,...); the first "
                         "two stages trained walk and sum alike, stage 3 adds prog (README.md)")
    ap.add_argument("--export-from", default="", help="skip training: export this saved checkpoint")
    args = ap.parse_args()
    if args.export_from:
        return export_saved(args)

    if args.short_walks:
        tasks.SETTINGS["walk"] = tasks.SHORT_WALK
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tok = Tok()
    cfg = Config(tok.vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
                 num_hidden_layers=args.layers, num_attention_heads=args.heads,
                 num_key_value_heads=args.kv_heads)
    model = Qwen2(cfg)
    if args.init_from:
        model.load_state_dict(torch.load(args.init_from)["state"])
    if args.init_from_model:
        init_from_model(model, tok, args.init_from_model)
    nparams = sum(p.numel() for p in model.parameters())
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "train_log.txt")
    logf = open(log_path, "a" if args.init_from or args.init_from_model else "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    log(f"args {json.dumps(vars(args))}")
    log(f"torch {torch.__version__} threads {torch.get_num_threads()} params {nparams}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, args.beta2), eps=1e-8)
    family_weights = parse_families(args.families)
    quick = {f: tasks.heldout_set(f, 30, seed=999) for f in family_weights}
    t0 = time.time()
    seen_tokens = 0
    loss_acc, n_acc = 0.0, 0
    progress = {"step": 0}

    def level() -> float:
        return max(0, progress["step"] - args.copy_warmup) / max(1e-9, args.curriculum * args.steps)

    def copy_fraction() -> float:
        return 1.0 if progress["step"] < args.copy_warmup else args.copy_fraction

    it = batches(tok, args.seed, args.tokens_per_batch, level, copy_fraction=copy_fraction,
                 local_fraction=args.local_fraction, local_max_window=args.local_max_window,
                 family_weights=family_weights)
    for step in range(args.steps):
        progress["step"] = step
        ids, mask, visible = next(it)
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(ids[:, :-1], visible=None if visible is None else visible[:, :-1, :-1])
        tgt = ids[:, 1:]
        m = mask[:, 1:]
        loss = F.cross_entropy(logits[m], tgt[m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen_tokens += ids.numel()
        loss_acc += loss.item()
        n_acc += 1
        if (step + 1) % 25 == 0 or step == 0:
            el = time.time() - t0
            log(f"step {step + 1} loss {loss_acc / n_acc:.4f} lr {lr:.2e} level {min(1.0, level()):.2f} "
                f"tokens {seen_tokens} "
                f"elapsed {el:.0f}s tok/s {seen_tokens / el:.0f}")
            loss_acc, n_acc = 0.0, 0
        if args.eval_every and (step + 1) % args.eval_every == 0:
            r = evaluate(model, tok, quick)
            log("quick-eval step %d %s" % (step + 1, {f: round(v["accuracy"], 3) for f, v in r.items()}))
            torch.save({"cfg": vars(cfg), "state": model.state_dict(), "step": step + 1}, args.ckpt + ".partial")
    train_s = time.time() - t0
    log(f"training done: {args.steps} steps, {seen_tokens} tokens (padded), {train_s:.0f}s")
    torch.save({"cfg": vars(cfg), "state": model.state_dict()}, args.ckpt)

    import export  # noqa: E402
    export.export(model, tok, args.out, args.heldout_n, log, families=list(family_weights))
    log(f"total wall time {time.time() - t0:.0f}s")


def parse_families(spec: str) -> dict:
    """`walk:1,sum:1,prog:2` -> {"walk": 1.0, "sum": 1.0, "prog": 2.0}; names must be tasks.FAMILIES."""
    out = {}
    for part in spec.split(","):
        name, _, w = part.partition(":")
        if name not in tasks.FAMILIES:
            sys.exit(f"--families: unknown family {name!r} (known: {', '.join(tasks.FAMILIES)})")
        try:
            out[name] = float(w or 1)
        except ValueError:
            sys.exit(f"--families: weight of {name} is not a number: {w!r}")
        if out[name] <= 0:
            sys.exit(f"--families: weight of {name} must be > 0")
    return out


def init_from_model(model: Qwen2, tok: Tok, model_dir: str) -> None:
    """Loads an exported model directory into `model`. Embedding rows are matched by token text, so a
    tokenizer that gained tokens keeps every old row (the new ones keep their fresh initialisation)."""
    import export  # noqa: E402
    sd = export.read_safetensors_bf16(os.path.join(model_dir, "model.safetensors"))
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    old_ids = dict(tj["model"]["vocab"])
    old_ids.update({t["content"]: t["id"] for t in tj["added_tokens"]})
    old_emb = sd["model.embed_tokens.weight"]
    emb = model.model.embed_tokens.weight.detach().clone()
    for text, new_id in list(tok.vocab.items()) + list(tok.added.items()):
        if text in old_ids:
            emb[new_id] = old_emb[old_ids[text]]
    sd["model.embed_tokens.weight"] = emb
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)


def export_saved(args):
    """Exports a checkpoint saved by a (possibly interrupted) run; appends to its train_log.txt."""
    torch.set_num_threads(args.threads)
    tok = Tok()
    saved = torch.load(args.export_from)
    cfg = Config(tok.vocab_size)
    cfg.__dict__.update(saved["cfg"])
    model = Qwen2(cfg)
    model.load_state_dict(saved["state"])
    logf = open(os.path.join(args.out, "train_log.txt"), "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    log(f"exporting {args.export_from} (step {saved.get('step', 'final')})")
    import export  # noqa: E402
    export.export(model, tok, args.out, args.heldout_n, log, families=list(parse_families(args.families)))


if __name__ == "__main__":
    main()
