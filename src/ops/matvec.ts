/**
 * Matrix × small batch of vectors (decode): y[b, r] = Σ_c W[r, c] · x[b, c] (+ bias[r]) (+ y[b, r]).
 *
 * Each invocation reads its rows' weights once for a group of up to {@link MATVEC_GROUP} vectors; larger batches
 * are several groups (on the texture path in the same dispatch, so it also serves prefill). Two kernels:
 * - texture path (wgsl/matvec_tex.wgsl) when the weight carries a texture copy (`Weight.textures`, made by
 *   `uploadWeight` on CPU adapters): x is first staged into a small texture (wgsl/copy_x_texture.wgsl);
 * - storage-buffer path (wgsl/matvec.wgsl) otherwise, one dispatch per weight chunk: a workgroup per block of
 *   rows reading consecutive 16-byte words, reduced through workgroup memory (the previous kernel, one
 *   invocation looping over whole rows, is kept as bench/dev/matvec_rowloop.wgsl).
 * Accumulation is in f32; bf16 → f32 and f16 → f32 unpacking are exact; q8 / q4 weights (src/gpu/weights.ts)
 * are decoded in registers and each group's partial sum is multiplied by its f16 scale once.
 */
import matvecCode from "../../wgsl/matvec.wgsl" with { type: "text" };
import matvecTexCode from "../../wgsl/matvec_tex.wgsl" with { type: "text" };
import copyXCode from "../../wgsl/copy_x_texture.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";
import type { KernelSource } from "../gpu/pipelines.ts";
import { isQuantized, scaleStride, type Weight, type WeightDType, weightRowBytes } from "../gpu/weights.ts";

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

/** Rows per workgroup of the storage kernel for a batch group: R·BB ≤ 8 sums per invocation. */
function rowsPerInvocation(bb: number): number {
  return Math.max(1, 8 / bb);
}

/** Rows per invocation of the texture kernel per batch tier (measured: bench/RESULTS-kernels.md). */
export const TEX_ROWS: Record<number, number> = { 1: 8, 2: 4, 4: 4, 8: 4 };
/**
 * The same for q8 / q4 weights: a q4 texel meets 8 x texels (q8: 4), so more rows share each x fetch; 16 rows
 * at batch 1 measured ~1.2× faster than 8 (bench/RESULTS-kernels.md).
 */
export const QUANT_TEX_ROWS: Record<number, number> = { 1: 16, 2: 8, 4: 4, 8: 4 };

/** Batch tiers compiled: the smallest tier ≥ the live batch (1, 2, 4 or 8). */
function batchTier(n: number): number {
  return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8;
}

/** Workgroup size: small when there are few invocations, so both CPU threads get work. */
function workgroupSize(invocations: number): number {
  return invocations >= 256 ? 64 : 16;
}

const TEX_DTYPE: Record<WeightDType, string> = {
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
  // A q8 texel is 16 int8 values (half a group): byte j of word i is value 4i + j; x texels 4t..4t+3.
  q8: `struct X16 { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }
alias XV = X16;
fn xload(t: u32, b: u32) -> XV {
  let j = 4u * t;
  return X16(textureLoad(xt, vec2<u32>(j, b), 0), textureLoad(xt, vec2<u32>(j + 1u, b), 0),
             textureLoad(xt, vec2<u32>(j + 2u, b), 0), textureLoad(xt, vec2<u32>(j + 3u, b), 0));
}
// unpack4x8snorm gives q / 127 for each byte (core WGSL; the 127 goes into the scale).
fn wdot(u: vec4<u32>, v: XV) -> vec4<f32> {
  return unpack4x8snorm(u.x) * v.a + unpack4x8snorm(u.y) * v.b + unpack4x8snorm(u.z) * v.c + unpack4x8snorm(u.w) * v.d;
}
@group(0) @binding(5) var<storage, read> scales: array<u32>;
fn wscale(r: u32, t: u32) -> f32 {
  let i = (p.row_start + r) * p.scale_stride + t / 2u;
  return 127.0 * unpack2x16float(scales[i >> 1u])[i & 1u];
}`,
  // A q4 texel is one whole group of 32 values: nibble j of word i is value 8i + j, stored as q + 8. The + 8
  // is taken off once per texel and vector (8·Σx, from xload) rather than once per value.
  q4:
    `struct X32 { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>, e: vec4<f32>, f: vec4<f32>, g: vec4<f32>, h: vec4<f32>, s8: vec4<f32> }
alias XV = X32;
fn xload(t: u32, b: u32) -> XV {
  let j = 8u * t;
  let a = textureLoad(xt, vec2<u32>(j, b), 0);
  let c = textureLoad(xt, vec2<u32>(j + 1u, b), 0);
  let d = textureLoad(xt, vec2<u32>(j + 2u, b), 0);
  let e = textureLoad(xt, vec2<u32>(j + 3u, b), 0);
  let f = textureLoad(xt, vec2<u32>(j + 4u, b), 0);
  let g = textureLoad(xt, vec2<u32>(j + 5u, b), 0);
  let h = textureLoad(xt, vec2<u32>(j + 6u, b), 0);
  let i = textureLoad(xt, vec2<u32>(j + 7u, b), 0);
  return X32(a, c, d, e, f, g, h, i, 8.0 * (((a + c) + (d + e)) + ((f + g) + (h + i))));
}
fn nlo(w: u32) -> vec4<f32> { return vec4<f32>((vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)); }
fn nhi(w: u32) -> vec4<f32> { return vec4<f32>((vec4<u32>(w) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)); }
fn wdot(u: vec4<u32>, v: XV) -> vec4<f32> {
  return nlo(u.x) * v.a + nhi(u.x) * v.b + nlo(u.y) * v.c + nhi(u.y) * v.d +
         nlo(u.z) * v.e + nhi(u.z) * v.f + nlo(u.w) * v.g + nhi(u.w) * v.h - v.s8;
}
@group(0) @binding(5) var<storage, read> scales: array<u32>;
fn wscale(r: u32, t: u32) -> f32 {
  let i = (p.row_start + r) * p.scale_stride + t;
  return unpack2x16float(scales[i >> 1u])[i & 1u];
}`,
};

/** x values one weight texel meets, in x texels (4 values each). */
const X_TEXELS_PER_TEXEL: Record<WeightDType, number> = { f32: 1, bf16: 2, f16: 2, q8: 4, q4: 8 };

/** Storage kernel: how a weight word decodes (values per word, the value type, x reads, dot). */
const BUF_DTYPE: Record<WeightDType, { vpw: number; code: string }> = {
  bf16: {
    vpw: 2,
    code: `alias WV = vec2<f32>;
fn wvals(u: u32) -> WV { return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u)); }
fn xvals(i: u32, c: u32) -> WV { return vec2<f32>(x[i], x[i + 1u]); }
fn vdot(a: WV, b: WV) -> f32 { return dot(a, b); }
fn gscale(row: u32, unit: u32) -> f32 { return 1.0; }`,
  },
  f16: {
    vpw: 2,
    code: `alias WV = vec2<f32>;
fn wvals(u: u32) -> WV { return unpack2x16float(u); }
fn xvals(i: u32, c: u32) -> WV { return vec2<f32>(x[i], x[i + 1u]); }
fn vdot(a: WV, b: WV) -> f32 { return dot(a, b); }
fn gscale(row: u32, unit: u32) -> f32 { return 1.0; }`,
  },
  f32: {
    vpw: 1,
    code: `alias WV = f32;
fn wvals(u: u32) -> WV { return bitcast<f32>(u); }
fn xvals(i: u32, c: u32) -> WV { return x[i]; }
fn vdot(a: WV, b: WV) -> f32 { return a * b; }
fn gscale(row: u32, unit: u32) -> f32 { return 1.0; }`,
  },
  q8: {
    vpw: 4,
    code: `alias WV = vec4<f32>;
fn wvals(u: u32) -> WV { return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(u) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u)); }
// Columns past cols (the zero-padded last group) read 0: x there belongs to the next vector.
fn xq(i: u32, c: u32) -> vec4<f32> {
  return select(vec4<f32>(0.0), vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]),
                vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cols));
}
fn xvals(i: u32, c: u32) -> WV { return xq(i, c); }
fn vdot(a: WV, b: WV) -> f32 { return dot(a, b); }
@group(0) @binding(5) var<storage, read> scales: array<u32>;
fn gscale(row: u32, unit: u32) -> f32 {
  let i = (p.row_start + row) * p.scale_stride + unit / 2u;
  return unpack2x16float(scales[i >> 1u])[i & 1u];
}`,
  },
  q4: {
    vpw: 8,
    code: `struct WV { lo: vec4<f32>, hi: vec4<f32> }
fn wvals(u: u32) -> WV {
  let v = vec4<u32>(u);
  return WV(vec4<f32>((v >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) - vec4<f32>(8.0),
            vec4<f32>((v >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) - vec4<f32>(8.0));
}
fn xq(i: u32, c: u32) -> vec4<f32> {
  return select(vec4<f32>(0.0), vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]),
                vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cols));
}
fn xvals(i: u32, c: u32) -> WV { return WV(xq(i, c), xq(i + 4u, c + 4u)); }
fn vdot(a: WV, b: WV) -> f32 { return dot(a.lo, b.lo) + dot(a.hi, b.hi); }
@group(0) @binding(5) var<storage, read> scales: array<u32>;
fn gscale(row: u32, unit: u32) -> f32 {
  let i = (p.row_start + row) * p.scale_stride + unit;
  return unpack2x16float(scales[i >> 1u])[i & 1u];
}`,
  },
};

/** Storage kernel: the weight binding as 16-byte units (rows of whole units) or as 32-bit words. */
const BUF_WORDS = {
  vec4: `alias WTYPE = vec4<u32>;
fn wunit(i: u32) -> vec4<u32> { return w[i]; }
fn wword(i: u32) -> u32 { return w[i >> 2u][i & 3u]; }`,
  word: `alias WTYPE = u32;
fn wunit(i: u32) -> vec4<u32> { return vec4<u32>(w[4u * i], w[4u * i + 1u], w[4u * i + 2u], w[4u * i + 3u]); }
fn wword(i: u32) -> u32 { return w[i]; }`,
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
  // The context's path decides (a weight without storage chunks can only be read from its textures).
  const useTex = opts.path === "texture" ||
    (opts.path !== "buffer" && w.textures !== undefined && (ctx.gpu.useTextures || w.chunks.length === 0));
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
  const quant = isQuantized(w.dtype);
  const rowWords = weightRowBytes(w.dtype, w.cols) / 4;
  const vec4 = rowWords % 4 === 0;
  const units = Math.floor(rowWords / 4);
  // Invocations striding along a row: no more than its 16-byte units (a tiny row leaves the rest idle).
  const wg = units >= 64 ? 64 : units >= 32 ? 32 : 16;
  const dt = BUF_DTYPE[w.dtype];
  const k = kernel(
    `matvec_${w.dtype}_b${bb}_wg${wg}_${+accumulate}${+hasBias}${+vec4}`,
    () =>
      consts({
        R: r,
        BB: bb,
        WG: wg,
        VPW: dt.vpw,
        ACCUMULATE: accumulate,
        HAS_BIAS: hasBias,
        QUANT: quant,
        VEC4: vec4,
      }) +
      "\n" + BUF_WORDS[vec4 ? "vec4" : "word"] + "\n" + dt.code + "\n" + matvecCode,
  );
  for (const c of w.chunks) {
    const [gx, gy] = ctx.grid(Math.ceil(c.rows / r));
    const u = new Uint32Array([
      c.rows,
      w.cols,
      c.rowStart,
      w.rows,
      n,
      gx,
      g * w.rows,
      g * w.cols,
      rowWords,
      scaleStride(w.cols),
      0,
      0,
    ]);
    const bind: Binding[] = [c.buffer, x, y, opts.bias ?? dummyBinding(ctx)];
    if (quant) bind.push(w.scales!);
    ctx.dispatch(k, bind, [gx, gy], u);
  }
}

/** The texture kernel with its R×BB inner loop written out (see the comment in wgsl/matvec_tex.wgsl). */
function unrolledTexBody(r: number, bb: number, scaled: boolean): string {
  const decl: string[] = [], body: string[] = [], store: string[] = [];
  for (let b = 0; b < bb; b++) body.push(`let x${b} = xload(t, tok0 + ${b}u);`);
  for (let k = 0; k < r; k++) {
    const row = k === 0 ? "r0" : `min(r0 + ${k}u, last)`;
    body.push(`let u${k} = textureLoad(wt, vec2<u32>(t, ${row}), 0);`);
    // Quantized: the texel's partial products times its group's scale.
    if (scaled) body.push(`let s${k} = wscale(${row}, t);`);
    for (let b = 0; b < bb; b++) {
      decl.push(`var a${k}_${b} = vec4<f32>(0.0);`);
      body.push(scaled ? `a${k}_${b} += s${k} * wdot(u${k}, x${b});` : `a${k}_${b} += wdot(u${k}, x${b});`);
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
  const r = (isQuantized(w.dtype) ? QUANT_TEX_ROWS : TEX_ROWS)[bb];
  const accumulate = opts.accumulate ?? false;
  const hasBias = opts.bias !== undefined;
  const texels = textures[0].texels;
  // x texels that meet one weight texel: 2 for 16-bit weights (8 values), 1 for f32 (4 values), 4 for q8, 8 for q4.
  const xTexels = X_TEXELS_PER_TEXEL[w.dtype] * texels;
  const quant = isQuantized(w.dtype);
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
        unrolledTexBody(r, bb, quant),
    );
    const [gx, gy] = ctx.grid(Math.ceil(inv / wg));
    const u = new Uint32Array([
      t.rows,
      texels,
      t.rowStart,
      w.rows,
      n,
      gx * wg,
      g * w.rows,
      scaleStride(w.cols),
    ]);
    const bind: (Binding | GPUTextureView)[] = [t.view, xt, y, opts.bias ?? dummyBinding(ctx)];
    if (quant) bind.push(w.scales!);
    ctx.dispatch(k, bind, [gx, gy, groups], u);
  }
}
