/**
 * Group-wise symmetric quantization of weight rows (the `--weights q8|q4` formats), done on the host at load
 * time or once by `deno task quantize`; both call {@link quantizeRows}, so the two give identical bytes.
 *
 * Each row is cut into groups of {@link QUANT_GROUP} = 32 values (the last one zero-padded); a group keeps one
 * f16 scale s = max|w| / qmax (qmax 127 for q8, 7 for q4) and integers q = round(w / s) clamped to ±qmax, so
 * w ≈ q · s. Symmetric (no zero point): a weight matrix is centred on 0, and the kernels then need one
 * multiply per group. Layout: see src/gpu/weights.ts.
 */
import { f16ToF32, f32ToF16 } from "../dtype.ts";
import { QUANT_GROUP, scaleStride, weightRowBytes } from "../gpu/weights.ts";

/** The quantized weight formats. */
export type QuantFormat = "q8" | "q4";

/** Rows of a quantized weight as stored: packed integers and f16 scale bits. */
export interface QuantizedRows {
  /** [rows, weightRowBytes(format, cols)] bytes. */
  data: Uint8Array;
  /** [rows, scaleStride(cols)] f16 bits (padding scales are 0). */
  scales: Uint16Array;
}

/** Largest |q| of a format. */
export function quantMax(format: QuantFormat): number {
  return format === "q8" ? 127 : 7;
}

/**
 * Quantizes `rows` rows of `cols` f32 values (row-major). `label` names the tensor in errors (a scale beyond
 * f16's range, or a non-finite value).
 */
export function quantizeRows(
  format: QuantFormat,
  values: Float32Array,
  rows: number,
  cols: number,
  label = "weight",
): QuantizedRows {
  if (values.length !== rows * cols) {
    throw new Error(`${label}: ${values.length} values are not [${rows}, ${cols}]`);
  }
  const rowBytes = weightRowBytes(format, cols);
  const stride = scaleStride(cols);
  const groups = Math.ceil(cols / QUANT_GROUP);
  const qmax = quantMax(format);
  const data = new Uint8Array(rows * rowBytes);
  const scales = new Uint16Array(rows * stride);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let g = 0; g < groups; g++) {
      const c0 = g * QUANT_GROUP, c1 = Math.min(cols, c0 + QUANT_GROUP);
      let amax = 0;
      for (let c = c0; c < c1; c++) {
        const a = Math.abs(values[base + c]);
        if (!(a <= 3.4e38)) throw new Error(`${label}: non-finite value at row ${r}, column ${c}`);
        if (a > amax) amax = a;
      }
      const bits = f32ToF16(amax / qmax);
      const s = f16ToF32(bits);
      if (!Number.isFinite(s)) {
        throw new Error(`${label}: row ${r} group ${g} needs a scale ${amax / qmax} beyond f16's range`);
      }
      scales[r * stride + g] = bits;
      const out = r * rowBytes;
      for (let c = c0; c < c1; c++) {
        const t = s === 0 ? 0 : values[base + c] / s;
        // Round half away from zero, clamped to ±qmax (f16 rounding of s can put |t| a hair past qmax).
        let q = t >= 0 ? Math.floor(t + 0.5) : -Math.floor(0.5 - t);
        if (q > qmax) q = qmax;
        else if (q < -qmax) q = -qmax;
        if (format === "q8") data[out + c] = q & 0xff;
        else data[out + (c >> 1)] |= (q + 8) << ((c & 1) * 4);
      }
      // q4 padding columns hold q = 0 (stored 8), so that every stored nibble decodes to a value.
      if (format === "q4") {
        for (let c = c1; c < c0 + QUANT_GROUP; c++) data[r * rowBytes + (c >> 1)] |= 8 << ((c & 1) * 4);
      }
    }
  }
  return { data, scales };
}
