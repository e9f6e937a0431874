/**
 * Weight matrices on the GPU, split into row chunks so that no binding exceeds the adapter's
 * `maxStorageBufferBindingSize` (128 MiB on the CPU adapter; a 151936×1536 bf16 embedding is 467 MB).
 *
 * Layout (fixed; kernels rely on it): each chunk holds rows [rowStart, rowStart+rows) of the row-major
 * [rows, cols] matrix (PyTorch Linear layout: [out_features, in_features]). bf16 and f16 are packed two per
 * u32, the even column in the low 16 bits; `cols` must be even for them.
 */
import type { DType } from "../dtype.ts";
import { dtypeBytes } from "../dtype.ts";
import type { GpuContext } from "./context.ts";

/** One row range of a weight matrix in its own buffer. */
export interface WeightChunk {
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
}

/** A [rows, cols] weight matrix resident on the GPU. */
export interface Weight {
  label: string;
  dtype: DType;
  rows: number;
  cols: number;
  /** Total bytes of the matrix (what one full read of it costs). */
  bytes: number;
  chunks: WeightChunk[];
}

/** Rows per chunk so that a chunk stays within `maxBytes` (a multiple of 64 rows where possible). */
export function rowsPerChunk(cols: number, dtype: DType, maxBytes: number): number {
  const rowBytes = cols * dtypeBytes(dtype);
  const fit = Math.floor(maxBytes / rowBytes);
  if (fit < 1) {
    throw new Error(`a single row of ${cols} ${dtype} values exceeds the binding limit ${maxBytes}`);
  }
  return fit >= 64 ? fit - (fit % 64) : fit;
}

/**
 * Uploads a weight matrix given its raw little-endian bytes in `dtype` (as stored in safetensors).
 * `maxChunkBytes` defaults to the adapter's binding limit; tests pass smaller values to exercise chunking.
 */
export function uploadWeight(
  ctx: GpuContext,
  label: string,
  dtype: DType,
  rows: number,
  cols: number,
  bytes: Uint8Array,
  maxChunkBytes: number = ctx.maxBinding,
): Weight {
  const rowBytes = cols * dtypeBytes(dtype);
  if (dtype !== "f32" && cols % 2 !== 0) {
    throw new Error(`weight ${label}: ${dtype} needs an even column count, got ${cols}`);
  }
  if (bytes.byteLength !== rows * rowBytes) {
    throw new Error(
      `weight ${label}: expected ${
        rows * rowBytes
      } bytes for [${rows}, ${cols}] ${dtype}, got ${bytes.byteLength}`,
    );
  }
  const per = rowsPerChunk(cols, dtype, maxChunkBytes);
  const chunks: WeightChunk[] = [];
  for (let r = 0; r < rows; r += per) {
    const n = Math.min(per, rows - r);
    const buffer = ctx.upload(bytes.subarray(r * rowBytes, (r + n) * rowBytes), `${label}[${r}:${r + n}]`);
    chunks.push({ buffer, rowStart: r, rows: n });
  }
  return { label, dtype, rows, cols, bytes: rows * rowBytes, chunks };
}

/** Frees a weight's buffers. */
export function destroyWeight(w: Weight): void {
  for (const c of w.chunks) c.buffer.destroy();
}
