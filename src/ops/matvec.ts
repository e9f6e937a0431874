/**
 * Matrix × small batch of vectors (decode): y[b, r] = Σ_c W[r, c] · x[b, c] (+ bias[r]) (+ y[b, r]).
 *
 * Each invocation reads its rows' weights once for a group of up to {@link MATVEC_GROUP} vectors; larger batches
 * are several groups (on the texture path in the same dispatch, so it also serves prefill). Two kernels:
 * - texture path (wgsl/matvec_tex.wgsl) when the weight carries a texture copy (`Weight.textures`, made by
 *   `uploadWeight` on CPU adapters): x is first staged into a small texture (wgsl/copy_x_texture.wgsl);
 * - storage-buffer path (wgsl/matvec.wgsl) otherwise, one dispatch per weight chunk.
 * Accumulation is in f32; bf16 → f32 and f16 → f32 unpacking are exact.
 */
import matvecCode from "../../wgsl/matvec.wgsl" with { type: "text" };
import matvecTexCode from "../../wgsl/matvec_tex.wgsl" with { type: "text" };
import copyXCode from "../../wgsl/copy_x_texture.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";
import type { KernelSource } from "../gpu/pipelines.ts";
import type { Weight } from "../gpu/weights.ts";
import type { DType } from "../dtype.ts";

/** Most vectors one kernel pass serves with a single read of the weights. */
export const MATVEC_GROUP = 8;

/** Options of {@link matvec}. */
export interface MatvecOptions {
  /** f32 [w.rows] added to every output vector. */
  bias?: Binding;
  /** Number of vectors: x is [batch, w.cols], y is [batch, w.rows] (default 1). */
  batch?: number;
  /** Add into y (y += W x) instead of overwriting it — fuses a residual add into an output projection. */
  accumulate?: boolean;
  /** Force a path (tests and benchmarks); default: texture when the weight has one. */
  path?: "texture" | "buffer";
}

/** Rows per invocation for a batch group: the R·BB accumulators stay within 8 registers' worth. */
function rowsPerInvocation(bb: number): number {
  return Math.max(1, 8 / bb);
}

/** Rows per invocation of the texture kernel per batch tier (measured: bench/RESULTS-kernels.md). */
export const TEX_ROWS: Record<number, number> = { 1: 8, 2: 4, 4: 4, 8: 4 };

/** Batch tiers compiled: the smallest tier ≥ the live batch (1, 2, 4 or 8). */
function batchTier(n: number): number {
  return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8;
}

/** Workgroup size: small when there are few invocations, so both CPU threads get work. */
function workgroupSize(invocations: number): number {
  return invocations >= 256 ? 64 : 16;
}

const TEX_DTYPE: Record<DType, string> = {
  bf16: `struct X8 { e: vec4<f32>, o: vec4<f32> }
alias XV = X8;
fn xload(t: u32, b: u32) -> XV {
  let a = textureLoad(xt, vec2<u32>(2u * t, b), 0);
  let c = textureLoad(xt, vec2<u32>(2u * t + 1u, b), 0);
  return X8(vec4<f32>(a.x, a.z, c.x, c.z), vec4<f32>(a.y, a.w, c.y, c.w));
}
fn wdot(u: vec4<u32>, xv: XV) -> vec4<f32> {
  // bf16 is the top half of an f32: even values (low halves) shift up, odd values mask; both exact.
  let lo = bitcast<vec4<f32>>(u << vec4<u32>(16u));
  let hi = bitcast<vec4<f32>>(u & vec4<u32>(0xffff0000u));
  return lo * xv.e + hi * xv.o;
}`,
  f16: `struct X8 { e: vec4<f32>, o: vec4<f32> }
alias XV = X8;
fn xload(t: u32, b: u32) -> XV {
  let a = textureLoad(xt, vec2<u32>(2u * t, b), 0);
  let c = textureLoad(xt, vec2<u32>(2u * t + 1u, b), 0);
  return X8(vec4<f32>(a.x, a.z, c.x, c.z), vec4<f32>(a.y, a.w, c.y, c.w));
}
fn wdot(u: vec4<u32>, xv: XV) -> vec4<f32> {
  // unpack2x16float is core WGSL (no shader-f16 needed) and exact.
  let a = unpack2x16float(u.x);
  let b = unpack2x16float(u.y);
  let c = unpack2x16float(u.z);
  let d = unpack2x16float(u.w);
  return vec4<f32>(a.x, b.x, c.x, d.x) * xv.e + vec4<f32>(a.y, b.y, c.y, d.y) * xv.o;
}`,
  f32: `alias XV = vec4<f32>;
fn xload(t: u32, b: u32) -> XV { return textureLoad(xt, vec2<u32>(t, b), 0); }
fn wdot(u: vec4<u32>, xv: XV) -> vec4<f32> { return bitcast<vec4<f32>>(u) * xv; }`,
};

const BUF_DTYPE: Record<DType, string> = {
  bf16: `alias WTYPE = u32;
fn wpair(i: u32) -> vec2<f32> {
  let u = w[i >> 1u];
  return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
}
fn wone(i: u32) -> f32 { return wpair(i & ~1u)[i & 1u]; }`,
  f16: `alias WTYPE = u32;
fn wpair(i: u32) -> vec2<f32> { return unpack2x16float(w[i >> 1u]); }
fn wone(i: u32) -> f32 { return wpair(i & ~1u)[i & 1u]; }`,
  f32: `alias WTYPE = f32;
fn wpair(i: u32) -> vec2<f32> { return vec2<f32>(w[i], w[i + 1u]); }
fn wone(i: u32) -> f32 { return w[i]; }`,
};

function consts(values: Record<string, number | boolean>): string {
  return Object.entries(values).map(([k, v]) =>
    typeof v === "boolean" ? `const ${k} = ${v};` : `const ${k}: u32 = ${v}u;`
  ).join("\n");
}

const kernels = new Map<string, KernelSource>();
function kernel(name: string, build: () => string): KernelSource {
  let k = kernels.get(name);
  if (!k) {
    k = { name, code: build() };
    kernels.set(name, k);
  }
  return k;
}

/** A 4-byte buffer bound where a kernel's optional input is absent (WGSL bindings are static). */
const dummies = new WeakMap<GpuContext, GPUBuffer>();
export function dummyBinding(ctx: GpuContext): GPUBuffer {
  let b = dummies.get(ctx);
  if (!b) {
    b = ctx.createBuffer(16, "dummy");
    dummies.set(ctx, b);
  }
  return b;
}

/**
 * Per-context staging textures for x, one per width, grown to the tallest height asked for (rows past the
 * current call's are never read, so a taller texture serves shorter calls).
 */
const stagings = new WeakMap<GpuContext, Map<number, { tex: GPUTexture; view: GPUTextureView }>>();
function staging(ctx: GpuContext, texels: number, height: number): GPUTextureView {
  let m = stagings.get(ctx);
  if (!m) stagings.set(ctx, m = new Map());
  const have = m.get(texels);
  if (have && have.tex.height >= height) return have.view;
  // The old texture may still be referenced by recorded work: let the GC reclaim it rather than destroy it.
  const tex = ctx.device.createTexture({
    size: [texels, height],
    format: "rgba32float",
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING,
    label: `matvec-x-${texels}x${height}`,
  });
  const entry = { tex, view: tex.createView() };
  m.set(texels, entry);
  return entry.view;
}

/**
 * Records y = W x (+ bias) (+ y) for `opts.batch` vectors. x: f32 [batch, w.cols]; y: f32 [batch, w.rows];
 * bias: f32 [w.rows]. y must not alias x.
 */
export function matvec(ctx: GpuContext, w: Weight, x: Binding, y: Binding, opts: MatvecOptions = {}): void {
  const batch = opts.batch ?? 1;
  if (!Number.isInteger(batch) || batch < 1) {
    throw new Error(`matvec: batch must be a positive integer, got ${batch}`);
  }
  const useTex = opts.path === "texture" || (opts.path !== "buffer" && w.textures !== undefined);
  if (useTex && !w.textures) throw new Error(`matvec: weight ${w.label} has no texture copy`);
  if (useTex) {
    // All groups of 8 vectors in one dispatch (grid z), up to the staging texture's height per pass.
    const per = ctx.device.limits.maxTextureDimension2D;
    for (let g = 0; g < batch; g += per) matvecTexture(ctx, w, x, y, Math.min(per, batch - g), g, opts);
    return;
  }
  for (let g = 0; g < batch; g += MATVEC_GROUP) {
    matvecBuffer(ctx, w, x, y, Math.min(MATVEC_GROUP, batch - g), g, opts);
  }
}

function matvecBuffer(
  ctx: GpuContext,
  w: Weight,
  x: Binding,
  y: Binding,
  n: number,
  g: number,
  opts: MatvecOptions,
): void {
  const bb = batchTier(n);
  const r = rowsPerInvocation(bb);
  const accumulate = opts.accumulate ?? false;
  const hasBias = opts.bias !== undefined;
  const odd = w.cols % 2 === 1;
  for (const c of w.chunks) {
    const inv = Math.ceil(c.rows / r);
    const wg = workgroupSize(inv);
    const k = kernel(
      `matvec_${w.dtype}_b${bb}_wg${wg}_${+accumulate}${+hasBias}${+odd}`,
      () =>
        consts({ R: r, BB: bb, WG: wg, ACCUMULATE: accumulate, HAS_BIAS: hasBias, ODD_TAIL: odd }) + "\n" +
        BUF_DTYPE[w.dtype] + "\n" + matvecCode,
    );
    const [gx, gy] = ctx.grid(Math.ceil(inv / wg));
    const u = new Uint32Array([c.rows, w.cols, c.rowStart, w.rows, n, gx * wg, g * w.rows, g * w.cols]);
    ctx.dispatch(k, [c.buffer, x, y, opts.bias ?? dummyBinding(ctx)], [gx, gy], u);
  }
}

/** The texture kernel with its R×BB inner loop written out (see the comment in wgsl/matvec_tex.wgsl). */
function unrolledTexBody(r: number, bb: number): string {
  const decl: string[] = [], body: string[] = [], store: string[] = [];
  for (let b = 0; b < bb; b++) body.push(`let x${b} = xload(t, tok0 + ${b}u);`);
  for (let k = 0; k < r; k++) {
    const row = k === 0 ? "r0" : `min(r0 + ${k}u, last)`;
    body.push(`let u${k} = textureLoad(wt, vec2<u32>(t, ${row}), 0);`);
    for (let b = 0; b < bb; b++) {
      decl.push(`var a${k}_${b} = vec4<f32>(0.0);`);
      body.push(`a${k}_${b} += wdot(u${k}, x${b});`);
      store.push(`store(r0 + ${k}u, tok0 + ${b}u, a${k}_${b});`);
    }
  }
  return matvecTexCode.replace("//@DECL", decl.join("\n  ")).replace("//@BODY", body.join("\n    "))
    .replace("//@STORE", store.join("\n  "));
}

function matvecTexture(
  ctx: GpuContext,
  w: Weight,
  x: Binding,
  y: Binding,
  n: number,
  g: number,
  opts: MatvecOptions,
): void {
  const textures = w.textures!;
  const bb = batchTier(Math.min(n, MATVEC_GROUP));
  const groups = Math.ceil(n / bb);
  const r = TEX_ROWS[bb];
  const accumulate = opts.accumulate ?? false;
  const hasBias = opts.bias !== undefined;
  const texels = textures[0].texels;
  // x texels that meet one weight texel: 2 for 16-bit weights (8 values), 1 for f32 (4 values).
  const xTexels = w.dtype === "f32" ? texels : 2 * texels;
  const xt = staging(ctx, xTexels, groups * bb);
  const copyK = kernel("copy_x_texture", () => copyXCode);
  ctx.dispatch(
    copyK,
    [x, xt],
    [Math.ceil(xTexels / 64), groups * bb],
    new Uint32Array([w.cols, n, xTexels, g * w.cols]),
  );
  for (const t of textures) {
    const inv = Math.ceil(t.rows / r);
    const wg = workgroupSize(inv);
    const k = kernel(
      `matvec_tex_${w.dtype}_r${r}_b${bb}_wg${wg}_${+accumulate}${+hasBias}`,
      () =>
        consts({ R: r, BB: bb, WG: wg, ACCUMULATE: accumulate, HAS_BIAS: hasBias }) + "\n" +
        TEX_DTYPE[w.dtype] +
        "\n" +
        unrolledTexBody(r, bb),
    );
    const [gx, gy] = ctx.grid(Math.ceil(inv / wg));
    const u = new Uint32Array([t.rows, texels, t.rowStart, w.rows, n, gx * wg, g * w.rows, 0]);
    ctx.dispatch(k, [t.view, xt, y, opts.bias ?? dummyBinding(ctx)], [gx, gy, groups], u);
  }
}
