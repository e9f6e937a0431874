/**
 * Weight matrices on the GPU, split into row chunks so that no binding exceeds the adapter's
 * `maxStorageBufferBindingSize` (128 MiB on the CPU adapter; a 151936×1536 bf16 embedding is 467 MB).
 *
 * Layout (fixed; kernels rely on it): each chunk holds rows [rowStart, rowStart+rows) of the row-major
 * [rows, cols] matrix (PyTorch Linear layout: [out_features, in_features]). bf16 and f16 are packed two per
 * u32, the even column in the low 16 bits; `cols` must be even for them.
 *
 * Quantized weights (q8, q4; see src/model/quantize.ts): each row is ceil(cols / 32) groups of 32 values
 * (the last zero-padded), a group 32 int8 (q8: 32 bytes, value c at byte c) or 32 4-bit values (q4: 16 bytes,
 * value c of a word at bits 4c, stored as q + 8); the f16 scales live in `Weight.scales`, one buffer for the
 * whole matrix, [rows, scaleStride(cols)] (a row's count padded to even so rows stay 4-byte aligned).
 * A row is whole 16-byte words, so a q4 group is exactly one texel / one vec4<u32> load.
 */
import type { DType } from "../dtype.ts";
import { dtypeBytes } from "../dtype.ts";

/** Element types of a weight on the GPU: the float dtypes, or 8- / 4-bit group-quantized values. */
export type WeightDType = DType | "q8" | "q4";

/**
 * Values per quantization group. 32: a q4 group is then 16 bytes — exactly one texel fetch or one vec4<u32>
 * load, so every fetch needs one scale — and small groups keep the 4-bit error low on small models (llama.cpp's
 * Q8_0 and Q4_0 use 32 too); f16 scales cost 0.5 bit per weight (64 would save 0.25 bit at more error).
 */
export const QUANT_GROUP = 32;

/** True for the group-quantized weight types. */
export function isQuantized(dtype: WeightDType): dtype is "q8" | "q4" {
  return dtype === "q8" || dtype === "q4";
}

/** Bytes of one stored row of a [*, cols] weight of `dtype` (quantized rows: whole groups). */
export function weightRowBytes(dtype: WeightDType, cols: number): number {
  if (dtype === "q8") return Math.ceil(cols / QUANT_GROUP) * QUANT_GROUP;
  if (dtype === "q4") return Math.ceil(cols / QUANT_GROUP) * (QUANT_GROUP / 2);
  return cols * dtypeBytes(dtype);
}

/** f16 scales per row of a quantized weight: its group count rounded up to even (rows stay 4-byte aligned). */
export function scaleStride(cols: number): number {
  return 2 * Math.ceil(Math.ceil(cols / QUANT_GROUP) / 2);
}
import type { GpuContext } from "./context.ts";
import { isCpuAdapterInfo } from "./device.ts";

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
  dtype: WeightDType;
  rows: number;
  cols: number;
  /** Total bytes of the matrix, scales included (what one full read of it costs). */
  bytes: number;
  chunks: WeightChunk[];
  /** Quantized weights: the f16 scales, [rows, scaleStride(cols)] packed two per u32. */
  scales?: GPUBuffer;
  /** Optional texture copy used by the matvec fast path (see {@link WeightTexture}). */
  textures?: WeightTexture[];
}

/** Options of {@link uploadWeight}. */
export interface UploadWeightOptions {
  /**
   * Also keep a texture copy for the fast matvec path: `true`, `false`, or `"auto"` (default) = when the
   * context's path uses textures (`ctx.gpu.useTextures`: a CPU adapter unless told otherwise), where it makes
   * decode several times faster.
   */
  texture?: boolean | "auto";
  /**
   * Keep the storage-buffer chunks even when a texture copy exists (default true). Pass false for weights only
   * ever multiplied (not gathered) to avoid holding every weight twice; the buffer is still made when no
   * texture could be.
   */
  keepBuffer?: boolean;
}

/** True when the adapter is a CPU implementation (where texture fetches beat storage-buffer loads). */
export function isCpuAdapter(ctx: GpuContext): boolean {
  return isCpuAdapterInfo(ctx.gpu.isFallback, ctx.gpu.description);
}

/** Bytes per texel of the texture copies (`rgba32uint`). */
const TEXEL_BYTES = 16;
/** Largest slab of a padded texture upload (rows whose byte length is not a multiple of 16 need a copy). */
const SLAB_BYTES = 32 << 20;

/** Creates the (empty) texture copies of `w`, or returns null when a row is too wide for one texture row. */
function createWeightTextures(ctx: GpuContext, w: Weight): WeightTexture[] | null {
  const rowBytes = weightRowBytes(w.dtype, w.cols);
  const texels = Math.ceil(rowBytes / TEXEL_BYTES);
  const maxDim = ctx.device.limits.maxTextureDimension2D;
  if (texels > maxDim) return null;
  const textures: WeightTexture[] = [];
  for (let r = 0; r < w.rows; r += maxDim) {
    const n = Math.min(maxDim, w.rows - r);
    const texture = ctx.createTexture({
      size: [texels, n],
      format: "rgba32uint",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
      label: `${w.label}[${r}:${r + n}].tex`,
    });
    textures.push({ texture, view: texture.createView(), rowStart: r, rows: n, texels });
  }
  return textures;
}

/** Writes rows [rowStart, rowStart + bytes / rowBytes) of `w` into its texture copies. */
function writeWeightTextures(ctx: GpuContext, w: Weight, rowStart: number, bytes: Uint8Array): void {
  const rowBytes = weightRowBytes(w.dtype, w.cols);
  const rowEnd = rowStart + bytes.byteLength / rowBytes;
  for (const t of w.textures ?? []) {
    const a = Math.max(rowStart, t.rowStart), b = Math.min(rowEnd, t.rowStart + t.rows);
    if (a >= b) continue;
    const stride = t.texels * TEXEL_BYTES;
    const padded = stride !== rowBytes;
    // Unpadded rows go up in one write of the caller's bytes; padded ones in slabs of at most SLAB_BYTES, so
    // padding never needs a second copy of a whole chunk.
    const slabRows = padded ? Math.max(1, Math.floor(SLAB_BYTES / stride)) : b - a;
    for (let s = a; s < b; s += slabRows) {
      const m = Math.min(slabRows, b - s);
      let data = bytes.subarray((s - rowStart) * rowBytes, (s - rowStart + m) * rowBytes);
      if (padded) {
        const p = new Uint8Array(m * stride);
        for (let i = 0; i < m; i++) p.set(data.subarray(i * rowBytes, (i + 1) * rowBytes), i * stride);
        data = p;
      }
      ctx.flush();
      ctx.device.queue.writeTexture(
        { texture: t.texture, origin: [0, s - t.rowStart] },
        data as Uint8Array<ArrayBuffer>,
        { bytesPerRow: stride, rowsPerImage: m },
        [t.texels, m],
      );
    }
  }
}

/**
 * Adds the texture copy of a weight from its raw bytes (the same bytes given to {@link uploadWeight}).
 * Returns false (and adds nothing) when a row is too wide for one texture row.
 */
export function attachWeightTexture(ctx: GpuContext, w: Weight, bytes: Uint8Array): boolean {
  const textures = createWeightTextures(ctx, w);
  if (!textures) return false;
  w.textures = textures;
  writeWeightTextures(ctx, w, 0, bytes);
  return true;
}

/** Rows per chunk so that a chunk stays within `maxBytes` (a multiple of 64 rows where possible). */
export function rowsPerChunk(cols: number, dtype: WeightDType, maxBytes: number): number {
  const rowBytes = weightRowBytes(dtype, cols);
  const fit = Math.floor(maxBytes / rowBytes);
  if (fit < 1) {
    throw new Error(`a single row of ${cols} ${dtype} values exceeds the binding limit ${maxBytes}`);
  }
  return fit >= 64 ? fit - (fit % 64) : fit;
}

/**
 * A weight whose GPU storage exists and whose rows are written piece by piece ({@link createWeight}), so
 * that a large matrix streams from its file in chunks: host memory holds one chunk, never the matrix.
 */
export interface WeightWriter {
  /** The weight (its buffers and textures already allocated; contents undefined until written). */
  readonly weight: Weight;
  /**
   * Queues the upload of rows [rowStart, rowStart + bytes.byteLength / rowBytes) (raw bytes, as stored);
   * a quantized weight takes those rows' f16 scale bits too ([rows, scaleStride(cols)]).
   */
  write(rowStart: number, bytes: Uint8Array, scales?: Uint16Array): void;
}

/**
 * Allocates a [rows, cols] weight of `dtype` on the GPU — row-chunked storage buffers within `maxChunkBytes`
 * and/or the texture copy (see {@link UploadWeightOptions}) — for its rows to be written with
 * {@link WeightWriter.write}. On failure nothing stays allocated; once returned, {@link destroyWeight} frees it.
 */
export function createWeight(
  ctx: GpuContext,
  label: string,
  dtype: WeightDType,
  rows: number,
  cols: number,
  maxChunkBytes: number = ctx.maxBinding,
  options: UploadWeightOptions = {},
): WeightWriter {
  const rowBytes = weightRowBytes(dtype, cols);
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 1 || cols < 1) {
    throw new Error(`weight ${label}: invalid shape [${rows}, ${cols}]`);
  }
  if ((dtype === "bf16" || dtype === "f16") && cols % 2 !== 0) {
    throw new Error(`weight ${label}: ${dtype} needs an even column count, got ${cols}`);
  }
  const stride = scaleStride(cols);
  const scaleBytes = isQuantized(dtype) ? rows * stride * 2 : 0;
  const w: Weight = { label, dtype, rows, cols, bytes: rows * rowBytes + scaleBytes, chunks: [] };
  try {
    if (scaleBytes > 0) {
      if (scaleBytes > ctx.maxBinding) {
        throw new Error(
          `weight ${label}: ${scaleBytes} bytes of scales exceed the binding limit ${ctx.maxBinding}`,
        );
      }
      w.scales = ctx.createBuffer(scaleBytes, `${label}.scales`);
    }
    const texture = options.texture ?? "auto";
    if (texture === true || (texture === "auto" && ctx.gpu.useTextures)) {
      w.textures = createWeightTextures(ctx, w) ?? undefined;
    }
    if (!(w.textures && options.keepBuffer === false)) {
      const per = rowsPerChunk(cols, dtype, maxChunkBytes);
      for (let r = 0; r < rows; r += per) {
        const n = Math.min(per, rows - r);
        w.chunks.push({
          buffer: ctx.createBuffer(n * rowBytes, `${label}[${r}:${r + n}]`),
          rowStart: r,
          rows: n,
        });
      }
    }
  } catch (e) {
    destroyWeight(w);
    throw e;
  }
  const write = (rowStart: number, bytes: Uint8Array, scales?: Uint16Array): void => {
    const n = bytes.byteLength / rowBytes;
    if (!Number.isInteger(n) || rowStart < 0 || rowStart + n > rows) {
      throw new Error(
        `weight ${label}: ${bytes.byteLength} bytes at row ${rowStart} are not whole rows of [${rows}, ${cols}] ${dtype}`,
      );
    }
    if (w.scales) {
      if (!scales || scales.length !== n * stride) {
        throw new Error(
          `weight ${label}: ${n} rows of ${dtype} need ${n * stride} scales, got ${scales?.length ?? 0}`,
        );
      }
      ctx.write(w.scales, scales, rowStart * stride * 2);
    }
    writeWeightTextures(ctx, w, rowStart, bytes);
    for (const c of w.chunks) {
      const a = Math.max(rowStart, c.rowStart), b = Math.min(rowStart + n, c.rowStart + c.rows);
      if (a >= b) continue;
      ctx.write(
        c.buffer,
        bytes.subarray((a - rowStart) * rowBytes, (b - rowStart) * rowBytes),
        (a - c.rowStart) * rowBytes,
      );
    }
  };
  return { weight: w, write };
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
  const writer = createWeight(ctx, label, dtype, rows, cols, maxChunkBytes, options);
  writer.write(0, bytes);
  return writer.weight;
}

/** Where the first non-finite value of a tensor's bytes is, and how many there are. */
export interface NonFiniteCount {
  /** Values that are NaN or ±Inf. */
  count: number;
  /** Element index of the first one (-1 when there is none). */
  first: number;
}

/** Words per block of the non-finite scan's fast pass (a block with a hit is rescanned exactly). */
const SCAN_BLOCK = 4096;

/** OR over words [from, to) of ((w >>> 1) & mask) + add: the fast pass of {@link countNonFinite}. */
function carries(u: Uint32Array, from: number, to: number, mask: number, add: number): number {
  let a = 0;
  for (let i = from; i < to; i++) a |= ((u[i] >>> 1) & mask) + add;
  return a;
}

/**
 * Counts the NaN and ±Inf values among raw little-endian `bf16`/`f16`/`f32` bytes in one pass over a u32
 * view (two 16-bit values per word). The fast pass is branch-free: a value is non-finite when its exponent
 * bits are all ones, and with the word shifted right by one, adding the exponent field's lowest bit to the
 * masked field carries into the bit above it exactly then (bit 14 for the low half, 30 for the high half —
 * no int32 overflow); the carries are OR-ed over blocks of 4096 words, and only a block that shows one is
 * rescanned to count and locate its values.
 */
export function countNonFinite(dtype: DType | "u8", bytes: Uint8Array): NonFiniteCount {
  if (dtype === "u8") return { count: 0, first: -1 }; // integers (quantized values) are always finite
  const size = dtypeBytes(dtype);
  const n = Math.floor(bytes.byteLength / size);
  const out: NonFiniteCount = { count: 0, first: -1 };
  const found = (i: number): void => {
    if (out.first < 0) out.first = i;
    out.count++;
  };
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const words = Math.floor(aligned.byteLength / 4);
  const u = new Uint32Array(aligned.buffer, aligned.byteOffset, words);
  // The exponent field of a value (f32: of the word; 16-bit: of the low half; `hi`: of the high half), and
  // for the fast pass the field shifted right by one in every lane, with the carry an all-ones field makes.
  const exp = size === 4 ? 0x7f800000 : dtype === "bf16" ? 0x7f80 : 0x7c00;
  const hi = size === 4 ? 0 : exp << 16;
  const half = exp >>> 1;
  const mask = size === 4 ? half : half | (half << 16);
  const low = half & -half;
  const add = size === 4 ? low : low | (low << 16);
  const flag = size === 4 ? 0x40000000 : 0x40004000;
  for (let b = 0; b < words; b += SCAN_BLOCK) {
    const e = Math.min(words, b + SCAN_BLOCK);
    if ((carries(u, b, e, mask, add) & flag) === 0) continue;
    for (let i = b; i < e; i++) {
      const w = u[i];
      if (size === 4) {
        if ((w & exp) === exp) found(i);
      } else {
        if ((w & exp) === exp) found(2 * i);
        if ((w & hi) === hi) found(2 * i + 1);
      }
    }
  }
  if (size === 2 && 2 * words < n) {
    const last = aligned[aligned.byteLength - 2] | (aligned[aligned.byteLength - 1] << 8);
    if ((last & exp) === exp) found(n - 1);
  }
  return out;
}

/** Frees a weight's buffers. */
export function destroyWeight(w: Weight): void {
  for (const c of w.chunks) c.buffer.destroy();
  w.scales?.destroy();
  for (const t of w.textures ?? []) t.texture.destroy();
}
