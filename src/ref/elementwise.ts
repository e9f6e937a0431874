/**
 * Plain CPU references of the elementwise and normalisation kernels. They accumulate in f64 (JS numbers) so
 * that the GPU's f32 results are compared against something strictly more accurate.
 */
import { bf16ToF32, type DType, f16ToF32 } from "../dtype.ts";

/** out[i] = a[i] + b[i]. */
export function addRef(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}

/** RMSNorm over rows: x [rows, dim], weight [dim] → out[r, i] = x[r, i] / sqrt(mean(x[r, :]²) + eps) · weight[i]. */
export function rmsnormRef(
  x: Float32Array,
  weight: Float32Array,
  rows: number,
  dim: number,
  eps: number,
): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] * x[r * dim + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i] * inv * weight[i];
  }
  return out;
}

/**
 * Row softmax of `scale · x` over x [rows, n], max-subtracted. A row whose entries are all -Infinity gives
 * zeros (the GPU kernel does the same) rather than NaN.
 */
export function softmaxRef(x: Float32Array, rows: number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let i = 0; i < n; i++) m = Math.max(m, x[r * n + i] * scale);
    if (m === -Infinity) continue;
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(x[r * n + i] * scale - m);
    for (let i = 0; i < n; i++) out[r * n + i] = Math.exp(x[r * n + i] * scale - m) / s;
  }
  return out;
}

/** SiLU-gated product: out[i] = silu(gate[i]) · up[i] with silu(g) = g / (1 + e^-g). */
export function siluMulRef(gate: Float32Array, up: Float32Array): Float32Array {
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = gate[i] / (1 + Math.exp(-gate[i])) * up[i];
  return out;
}

/**
 * Embedding gather: out[t, :] = E[ids[t], :] decoded to f32, where `table` holds the raw little-endian bytes
 * of the row-major [rows, cols] matrix in `dtype`. Ids outside [0, rows) give a row of zeros.
 */
export function embeddingRef(
  table: Uint8Array,
  dtype: DType,
  rows: number,
  cols: number,
  ids: ArrayLike<number>,
): Float32Array {
  const out = new Float32Array(ids.length * cols);
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= rows) continue;
    for (let c = 0; c < cols; c++) {
      const e = id * cols + c;
      out[t * cols + c] = dtype === "f32"
        ? view.getFloat32(e * 4, true)
        : dtype === "bf16"
        ? bf16ToF32(view.getUint16(e * 2, true))
        : f16ToF32(view.getUint16(e * 2, true));
    }
  }
  return out;
}
