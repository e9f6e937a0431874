/**
 * Plain CPU references of the linear-algebra kernels. Weights are given as f32 values already rounded to the
 * weight dtype (see `roundTo` in src/dtype.ts), so the only difference from the GPU is summation order;
 * accumulation here is in f64 to make the reference the more accurate side.
 */

/** Options shared by the references. */
export interface LinearRefOptions {
  /** Per-row bias, length `rows`. */
  bias?: Float32Array;
  /** Starting values of y, added to (the `accumulate` mode of the GPU ops). */
  accumulate?: Float32Array;
}

/**
 * y[b, r] = Σ_c W[r, c] · x[b, c] (+ bias[r]) (+ y0[b, r]) for b < batch.
 * `w` is row-major [rows, cols]; `x` is [batch, cols]; the result is [batch, rows].
 */
export function matvecRef(
  w: Float32Array,
  rows: number,
  cols: number,
  x: Float32Array,
  batch: number,
  opts: LinearRefOptions = {},
): Float32Array {
  return matvecRowsRef(w, rows, cols, x, batch, 0, rows, opts);
}

/** The rows [r0, r1) of {@link matvecRef}'s result, as a [batch, r1 - r0] array (for sampled checks). */
export function matvecRowsRef(
  w: Float32Array,
  rows: number,
  cols: number,
  x: Float32Array,
  batch: number,
  r0: number,
  r1: number,
  opts: LinearRefOptions = {},
): Float32Array {
  const n = r1 - r0;
  const y = new Float32Array(batch * n);
  for (let b = 0; b < batch; b++) {
    const xo = b * cols;
    for (let r = r0; r < r1; r++) {
      const wo = r * cols;
      let s = 0;
      for (let c = 0; c < cols; c++) s += w[wo + c] * x[xo + c];
      if (opts.bias) s += opts.bias[r];
      if (opts.accumulate) s += opts.accumulate[b * rows + r];
      y[b * n + (r - r0)] = s;
    }
  }
  return y;
}

/** Y[m, r] = Σ_c X[m, c] · W[r, c] (+ bias[r]) (+ Y0[m, r]): the prefill product, same layout as matvec. */
export function matmulRef(
  x: Float32Array,
  m: number,
  w: Float32Array,
  rows: number,
  cols: number,
  opts: LinearRefOptions = {},
): Float32Array {
  return matvecRef(w, rows, cols, x, m, opts);
}
