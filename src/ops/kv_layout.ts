/**
 * How K and V rows are stored in the KV cache, and the CPU codec that defines each format (the write kernel
 * in wgsl/kv.wgsl encodes, the attention kernels decode; src/ref/kv_codec.ts is the CPU version of both).
 *
 * A row is one token's K (or V) for one layer: `nKvHeads · headDim` values, stored as `words` u32 words:
 *
 * - `f32`: the values themselves (reference tests; what the cache held before f16).
 * - `f16` (default): two values per word, `pack2x16float` (WGSL core, no `shader-f16` needed). What serving
 *   engines keep; half of f32's bytes, at a conversion error (2^-11 relative) far below what changes a greedy
 *   decision of the bundled reasoner.
 * - `int8`: per KV head, headDim int8 values (four per word, `pack4x8snorm`) and one f32 scale word — the
 *   head's largest |value| — after all heads' values; scale words padded to a multiple of four so that a row
 *   is whole 16-byte words (texture staging). value ≈ q / 127 · scale.
 *
 * Why per token (and per head) for int8 keys, where KIVI quantizes keys per channel: measured, and structural.
 * On real caches (bench/kv_quant_error.ts: the reasoner and stories260K, ~300 tokens, every layer), per-token
 * scales give a q·k error of 2.9–4.1e-3 against 3.6–5.1e-3 for per-channel scales over 32-token groups — these
 * models have no outlier key channels for per-channel scales to isolate. And every slot of a pruned cache must
 * stand alone: eviction overwrites single slots, compaction moves them, a policy keeps any subset; a scale shared
 * by a group of tokens would have to be recomputed whenever one member goes. Per-token scales keep every cache
 * operation a plain copy of words. Teacher-forced mean KL against f32 KV: reasoner f16 1e-9, int8 6e-7;
 * stories260K (head size 8) f16 8e-6, int8 4e-3 (tests/kv_dtype.test.ts).
 */

/** A KV storage format. */
export type KvDtype = "f16" | "f32" | "int8";

/** Every KV storage format, the default first. */
export const KV_DTYPES: readonly KvDtype[] = ["f16", "f32", "int8"];

/** The storage format when none is given: f16, as real serving engines keep KV. */
export const DEFAULT_KV_DTYPE: KvDtype = "f16";

/** True when `x` names a KV storage format. */
export function isKvDtype(x: unknown): x is KvDtype {
  return x === "f16" || x === "f32" || x === "int8";
}

/** The stored layout of one K (or V) row. */
export interface KvLayout {
  readonly dtype: KvDtype;
  readonly nKvHeads: number;
  readonly headDim: number;
  /** Values per row: nKvHeads · headDim. */
  readonly values: number;
  /** u32 words per stored row. */
  readonly words: number;
}

/** The layout of `dtype` rows for `nKvHeads` heads of `headDim` (a multiple of 4) values. */
export function kvLayout(dtype: KvDtype, nKvHeads: number, headDim: number): KvLayout {
  if (!(headDim % 4 === 0 && headDim > 0)) {
    throw new Error(`KV headDim ${headDim} must be a positive multiple of 4`);
  }
  const values = nKvHeads * headDim;
  const words = dtype === "f32" ? values : dtype === "f16" ? values / 2 : values / 4 + scaleWords(nKvHeads);
  return { dtype, nKvHeads, headDim, values, words };
}

/** Scale words of an int8 row: one per head, padded to a multiple of 4. */
function scaleWords(nKvHeads: number): number {
  return Math.ceil(nKvHeads / 4) * 4;
}

/** Bytes one cached token costs in one layer: its K and V rows plus its position and score (u32 + f32). */
export function kvTokenLayerBytes(layout: KvLayout): number {
  return 2 * layout.words * 4 + 8;
}
