/**
 * CPU reference of the rotary position embedding (RoPE) kernel. Its inverse frequencies are model setup:
 * `ropeInvFreq` in src/model/rope_freq.ts.
 *
 * Pairing is Hugging Face's "rotate_half" layout: inside each head of size d, element i pairs with element
 * i + d/2 and both use frequency index i (not the interleaved (2i, 2i+1) layout of the original paper).
 */

/**
 * CPU reference of RoPE on x [tokens, heads, headDim] (rows of `rowStride` elements starting at `offset`;
 * default: packed). Token t is rotated by angle positions[t] · invFreq[i], computed in f64 — or, with
 * `f32Angle`, rounded to f32 exactly as the GPU kernel forms it (f32(pos) · f32(invFreq) in f32), so a test can
 * separate the kernel's trigonometry error from the inherent f32 angle rounding. Returns a new array.
 */
export function ropeRef(
  x: Float32Array,
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  tokens: number,
  heads: number,
  headDim: number,
  opts: { rowStride?: number; offset?: number; f32Angle?: boolean } = {},
): Float32Array {
  const half = headDim / 2;
  const rowStride = opts.rowStride ?? heads * headDim;
  const offset = opts.offset ?? 0;
  const out = new Float32Array(x);
  for (let t = 0; t < tokens; t++) {
    const pos = positions[t];
    for (let i = 0; i < half; i++) {
      const angle = opts.f32Angle
        ? Math.fround(Math.fround(pos) * Math.fround(invFreq[i]))
        : pos * invFreq[i];
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      for (let h = 0; h < heads; h++) {
        const base = offset + t * rowStride + h * headDim;
        const x1 = x[base + i];
        const x2 = x[base + i + half];
        out[base + i] = x1 * c - x2 * s;
        out[base + i + half] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}
