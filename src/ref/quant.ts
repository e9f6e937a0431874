/**
 * CPU reference of the quantized weight formats (q8, q4; layout in src/gpu/weights.ts): decodes stored rows
 * back to f32 values, written independently of the kernels, for the kernel tests to multiply with the plain
 * references of src/ref/linear.ts.
 */

/**
 * The [rows, cols] f32 values of quantized rows: w[r, c] = q · scale, q the signed integer stored for (r, c)
 * (q8: the int8 at byte c of the row; q4: the nibble c of the row minus 8, low nibble first) and scale the f16
 * scale of group c / 32. `scales` are f16 bits, `scaleStride` per row.
 */
export function dequantizeRef(
  format: "q8" | "q4",
  data: Uint8Array,
  scales: Uint16Array,
  rows: number,
  cols: number,
): Float32Array {
  const groups = Math.ceil(cols / 32);
  const rowBytes = format === "q8" ? groups * 32 : groups * 16;
  const stride = 2 * Math.ceil(groups / 2);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const byte = data[r * rowBytes + (format === "q8" ? c : c >> 1)];
      const q = format === "q8" ? (byte << 24) >> 24 : ((byte >> ((c & 1) * 4)) & 15) - 8;
      out[r * cols + c] = q * half(scales[r * stride + Math.floor(c / 32)]);
    }
  }
  return out;
}

/** IEEE half bits → number (written out here rather than shared, so the reference stands alone). */
function half(h: number): number {
  const e = (h >> 10) & 31, m = h & 1023, sign = h & 0x8000 ? -1 : 1;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}
