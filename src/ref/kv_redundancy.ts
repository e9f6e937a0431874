/** CPU reference of R-KV's key redundancy (wgsl/kv_redundancy.wgsl), in f64. */

/** Cosine similarity of head `h`'s keys of tokens a and b in `keys` (f32 [n, heads·headDim]); 0 for a zero key. */
export function keyCosine(
  keys: ArrayLike<number>,
  row: number,
  headDim: number,
  h: number,
  a: number,
  b: number,
): number {
  let ab = 0, aa = 0, bb = 0;
  for (let c = 0; c < headDim; c++) {
    const x = keys[a * row + h * headDim + c];
    const y = keys[b * row + h * headDim + c];
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}

/**
 * Redundancy of `n` tokens' keys (f32 [n, heads·headDim], token order = position order): out[h·n + j] =
 * (1/n) Σ over i ≠ j of cos(k_i, k_j), leaving out the pairs where j is i's newest near-duplicate (the highest
 * j ≠ i with cos > threshold).
 */
export function kvRedundancyRef(
  keys: ArrayLike<number>,
  n: number,
  heads: number,
  headDim: number,
  threshold: number,
): Float32Array {
  const row = heads * headDim;
  const out = new Float32Array(heads * n);
  for (let h = 0; h < heads; h++) {
    const cos = (a: number, b: number) => keyCosine(keys, row, headDim, h, a, b);
    const dup = new Int32Array(n).fill(-1);
    for (let i = 0; i < n; i++) {
      for (let j = n - 1; j >= 0; j--) {
        if (j !== i && cos(i, j) > threshold) {
          dup[i] = j;
          break;
        }
      }
    }
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) if (i !== j && dup[i] !== j) s += cos(i, j);
      out[h * n + j] = s / n;
    }
  }
  return out;
}
