/**
 * CPU reference of the KV storage formats (src/ops/kv_layout.ts): the write kernel's encoding of f32 rows and
 * the attention kernels' decoding of stored words.
 */
import type { KvLayout } from "../ops/kv_layout.ts";

/**
 * Encodes one row as the write kernel does (f32 → stored words). f16 rounds to nearest even (the GPU may pick
 * either neighbour); int8 computes q = floor(0.5 + 127 · clamp(v · (1/scale), −1, 1)) in f32, as WGSL's
 * `pack4x8snorm` defines it.
 */
export function encodeKvRow(layout: KvLayout, row: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(layout.words);
  if (layout.dtype === "f32") {
    new Float32Array(out.buffer).set(Array.from({ length: layout.values }, (_, i) => row[i]));
  } else if (layout.dtype === "f16") {
    const h = new Float16Array(out.buffer);
    for (let i = 0; i < layout.values; i++) h[i] = row[i];
  } else {
    const { nKvHeads, headDim } = layout;
    const f = new Float32Array(out.buffer);
    for (let h = 0; h < nKvHeads; h++) {
      let m = 0;
      for (let d = 0; d < headDim; d++) m = Math.max(m, Math.abs(Math.fround(row[h * headDim + d])));
      const inv = m > 0 ? Math.fround(1 / m) : 0;
      for (let d = 0; d < headDim; d += 4) {
        let w = 0;
        for (let c = 0; c < 4; c++) {
          const e = Math.min(1, Math.max(-1, Math.fround(Math.fround(row[h * headDim + d + c]) * inv)));
          const q = Math.floor(0.5 + 127 * e);
          w |= (q & 0xff) << (8 * c);
        }
        out[(h * headDim + d) / 4] = w >>> 0;
      }
      f[layout.values / 4 + h] = m;
    }
  }
  return out;
}

/** Decodes one stored row (the values attention reads). */
export function decodeKvRow(layout: KvLayout, words: Uint32Array): Float32Array {
  const w = words.length === layout.words ? words : words.slice(0, layout.words);
  if (layout.dtype === "f32") return new Float32Array(w.slice().buffer, 0, layout.values);
  if (layout.dtype === "f16") return Float32Array.from(new Float16Array(w.slice().buffer, 0, layout.values));
  const { nKvHeads, headDim, values } = layout;
  const scales = new Float32Array(w.slice().buffer, values, nKvHeads);
  const out = new Float32Array(values);
  for (let h = 0; h < nKvHeads; h++) {
    for (let i = 0; i < headDim; i++) {
      const word = w[(h * headDim + i) >> 2];
      const q = ((word >>> (8 * (i & 3))) << 24) >> 24;
      out[h * headDim + i] = Math.fround(Math.max(q / 127, -1) * scales[h]);
    }
  }
  return out;
}

/** Encodes `rows` consecutive rows (f32 [rows, values]) into stored words [rows, words]. */
export function encodeKvRows(layout: KvLayout, data: Float32Array, rows: number): Uint32Array {
  const out = new Uint32Array(rows * layout.words);
  for (let r = 0; r < rows; r++) {
    out.set(encodeKvRow(layout, data.subarray(r * layout.values, (r + 1) * layout.values)), r * layout.words);
  }
  return out;
}

/** Decodes `rows` stored rows into f32 [rows, values]. */
export function decodeKvRows(layout: KvLayout, words: Uint32Array, rows: number): Float32Array {
  const out = new Float32Array(rows * layout.values);
  for (let r = 0; r < rows; r++) {
    out.set(decodeKvRow(layout, words.subarray(r * layout.words, (r + 1) * layout.words)), r * layout.values);
  }
  return out;
}
