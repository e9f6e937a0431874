/**
 * The decoder forward pass, shared by Qwen2 and Llama (their differences are data in the config and weights).
 *
 * `prefill` runs one sequence's prompt in a single pass (matmuls over all prompt rows); `decode` runs one
 * token for each sequence of a batch (matvecs that read every weight once for the whole batch). Both record
 * GPU work only: the caller submits, samples on the GPU and reads back one id per sequence.
 */
import type { GpuContext } from "../gpu/context.ts";
import { STORAGE_USAGE } from "../gpu/context.ts";
import type { Weight } from "../gpu/weights.ts";
import { SequenceKv } from "../kv/cache.ts";
import type { KvPolicy } from "../kv/policy.ts";
import { attentionDecodeBatch, attentionPrefill } from "../ops/attention.ts";
import { embedding } from "../ops/embedding.ts";
import { linear } from "../ops/linear.ts";
import { rmsnorm } from "../ops/rmsnorm.ts";
import { ropeQK } from "../ops/rope.ts";
import { siluMul } from "../ops/silu_mul.ts";
import type { GpuModel } from "./model.ts";

/** One sequence as the forward sees it: its cache, its policy, and the position its next token takes. */
export interface SequenceState {
  kv: SequenceKv;
  policy: KvPolicy;
  /** Position of the next token (= tokens processed so far, pruned or not). */
  pos: number;
}

/** Activation buffers for up to `rows` rows (prompt tokens or batch entries). */
interface Activations {
  rows: number;
  /** f32 [rows, hidden]: the residual stream */
  x: GPUBuffer;
  /** f32 [rows, hidden]: normalised input of a sub-block */
  h: GPUBuffer;
  /** f32 [rows, heads·headDim] */
  q: GPUBuffer;
  /** f32 [rows, kvHeads·headDim] */
  k: GPUBuffer;
  v: GPUBuffer;
  /** f32 [rows, heads·headDim]: attention output */
  att: GPUBuffer;
  /** f32 [rows, intermediate] */
  gate: GPUBuffer;
  up: GPUBuffer;
  act: GPUBuffer;
  /** u32 [rows]: token ids and positions */
  ids: GPUBuffer;
  positions: GPUBuffer;
}

/** The forward pass of one model. */
export class Forward {
  readonly ctx: GpuContext;
  readonly model: GpuModel;
  /** Prompt tokens per prefill pass (activations scale with it). */
  prefillChunk = 512;
  #act: Activations | null = null;
  /** f32 [logitRows, vocab], sized for the rows actually projected (not the prompt length). */
  #logitsBuf: GPUBuffer | null = null;
  #logitRows = 0;

  constructor(ctx: GpuContext, model: GpuModel) {
    this.ctx = ctx;
    this.model = model;
  }

  /**
   * Records the prefill of `tokens` for one sequence (appended to its cache at positions seq.pos, …) and returns
   * the logits buffer: f32 [1, vocab] for the last token, or [T, vocab] for every token with `allLogits`
   * (prompts of at most one chunk). Long prompts run in chunks of `prefillChunk` tokens so activations stay
   * within the binding limit. With a policy that scores the prompt, the scores land in the cache's score slots:
   * the observation window (the last W queries) scores every prompt token; "all" accumulates every query.
   */
  prefill(seq: SequenceState, tokens: number[], allLogits = false): GPUBuffer {
    const T = tokens.length;
    if (T === 0) throw new Error("prefill needs at least one token");
    if (allLogits && T > this.prefillChunk) {
      throw new Error(`allLogits needs a prompt of at most ${this.prefillChunk} tokens, got ${T}`);
    }
    const queries = seq.policy.prefillQueries;
    const window = queries === null ? 0 : queries === "all" ? T : Math.min(queries, T);
    // Chunk ends; the last chunk holds at least the whole observation window.
    const ends: number[] = [];
    for (let e = Math.min(T, this.prefillChunk);; e = Math.min(T, e + this.prefillChunk)) {
      ends.push(e);
      if (e === T) break;
    }
    const n = ends.length;
    if (n > 1 && queries !== "all" && T - ends[n - 2] < window && T - window > (n > 2 ? ends[n - 3] : 0)) {
      ends[ends.length - 2] = T - window;
    }
    let begin = 0;
    let logits: GPUBuffer | null = null;
    for (const end of ends) {
      const last = end === T;
      const score = queries === "all"
        ? { size: end - begin, gamma: 1 } // accumulate every query across chunks (new rows start at 0)
        : last && window > 0
        ? { size: window }
        : null;
      logits = this.#prefillChunk(seq, tokens.slice(begin, end), score, last ? allLogits : null);
      begin = end;
    }
    return logits!;
  }

  /** One prefill chunk; `logitsOf` null = no LM head, false = last row, true = every row. */
  #prefillChunk(
    seq: SequenceState,
    tokens: number[],
    score: { size: number; gamma?: number } | null,
    logitsOf: boolean | null,
  ): GPUBuffer | null {
    const c = this.model.config;
    const T = tokens.length;
    const a = this.#activations(T);
    this.ctx.write(a.ids, Uint32Array.from(tokens));
    this.ctx.write(a.positions, Uint32Array.from(tokens, (_, i) => seq.pos + i));
    embedding(this.ctx, this.model.weights.embed, a.ids, a.x, T);
    const shape = { nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim };
    this.#layers(T, (l) => {
      const start = seq.kv.layers[l].len;
      seq.kv.append(l, a.k, a.v, 0, T, seq.pos);
      const L = seq.kv.layers[l];
      attentionPrefill(this.ctx, {
        ...shape,
        q: a.q,
        k: L.k,
        v: L.v,
        kvDtype: seq.kv.layout.dtype,
        out: a.att,
        T,
        start,
        window: score === null ? undefined : { buffer: L.score, ...score },
      });
    });
    seq.pos += T;
    if (logitsOf === null) return null;
    return this.#logits(a, T, logitsOf ? 0 : T - 1);
  }

  /**
   * Records one decode step for a batch: sequence b takes token `ids[b]` (host numbers, or a GPU u32 [B]
   * buffer — e.g. the sampler's output, which avoids a round trip). Returns logits f32 [B, vocab].
   * Each layer stores the new K/V row in the caches (which evict on the GPU where a policy caps the layer)
   * and accumulates the policy's scores in the attention pass.
   */
  decode(seqs: SequenceState[], ids: number[] | GPUBuffer): GPUBuffer {
    const c = this.model.config;
    const B = seqs.length;
    const a = this.#activations(B);
    if (ids instanceof GPUBuffer) this.ctx.copy(ids, 0, a.ids, 0, B * 4);
    else this.ctx.write(a.ids, Uint32Array.from(ids));
    this.ctx.write(a.positions, Uint32Array.from(seqs, (s) => s.pos));
    embedding(this.ctx, this.model.weights.embed, a.ids, a.x, B);
    const shape = { nHeads: c.numHeads, nKvHeads: c.numKvHeads, headDim: c.headDim };
    this.#layers(B, (l) => {
      // New rows, one batched write (the cache evicts where the sequence's policy caps the layer).
      SequenceKv.appendBatch(
        this.ctx,
        l,
        a.k,
        a.v,
        seqs.map((s, b) => ({ kv: s.kv, srcRow: b, pos: s.pos, policy: s.policy })),
      );
      // One attention call for the whole batch (each sequence its own K/V, length and scores).
      attentionDecodeBatch(this.ctx, {
        ...shape,
        q: a.q,
        out: a.att,
        seqs: seqs.map((s) => {
          const L = s.kv.layers[l];
          const gamma = s.policy.decodeGamma;
          return {
            k: L.k,
            v: L.v,
            dtype: s.kv.layout.dtype,
            len: L.len,
            scores: gamma === null ? undefined : { buffer: L.score, gamma },
          };
        }),
      });
    });
    for (const s of seqs) s.pos++;
    return this.#logits(a, B, 0);
  }

  /**
   * The decoder layers over `rows` rows of the residual stream; `attend(l)` stores this layer's K/V rows
   * (a.k, a.v after RoPE) in the caches and writes the attention output to a.att.
   */
  #layers(rows: number, attend: (layer: number) => void): void {
    const ctx = this.ctx;
    const c = this.model.config;
    const a = this.#act!;
    for (let l = 0; l < c.numLayers; l++) {
      const w = this.model.weights.layers[l];
      // Attention block: x += o(attention(rope(q(h)), rope(k(h)), v(h))), h = rmsnorm(x).
      rmsnorm(ctx, a.x, w.inputNorm, a.h, rows, c.hiddenSize, c.rmsNormEps);
      linear(ctx, w.q, a.h, a.q, rows, { bias: w.qBias ?? undefined });
      linear(ctx, w.k, a.h, a.k, rows, { bias: w.kBias ?? undefined });
      linear(ctx, w.v, a.h, a.v, rows, { bias: w.vBias ?? undefined });
      ropeQK(ctx, a.q, a.k, a.positions, this.model.invFreq, rows, c.numHeads, c.numKvHeads, c.headDim);
      attend(l);
      linear(ctx, w.o, a.att, a.x, rows, { accumulate: true });
      // MLP block: x += down(silu(gate(h)) · up(h)), h = rmsnorm(x).
      rmsnorm(ctx, a.x, w.postNorm, a.h, rows, c.hiddenSize, c.rmsNormEps);
      linear(ctx, w.gate, a.h, a.gate, rows);
      linear(ctx, w.up, a.h, a.up, rows);
      siluMul(ctx, a.gate, a.up, a.act, rows, c.intermediateSize);
      linear(ctx, w.down, a.act, a.x, rows, { accumulate: true });
    }
  }

  /** Final norm and LM head over rows [from, rows) of the residual stream → a.logits rows [0, rows − from). */
  #logits(a: Activations, rows: number, from: number): GPUBuffer {
    const c = this.model.config;
    const n = rows - from;
    if (from > 0) this.ctx.copy(a.x, from * c.hiddenSize * 4, a.h, 0, n * c.hiddenSize * 4);
    rmsnorm(
      this.ctx,
      from > 0 ? a.h : a.x,
      this.model.weights.finalNorm,
      a.att,
      n,
      c.hiddenSize,
      c.rmsNormEps,
    );
    if (n > this.#logitRows) {
      if (this.#logitsBuf) this.ctx.destroyLater(this.#logitsBuf);
      this.#logitRows = Math.max(n, 8);
      this.#logitsBuf = this.ctx.createBuffer(this.#logitRows * c.vocabSize * 4, "logits");
    }
    const lm: Weight = this.model.weights.lmHead;
    linear(this.ctx, lm, a.att, this.#logitsBuf!, n);
    return this.#logitsBuf!;
  }

  #activations(rows: number): Activations {
    if (this.#act && this.#act.rows >= rows) return this.#act;
    if (this.#act) this.#destroy(this.#act);
    const c = this.model.config;
    const r = Math.max(rows, 8);
    const f32 = (n: number, label: string) => this.ctx.createBuffer(r * n * 4, label, STORAGE_USAGE);
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    this.#act = {
      rows: r,
      x: f32(c.hiddenSize, "x"),
      h: f32(c.hiddenSize, "h"),
      q: f32(qDim, "q"),
      k: f32(kvDim, "k"),
      v: f32(kvDim, "v"),
      att: f32(Math.max(qDim, c.hiddenSize), "att"),
      gate: f32(c.intermediateSize, "gate"),
      up: f32(c.intermediateSize, "up"),
      act: f32(c.intermediateSize, "act"),
      ids: f32(1, "ids"),
      positions: f32(1, "positions"),
    };
    return this.#act;
  }

  #destroy(a: Activations): void {
    for (const b of [a.x, a.h, a.q, a.k, a.v, a.att, a.gate, a.up, a.act, a.ids, a.positions]) {
      this.ctx.destroyLater(b);
    }
  }

  /** Frees the activation buffers. */
  destroy(): void {
    if (this.#act) this.#destroy(this.#act);
    this.#act = null;
    if (this.#logitsBuf) this.ctx.destroyLater(this.#logitsBuf);
    this.#logitsBuf = null;
    this.#logitRows = 0;
  }
}
