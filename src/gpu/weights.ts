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

/**
 * A second, private copy of a row range as an `rgba32uint` texture: texel (t, r) holds bytes [16t, 16t+16) of
 * row `rowStart + r` (8 bf16/f16 or 4 f32 values, the row zero-padded to whole texels). On Mesa's CPU adapter
 * a texel fetch costs about as much as one 4-byte storage-buffer load per lane, so matvec streams weights
 * several times faster from textures. Only the matvec kernels read it; the buffer chunks stay authoritative.
 */
export interface WeightTexture {
  texture: GPUTexture;
  view: GPUTextureView;
  rowStart: number;
  rows: number;
  /** Texels per row: ceil(cols · bytes per value / 16). */
  texels: number;
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
  /** Optional texture copy used by the matvec fast path (see {@link WeightTexture}). */
  textures?: WeightTexture[];
}

/** Options of {@link uploadWeight}. */
export interface UploadWeightOptions {
  /**
   * Also keep a texture copy for the fast matvec path: `true`, `false`, or `"auto"` (default) = only on a CPU
   * (llvmpipe/lavapipe) adapter, where it makes decode several times faster at the price of twice the memory.
   */
  texture?: boolean | "auto";
  /**
   * Keep the storage-buffer chunks even when a texture copy exists (default true). Pass false for weights only
   * ever multiplied (not gathered) to avoid holding every weight twice; the buffer is still made when no
   * texture could be.
   */
  keepBuffer?: boolean;
}

/** True when the adapter is Mesa's CPU rasterizer (where texture fetches beat storage-buffer loads). */
export function isCpuAdapter(ctx: GpuContext): boolean {
  return ctx.gpu.isFallback || /llvmpipe|lavapipe|softpipe|swiftshader/i.test(ctx.gpu.description);
}

/**
 * Adds the texture copy of a weight from its raw bytes (the same bytes given to {@link uploadWeight}).
 * Returns false (and adds nothing) when a row is too wide for one texture row.
 */
export function attachWeightTexture(ctx: GpuContext, w: Weight, bytes: Uint8Array): boolean {
  const rowBytes = w.cols * dtypeBytes(w.dtype);
  const texels = Math.ceil(rowBytes / 16);
  const maxDim = ctx.device.limits.maxTextureDimension2D;
  if (texels > maxDim) return false;
  ctx.flush();
  const textures: WeightTexture[] = [];
  const padded = texels * 16 !== rowBytes;
  // Upload in slabs of at most ~32 MiB so padding never needs a second copy of a whole matrix.
  const slabRows = Math.max(1, Math.min(maxDim, Math.floor((32 << 20) / (texels * 16))));
  for (let r = 0; r < w.rows; r += maxDim) {
    const n = Math.min(maxDim, w.rows - r);
    const texture = ctx.device.createTexture({
      size: [texels, n],
      format: "rgba32uint",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
      label: `${w.label}[${r}:${r + n}].tex`,
    });
    for (let s = 0; s < n; s += slabRows) {
      const m = Math.min(slabRows, n - s);
      let data = bytes.subarray((r + s) * rowBytes, (r + s + m) * rowBytes);
      if (padded) {
        const p = new Uint8Array(m * texels * 16);
        for (let i = 0; i < m; i++) p.set(data.subarray(i * rowBytes, (i + 1) * rowBytes), i * texels * 16);
        data = p;
      }
      ctx.device.queue.writeTexture(
        { texture, origin: [0, s] },
        data as Uint8Array<ArrayBuffer>,
        { bytesPerRow: texels * 16, rowsPerImage: m },
        [texels, m],
      );
    }
    textures.push({ texture, view: texture.createView(), rowStart: r, rows: n, texels });
  }
  w.textures = textures;
  return true;
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
  options: UploadWeightOptions = {},
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
  const w: Weight = { label, dtype, rows, cols, bytes: rows * rowBytes, chunks: [] };
  const texture = options.texture ?? "auto";
  const hasTexture = (texture === true || (texture === "auto" && isCpuAdapter(ctx))) &&
    attachWeightTexture(ctx, w, bytes);
  if (hasTexture && options.keepBuffer === false) return w;
  const per = rowsPerChunk(cols, dtype, maxChunkBytes);
  for (let r = 0; r < rows; r += per) {
    const n = Math.min(per, rows - r);
    const buffer = ctx.upload(bytes.subarray(r * rowBytes, (r + n) * rowBytes), `${label}[${r}:${r + n}]`);
    w.chunks.push({ buffer, rowStart: r, rows: n });
  }
  return w;
}

/** Frees a weight's buffers. */
export function destroyWeight(w: Weight): void {
  for (const c of w.chunks) c.buffer.destroy();
  for (const t of w.textures ?? []) t.texture.destroy();
}
