/**
 * Token selection on the GPU for a batch of rows: one argmax dispatch when every row is greedy (and plain),
 * else one sampling dispatch per row with that row's temperature, top-k, top-p, seed and step — after, where a
 * row asks, its penalties and min_p were applied to a copy of its logits (wgsl/logits.wgsl), and followed by its
 * logprobs and the increment of its token counts. Only the ids (and logprob records) are read back, never the
 * logits.
 */
import { type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
import {
  biasBuffer,
  countToken,
  hasBias,
  hasPenalties,
  logprobsRow,
  MAX_TOP_LOGPROBS,
  processes,
  processLogits,
} from "../ops/logits.ts";
import { sampleRows } from "../ops/sample.ts";

/** How the next token is chosen. temperature 0 (or below {@link MIN_TEMPERATURE}) → greedy (argmax). */
export interface SamplingOptions {
  /** Softmax temperature (0 = greedy). */
  temperature: number;
  /** Keep the k most likely tokens (0 = off). */
  topK: number;
  /** Keep the smallest set of tokens whose probability mass reaches p (1 = off). */
  topP: number;
  /** RNG seed: the same seed gives the same output. */
  seed: number;
  /** Keep tokens whose probability (after temperature) is at least minP × the largest one's (0 = off). */
  minP?: number;
  /** OpenAI presence penalty in [-2, 2]: subtracted from a token's logit once it has been generated (0 = off). */
  presencePenalty?: number;
  /** OpenAI frequency penalty in [-2, 2]: subtracted once per time a token has been generated (0 = off). */
  frequencyPenalty?: number;
  /**
   * HF/vLLM repetition penalty (> 0) over prompt and generated tokens: a positive logit is divided by it, a
   * negative one multiplied (1 = off).
   */
  repetitionPenalty?: number;
  /** OpenAI logit_bias: token id → a value in [-100, 100] added to its logit before sampling (greedy too). */
  logitBias?: Readonly<Record<number, number>>;
}

/** The default sampling: greedy. */
export const DEFAULT_SAMPLING: SamplingOptions = { temperature: 0, topK: 0, topP: 1, seed: 0 };

/** Whether `s` applies penalties (its sequence then needs GPU token counts: {@link Sampler.counts}). */
export function usesPenalties(s: SamplingOptions): boolean {
  return hasPenalties(s);
}

/**
 * Checks the ranges of the options beyond temperature/top-k/top-p; throws naming the option at fault
 * (`sampling.minP must be in [0, 1], got 2`).
 */
export function checkSampling(s: SamplingOptions): void {
  const bad = (k: string, want: string, v: unknown) => {
    throw new RangeError(`sampling.${k} must be ${want}, got ${v}`);
  };
  if (s.minP !== undefined && !(s.minP >= 0 && s.minP <= 1)) bad("minP", "in [0, 1]", s.minP);
  for (const k of ["presencePenalty", "frequencyPenalty"] as const) {
    const v = s[k];
    if (v !== undefined && !(v >= -2 && v <= 2)) bad(k, "in [-2, 2]", v);
  }
  const r = s.repetitionPenalty;
  if (r !== undefined && !(r > 0 && Number.isFinite(r))) bad("repetitionPenalty", "a number > 0", r);
  for (const [k, v] of Object.entries(s.logitBias ?? {})) {
    if (!/^(0|[1-9][0-9]*)$/.test(k)) bad("logitBias", "keyed by token ids", JSON.stringify(k));
    if (!(typeof v === "number" && v >= -100 && v <= 100)) bad(`logitBias[${k}]`, "in [-100, 100]", v);
  }
}

/** Whether `s` has a logit bias (its sequence then needs a bias buffer: {@link Sampler.bias}). */
export function usesBias(s: SamplingOptions): boolean {
  return hasBias(s);
}

/** One token's logprob under the model's raw distribution, and the most likely ids with theirs. */
export interface TokenLogprobs {
  /** log p(token) from the raw logits (before temperature, penalties, min_p, top-k/top-p). */
  logprob: number;
  /** The most likely ids, best first (ties: lower id first), as many as asked. */
  top: { id: number; logprob: number }[];
}

/**
 * Temperatures below this sample greedily (as temperature 0). The kernel scales logits by 1/T in f32: at
 * T = 1e-40 that is +Inf (f32 tops out at 3.4e38) and the draw is garbage. At T = 1e-4 a token whose logit
 * trails the best by 0.01 — about the resolution f32 logits of magnitude 10–30 keep through a forward pass —
 * already has relative probability e^-100 ≈ 4e-44, below f32's smallest normal number: lower temperatures
 * can only differ from argmax on exact near-ties, while 1/T (1e4) keeps logits·(1/T) far from overflow.
 */
export const MIN_TEMPERATURE = 1e-4;

/** True when `s` samples greedily: temperature 0, below {@link MIN_TEMPERATURE}, or not a number. */
export function isGreedy(s: SamplingOptions): boolean {
  return !(s.temperature >= MIN_TEMPERATURE);
}

/** One logits row's sampling: its options, and the decode step that feeds its RNG (0 = after prefill). */
export interface RowSampling {
  sampling: SamplingOptions;
  step: number;
  /** Which logits row it samples (default: its own index; n choices sample one prefill row). */
  logitsRow?: number;
  /** Report the token's logprob and this many top ids (0–20); null/undefined: none. */
  logprobs?: number | null;
  /** The sequence's token counts (u32 [vocab], {@link Sampler.counts}); required when it uses penalties. */
  counts?: GPUBuffer | null;
  /** The sequence's logit bias (f32 [vocab], {@link Sampler.bias}); required when it has one. */
  bias?: GPUBuffer | null;
}

/** Sampled ids on the GPU: row r's u32 at element r · stride of `buffer`. */
export interface SampledIds {
  buffer: GPUBuffer;
  rows: number;
  /** u32 elements between rows: 1 (packed), or 64 (each row's dispatch writes its own 256-byte slot). */
  stride: number;
  /** Per row, the top-N count of its logprob record in its slot (null: none). */
  logprobs: (number | null)[];
}

/** Storage binding offsets must be multiples of 256 bytes: per-row dispatches write one slot each. */
const SLOT_U32 = 64;

/** Samples rows of logits into a GPU id buffer it owns. */
export class Sampler {
  readonly #ctx: GpuContext;
  readonly #vocab: number;
  #ids: GPUBuffer;

  constructor(ctx: GpuContext, vocab: number) {
    this.#ctx = ctx;
    this.#vocab = vocab;
    this.#ids = ctx.createBuffer(16 * SLOT_U32 * 4, "sampled-ids");
  }

  /**
   * Records the choice of one id per logits row (`rows[r]` for row r of `logits`, f32 [*, vocab]). The ids
   * stay valid until the next call.
   */
  record(logits: GPUBuffer, rows: RowSampling[]): SampledIds {
    const B = rows.length;
    const lp = rows.map((r) =>
      r.logprobs == null ? null : Math.min(r.logprobs, MAX_TOP_LOGPROBS, this.#vocab)
    );
    if (B * SLOT_U32 * 4 > this.#ids.size) {
      this.#ctx.destroyLater(this.#ids);
      this.#ids = this.#ctx.createBuffer(
        Math.max(B, (2 * this.#ids.size) / (SLOT_U32 * 4)) * SLOT_U32 * 4,
        "sampled-ids",
      );
    }
    const vocab = this.#vocab;
    const plain = rows.every((r, b) =>
      isGreedy(r.sampling) && !processes(r.sampling) && r.logprobs == null && (r.logitsRow ?? b) === b
    );
    if (plain) {
      // All greedy (the common case for reasoning): one argmax over every row, ids packed.
      sampleRows(this.#ctx, { logits, rows: B, vocab }, {
        ...rows[0].sampling,
        temperature: 0,
        step: rows[0].step,
      }, {
        buffer: this.#ids,
        offset: 0,
        size: B * 4,
      });
      return { buffer: this.#ids, rows: B, stride: 1, logprobs: lp };
    }
    const ctx = this.#ctx;
    // Rows with penalties or min_p sample a processed copy; the raw row stays for the logprobs.
    const proc = rows.some((r) => processes(r.sampling))
      ? ctx.pool.acquire(B * vocab * 4, STORAGE_USAGE, "logits-processed")
      : null;
    rows.forEach((r, b) => {
      const temperature = isGreedy(r.sampling) ? 0 : r.sampling.temperature;
      const raw = { buffer: logits, offset: (r.logitsRow ?? b) * vocab, vocab };
      const slot = { buffer: this.#ids, offset: b * SLOT_U32 * 4, size: SLOT_U32 * 4 };
      let src = raw;
      if (proc && processes(r.sampling)) {
        if (usesPenalties(r.sampling) && !r.counts) {
          throw new Error("Sampler: a row with penalties has no counts");
        }
        src = { buffer: proc, offset: b * vocab, vocab };
        if (usesBias(r.sampling) && !r.bias) {
          throw new Error("Sampler: a row with a logit bias has no bias buffer");
        }
        processLogits(ctx, raw, src, r.counts ?? null, { ...r.sampling, temperature }, r.bias ?? null);
      }
      sampleRows(
        ctx,
        { logits: src.buffer, rows: 1, vocab, offset: src.offset },
        { ...r.sampling, temperature, step: r.step },
        { buffer: this.#ids, offset: slot.offset, size: 4 },
      );
      if (lp[b] !== null) logprobsRow(ctx, raw, slot, lp[b]!);
      if (r.counts) countToken(ctx, slot, r.counts, vocab);
    });
    // Recorded: the processed rows' buffer can go back to the pool.
    if (proc) ctx.pool.release(proc);
    return { buffer: this.#ids, rows: B, stride: SLOT_U32, logprobs: lp };
  }

  /**
   * A sequence's token counts on the GPU (u32 [vocab]: bit 31 marks the ids of `prompt`, bits 0–30 count the
   * `generated` ids), which penalties read and every sampling of the row increments. Free it with
   * `ctx.destroyLater` once its sequence ends.
   */
  counts(prompt: number[], generated: number[]): GPUBuffer {
    const c = new Uint32Array(this.#vocab);
    for (const id of prompt) c[id] |= 0x80000000;
    for (const id of generated) c[id] = (c[id] & 0x80000000) | ((c[id] & 0x7fffffff) + 1);
    return this.#ctx.upload(c, "token-counts");
  }

  /**
   * The ids as a packed u32 [rows] buffer (the next decode step's input): the sampled buffer itself, or a
   * pooled copy made by one copy per row. Call `release` once its readers are recorded.
   */
  packed(s: SampledIds): { buffer: GPUBuffer; release: () => void } {
    if (s.stride === 1 || s.rows === 1) return { buffer: s.buffer, release: () => {} };
    const out = this.#ctx.pool.acquire(s.rows * 4, STORAGE_USAGE, "sampled-ids-packed");
    for (let b = 0; b < s.rows; b++) this.#ctx.copy(s.buffer, b * s.stride * 4, out, b * 4, 4);
    return { buffer: out, release: () => this.#ctx.pool.release(out) };
  }

  /** A sequence's logit bias on the GPU (f32 [vocab]); free it with `ctx.destroyLater` once its sequence ends. */
  bias(bias: Readonly<Record<number, number>>): GPUBuffer {
    return biasBuffer(this.#ctx, bias, this.#vocab);
  }

  /** Reads the ids of `data` (read back from `s.buffer` at offset 0). */
  static parse(s: SampledIds, data: ArrayBuffer): number[] {
    const u = new Uint32Array(data, 0, (s.rows - 1) * s.stride + 1);
    return Array.from({ length: s.rows }, (_, b) => u[b * s.stride]);
  }

  /** Each row's logprobs from `data` (read back from `s.buffer` at offset 0, {@link Sampler.bytes} long). */
  static parseLogprobs(s: SampledIds, data: ArrayBuffer): (TokenLogprobs | null)[] {
    return s.logprobs.map((n, b) => {
      if (n === null) return null;
      const u = new Uint32Array(data, b * s.stride * 4, 2 + 2 * n);
      const f = new Float32Array(data, b * s.stride * 4, 2 + 2 * n);
      const top = Array.from({ length: n }, (_, j) => ({ id: u[2 + 2 * j], logprob: f[3 + 2 * j] }));
      return { logprob: f[1], top };
    });
  }

  /** Bytes to read back for `s`'s ids (and logprob records). */
  static bytes(s: SampledIds): number {
    const last = s.logprobs[s.rows - 1];
    return ((s.rows - 1) * s.stride + (last === null ? 1 : 2 + 2 * last)) * 4;
  }

  /** Frees the id buffer. */
  destroy(): void {
    this.#ctx.destroyLater(this.#ids);
  }
}
