"""Qwen2 decoder in plain PyTorch, with the Hugging Face Qwen2 semantics (so exported weights run unchanged
in Lethe): RMSNorm (computed in f32), RoPE with rotate_half and `rope_theta`, grouped-query attention with
q/k/v biases and no o bias, SiLU-gated MLP without biases, final norm, lm_head tied to the embedding when
`tie_word_embeddings`.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config:
    def __init__(self, vocab_size, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                 rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.tie_word_embeddings = tie_word_embeddings
        self.head_dim = hidden_size // num_attention_heads


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def _diag(T, S, past_len):
    d = torch.zeros(T, S, dtype=torch.bool)
    d[torch.arange(T), torch.arange(T) + past_len] = True
    return d[None, None]


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(positions, head_dim, theta):
    """positions [B, T] (int64) → cos, sin [B, 1, T, head_dim]."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[..., None] * inv  # [B, T, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos()[:, None], emb.sin()[:, None]


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        d = c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * d, bias=True)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * d, bias=True)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * d, bias=True)
        self.o_proj = nn.Linear(c.num_attention_heads * d, c.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, cache=None):
        B, T, _ = x.shape
        c = self.c
        d = c.head_dim
        q = self.q_proj(x).view(B, T, c.num_attention_heads, d).transpose(1, 2)
        k = self.k_proj(x).view(B, T, c.num_key_value_heads, d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, c.num_key_value_heads, d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if "k" in cache:
                k = torch.cat((cache["k"], k), dim=2)
                v = torch.cat((cache["v"], v), dim=2)
            cache["k"], cache["v"] = k, v
        rep = c.num_attention_heads // c.num_key_value_heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        att = att + mask
        att = torch.softmax(att.float(), dim=-1).to(q.dtype)
        y = (att @ v).transpose(1, 2).reshape(B, T, c.num_attention_heads * d)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class Qwen2(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        if not c.tie_word_embeddings:
            self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def logits_of(self, h):
        w = self.model.embed_tokens.weight if self.c.tie_word_embeddings else self.lm_head.weight
        return h @ w.t()

    def forward(self, ids, positions=None, key_pad=None, caches=None, past_len=0, visible=None):
        """ids [B, T]; positions [B, T] (default past_len + arange); key_pad [B, past_len + T] bool, True
        where a key is padding; visible [B, T, past_len + T] bool, False where a query may not see a key
        (besides causality). Returns logits [B, T, V]."""
        B, T = ids.shape
        if positions is None:
            positions = (torch.arange(T) + past_len)[None].expand(B, T)
        cos, sin = rope_cos_sin(positions, self.c.head_dim, self.c.rope_theta)
        S = past_len + T
        causal = torch.ones(T, S, dtype=torch.bool).tril(diagonal=past_len)
        allowed = causal[None, None]
        if visible is not None:
            allowed = allowed & visible[:, None]
        if key_pad is not None:
            allowed = allowed & ~key_pad[:, None, None, :]
            # Each query may always see itself, so left-padding rows stay finite (their outputs are unused).
            allowed = allowed | _diag(T, S, past_len)
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, float("-inf"))
        x = self.model.embed_tokens(ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, mask, None if caches is None else caches[i])
        return self.logits_of(self.model.norm(x))


@torch.no_grad()
def greedy_batch(model: Qwen2, prompts: list[list[int]], eos: int, max_new: int) -> list[list[int]]:
    """Greedy decoding of a batch of prompts with a KV cache (left padding; positions start at 0 per row)."""
    B = len(prompts)
    L = max(len(p) for p in prompts)
    ids = torch.zeros(B, L, dtype=torch.long)
    pad = torch.zeros(B, L, dtype=torch.bool)
    pos = torch.zeros(B, L, dtype=torch.long)
    for b, p in enumerate(prompts):
        off = L - len(p)
        ids[b, off:] = torch.tensor(p)
        pad[b, :off] = True
        pos[b, off:] = torch.arange(len(p))
    caches = [{} for _ in model.model.layers]
    logits = model(ids, positions=pos, key_pad=pad, caches=caches)
    nxt = logits[:, -1].argmax(-1)
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    cur_pos = pos[:, -1] + 1
    past = L
    for _ in range(max_new):
        for b in range(B):
            if not done[b]:
                out[b].append(int(nxt[b]))
        done = done | (nxt == eos)
        if bool(done.all()):
            break
        pad = torch.cat((pad, torch.zeros(B, 1, dtype=torch.bool)), dim=1)
        logits = model(nxt[:, None], positions=cur_pos[:, None], key_pad=pad, caches=caches, past_len=past)
        past += 1
        cur_pos = cur_pos + 1
        nxt = logits[:, -1].argmax(-1)
    return out
