/**
 * Tiled matmul (prefill): Y[m, r] = Σ_c X[m, c] · W[r, c] (+ bias[r]) (+ Y[m, r]) for M token rows.
 * Tiled kernel: one dispatch per weight chunk; each workgroup computes a 32 × 32 output tile from
 * workgroup-shared slices, staged with coalesced 16-byte loads of whole k-steps of 32 (wgsl/matmul_vec4.wgsl)
 * when rows are whole 16-byte units and cols % 4 == 0 — every real model —, else element by element
 * (wgsl/matmul.wgsl). Weights with a texture copy use the texture matvec instead (on a
 * context whose path uses textures). Accumulation in f32; weights bf16/f16/f32 (bf16 and f16 unpack exactly)
 * or q8/q4 (dequantized as the tile is staged, each weight once per 32 tokens).
 */
import code from "../../wgsl/matmul.wgsl" with { type: "text" };
import vec4Code from "../../wgsl/matmul_vec4.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";
import type { KernelSource } from "../gpu/pipelines.ts";
import { isQuantized, scaleStride, type Weight, type WeightDType, weightRowBytes } from "../gpu/weights.ts";
import { dummyBinding, matvec } from "./matvec.ts";

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** f32 [w.rows] added to every output row. */
  bias?: Binding;
  /** Add into Y instead of overwriting it (residual connections). */
  accumulate?: boolean;
  /**
   * Force a kernel (tests, benchmarks). Default: when the weight has a texture copy (CPU adapters), the texture
   * matvec over all M rows — on lavapipe workgroup-memory loads cost as much as storage loads, and the
   * batched texture matvec measured ~30× the tiled kernel's GFLOP/s (bench/RESULTS-kernels.md); else tiled.
   */
  path?: "tiled" | "texture";
}

/** Output tile edge (tokens and weight rows) of one workgroup. */
export const MATMUL_TILE = 32;

const SCALE = `@group(0) @binding(5) var<storage, read> scales: array<u32>;
fn wscale(r: u32, c: u32) -> f32 {
  let i = (p.row_start + r) * p.scale_stride + c / 32u;
  return unpack2x16float(scales[i >> 1u])[i & 1u];
}`;

const WLOAD: Record<WeightDType, string> = {
  bf16: `alias WTYPE = u32;
fn wload(r: u32, c: u32) -> f32 {
  let i = r * p.cols + c;
  let u = w[i >> 1u];
  return bitcast<f32>(select(u << 16u, u & 0xffff0000u, (i & 1u) == 1u));
}`,
  f16: `alias WTYPE = u32;
fn wload(r: u32, c: u32) -> f32 { let i = r * p.cols + c; return unpack2x16float(w[i >> 1u])[i & 1u]; }`,
  f32: `alias WTYPE = f32;
fn wload(r: u32, c: u32) -> f32 { return w[r * p.cols + c]; }`,
  q8: `alias WTYPE = u32;
fn wload(r: u32, c: u32) -> f32 {
  let u = w[r * p.row_words + c / 4u];
  return f32(bitcast<i32>(u << (24u - 8u * (c & 3u))) >> 24u) * wscale(r, c);
}
${SCALE}`,
  q4: `alias WTYPE = u32;
fn wload(r: u32, c: u32) -> f32 {
  let u = w[r * p.row_words + c / 8u];
  return f32(i32((u >> (4u * (c & 7u))) & 15u) - 8) * wscale(r, c);
}
${SCALE}`,
};

/**
 * The coalesced kernel (wgsl/matmul_vec4.wgsl): how a 16-byte unit of each dtype decodes into workgroup memory
 * (values per 32-bit word, and `stage`; quantized values are exact integers times the group's scale).
 */
const STAGE: Record<WeightDType, { vpw: number; code: string }> = {
  f32: {
    vpw: 1,
    code: `fn stage(e: u32, u: vec4<u32>, s: f32) {
  let f = bitcast<vec4<f32>>(u);
  ws[e] = f.x; ws[e + 1u] = f.y; ws[e + 2u] = f.z; ws[e + 3u] = f.w;
}`,
  },
  bf16: {
    vpw: 2,
    code: `fn stage(e: u32, u: vec4<u32>, s: f32) {
  for (var i = 0u; i < 4u; i++) {
    ws[e + 2u * i] = bitcast<f32>(u[i] << 16u);
    ws[e + 2u * i + 1u] = bitcast<f32>(u[i] & 0xffff0000u);
  }
}`,
  },
  f16: {
    vpw: 2,
    code: `fn stage(e: u32, u: vec4<u32>, s: f32) {
  for (var i = 0u; i < 4u; i++) {
    let h = unpack2x16float(u[i]);
    ws[e + 2u * i] = h.x;
    ws[e + 2u * i + 1u] = h.y;
  }
}`,
  },
  q8: {
    vpw: 4,
    code: `fn stage(e: u32, u: vec4<u32>, s: f32) {
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      ws[e + 4u * i + j] = f32(bitcast<i32>(u[i] << (24u - 8u * j)) >> 24u) * s;
    }
  }
}`,
  },
  q4: {
    vpw: 8,
    code: `fn stage(e: u32, u: vec4<u32>, s: f32) {
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 8u; j++) {
      ws[e + 8u * i + j] = f32(i32((u[i] >> (4u * j)) & 15u) - 8) * s;
    }
  }
}`,
  },
};

const GSCALE_QUANT = `@group(0) @binding(5) var<storage, read> scales: array<u32>;
fn gscale(r: u32, k0: u32) -> f32 {
  let i = (p.row_start + r) * p.scale_stride + k0 / 32u;
  return unpack2x16float(scales[i >> 1u])[i & 1u];
}`;
const GSCALE_FLOAT = `fn gscale(r: u32, k0: u32) -> f32 { return 1.0; }`;

const kernels = new Map<string, KernelSource>();

/** The kernel for `w`: the coalesced one when rows are whole 16-byte units and cols % 4 == 0, else scalar. */
function tiledKernel(w: Weight, accumulate: boolean, hasBias: boolean): KernelSource {
  const vec4 = (weightRowBytes(w.dtype, w.cols) / 4) % 4 === 0 && w.cols % 4 === 0;
  const name = `matmul${vec4 ? "_vec4" : ""}_${w.dtype}_${+accumulate}${+hasBias}`;
  let k = kernels.get(name);
  if (!k) {
    const quant = isQuantized(w.dtype);
    const st = STAGE[w.dtype];
    const text = vec4
      ? `const UPR = ${8 / st.vpw}u;\nconst VPW = ${st.vpw}u;\nconst QUANT = ${quant};\n` +
        `${st.code}\n${quant ? GSCALE_QUANT : GSCALE_FLOAT}\n${vec4Code}`
      : `${WLOAD[w.dtype]}\n${code}`;
    k = { name, code: `const ACCUMULATE = ${accumulate};\nconst HAS_BIAS = ${hasBias};\n${text}` };
    kernels.set(name, k);
  }
  return k;
}

/**
 * Records Y = X Wᵀ (+ bias) (+ Y). X: f32 [m, w.cols]; Y: f32 [m, w.rows]; bias: f32 [w.rows].
 * Y must not alias X.
 */
export function matmul(
  ctx: GpuContext,
  w: Weight,
  x: Binding,
  y: Binding,
  m: number,
  opts: MatmulOptions = {},
): void {
  if (!Number.isInteger(m) || m < 1) throw new Error(`matmul: m must be a positive integer, got ${m}`);
  const textures = w.textures !== undefined && (ctx.gpu.useTextures || w.chunks.length === 0);
  if (opts.path === "texture" || (opts.path !== "tiled" && textures)) {
    matvec(ctx, w, x, y, { batch: m, bias: opts.bias, accumulate: opts.accumulate, path: "texture" });
    return;
  }
  const accumulate = opts.accumulate ?? false;
  const hasBias = opts.bias !== undefined;
  const k = tiledKernel(w, accumulate, hasBias);
  const tilesM = Math.ceil(m / MATMUL_TILE);
  for (const c of w.chunks) {
    const tilesN = Math.ceil(c.rows / MATMUL_TILE);
    // The kernel unfolds the tile index as wid.x + wid.y · 65535.
    const total = tilesM * tilesN;
    const gx = Math.min(total, 65535);
    const gy = Math.ceil(total / 65535);
    const u = new Uint32Array([
      m,
      c.rows,
      w.cols,
      c.rowStart,
      w.rows,
      tilesN,
      weightRowBytes(w.dtype, w.cols) / 4,
      scaleStride(w.cols),
    ]);
    const bind: Binding[] = [c.buffer, x, y, opts.bias ?? dummyBinding(ctx)];
    if (isQuantized(w.dtype)) bind.push(w.scales!);
    ctx.dispatch(k, bind, [gx, gy], u);
  }
}
