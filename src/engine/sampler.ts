/**
 * Token selection on the GPU for a batch of rows: one argmax dispatch when every row is greedy, else one
 * sampling dispatch per row with that row's temperature, top-k, top-p, seed and step. Only the ids are read
 * back, never the logits.
 */
import { type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
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
}

/** The default sampling: greedy. */
export const DEFAULT_SAMPLING: SamplingOptions = { temperature: 0, topK: 0, topP: 1, seed: 0 };

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
}

/** Sampled ids on the GPU: row r's u32 at element r · stride of `buffer`. */
export interface SampledIds {
  buffer: GPUBuffer;
  rows: number;
  /** u32 elements between rows: 1 (packed), or 64 (each row's dispatch writes its own 256-byte slot). */
  stride: number;
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
    if (B * SLOT_U32 * 4 > this.#ids.size) {
      this.#ctx.destroyLater(this.#ids);
      this.#ids = this.#ctx.createBuffer(
        Math.max(B, (2 * this.#ids.size) / (SLOT_U32 * 4)) * SLOT_U32 * 4,
        "sampled-ids",
      );
    }
    const vocab = this.#vocab;
    if (rows.every((r) => isGreedy(r.sampling))) {
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
      return { buffer: this.#ids, rows: B, stride: 1 };
    }
    rows.forEach((r, b) => {
      sampleRows(
        this.#ctx,
        { logits, rows: 1, vocab, offset: b * vocab },
        { ...r.sampling, temperature: isGreedy(r.sampling) ? 0 : r.sampling.temperature, step: r.step },
        { buffer: this.#ids, offset: b * SLOT_U32 * 4, size: 4 },
      );
    });
    return { buffer: this.#ids, rows: B, stride: SLOT_U32 };
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

  /** Reads the ids of `data` (read back from `s.buffer` at offset 0). */
  static parse(s: SampledIds, data: ArrayBuffer): number[] {
    const u = new Uint32Array(data, 0, (s.rows - 1) * s.stride + 1);
    return Array.from({ length: s.rows }, (_, b) => u[b * s.stride]);
  }

  /** Bytes to read back for `s`'s ids. */
  static bytes(s: SampledIds): number {
    return ((s.rows - 1) * s.stride + 1) * 4;
  }

  /** Frees the id buffer. */
  destroy(): void {
    this.#ctx.destroyLater(this.#ids);
  }
}
