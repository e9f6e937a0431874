/**
 * Attention on the GPU: decode (one query token, split-K "flash decoding" with per-token KV-policy scores)
 * and causal prefill (blocked multi-query split-K, optional observation-window scores).
 *
 * KV layout (the KV-cache contract): for one sequence and one layer, K and V are f32 token-major
 * [capacity, nKvHeads, headDim] (K after RoPE); `len` slots are valid, in slot order (positions do not
 * matter: RoPE is applied). Queries and outputs are f32 [nHeads, headDim] per token; query head h reads KV
 * head floor(h / (nHeads / nKvHeads)); scale 1/√headDim.
 *
 * Both ops copy their queries into a uniform buffer (CPU adapters broadcast uniform loads but gather per
 * lane from storage memory), so the query buffer needs COPY_SRC usage (STORAGE_USAGE has it). Several
 * sequences = one call each (each has its own K/V and len); all calls batch into one submit.
 */
import decodeCode from "../../wgsl/attention_decode.wgsl" with { type: "text" };
import prefillCode from "../../wgsl/attention_prefill.wgsl" with { type: "text" };
import { type Binding, type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
import type { KernelSource } from "../gpu/pipelines.ts";
import type { AttentionShape } from "../ref/attention.ts";

export type { AttentionShape } from "../ref/attention.ts";

/** Tokens per split-K chunk of decode attention (one workgroup per chunk and KV head). */
export const DECODE_CHUNK = 128;
const DECODE_WG = 64;
/** Keys per prefill chunk and threads per prefill `partial` workgroup (a multiple of CH and headDim/4). */
const PREFILL_CH = 32;
const PREFILL_WG = 256;

/** Where a kernel writes per-token scores: `buffer[offset + j]` for each valid slot j. */
export interface ScoreTarget {
  buffer: Binding;
  /** Element offset of slot 0 (default 0). */
  offset?: number;
  /** Undefined: overwrite with this step's score. A number γ: S[j] = γ·S[j] + score[j] (γ = 1 is H2O). */
  gamma?: number;
}

/** Arguments of {@link attentionDecode}. */
export interface DecodeArgs extends AttentionShape {
  /** f32 [nHeads, headDim] at element `qOffset` (a multiple of 4). */
  q: Binding;
  qOffset?: number;
  /** f32 [capacity, nKvHeads, headDim], the first `len` slots valid. */
  k: Binding;
  v: Binding;
  /** f32 [nHeads, headDim] written at element `outOffset` (a multiple of 4). */
  out: Binding;
  outOffset?: number;
  /** Valid slots, ≥ 1. */
  len: number;
  /** score[j] = Σ_h softmax(q_h·K/√d)[j] for j < len. */
  scores?: ScoreTarget;
  /**
   * Read K/V through texture copies (made by copyBufferToTexture each call): several times faster on CPU
   * adapters, pure overhead on GPUs. Default: on CPU (fallback) adapters only.
   */
  texture?: boolean;
}

/** Arguments of {@link attentionPrefill}. */
export interface PrefillArgs extends AttentionShape {
  /** f32 [T, nHeads, headDim] at element `qOffset` (a multiple of 4). */
  q: Binding;
  qOffset?: number;
  /** f32 [capacity, nKvHeads, headDim] already holding start + T slots (past cache plus this chunk). */
  k: Binding;
  v: Binding;
  /** f32 [T, nHeads, headDim] written at element `outOffset`. */
  out: Binding;
  outOffset?: number;
  /** Query tokens in this call; query i occupies slot start + i and sees slots 0..start+i. */
  T: number;
  start: number;
  /**
   * Observation-window scores: for every slot j < start + T, Σ over the last `size` queries of this call
   * (clamped to T) and all heads of p[q, h, j].
   */
  window?: ScoreTarget & { size: number };
  /** Read K/V through texture copies (see {@link DecodeArgs.texture}). Default: on CPU adapters only. */
  texture?: boolean;
}

function checkShape(s: AttentionShape): number {
  const { nHeads, nKvHeads, headDim } = s;
  if (nHeads % nKvHeads !== 0) throw new Error(`nHeads ${nHeads} is not a multiple of nKvHeads ${nKvHeads}`);
  if (headDim % 4 !== 0 || headDim > 4 * DECODE_WG) {
    throw new Error(`headDim ${headDim} must be a multiple of 4 and at most ${4 * DECODE_WG}`);
  }
  return nHeads / nKvHeads;
}

function checkOffset(name: string, off: number): number {
  if (off % 4 !== 0) throw new Error(`${name} ${off} must be a multiple of 4 elements`);
  return off / 4;
}

const decodeKernels = new Map<string, KernelSource>();
/** `tpr` > 0: K/V come from textures holding `tpr` tokens per texture row; 0: from storage buffers. */
function decodeKernel(
  nHeads: number,
  nKv: number,
  hd: number,
  tpr: number,
  entryPoint: string,
): KernelSource {
  const key = `${nHeads}/${nKv}/${hd}/${tpr}/${entryPoint}`;
  let k = decodeKernels.get(key);
  if (!k) {
    const G = nHeads / nKv;
    const HD4 = hd / 4;
    let header = `const G: u32 = ${G}u;\nconst HD4: u32 = ${HD4}u;\nconst CH: u32 = ${DECODE_CHUNK}u;\n` +
      `const WG: u32 = ${DECODE_WG}u;\nconst NQ4: u32 = ${nHeads * HD4}u;\n`;
    header += kvAccessors(nKv, HD4, tpr);
    k = {
      name: `attention_decode_${entryPoint}_h${nHeads}_kv${nKv}_d${hd}${tpr > 0 ? `_tex${tpr}` : ""}`,
      code: header + decodeCode,
      entryPoint,
    };
    decodeKernels.set(key, k);
  }
  return k;
}

/** The per-context K/V texture pair of the CPU-adapter decode path (grown on demand, shared by all layers). */
interface KvTextures {
  k: GPUTexture;
  v: GPUTexture;
  kView: GPUTextureView;
  vView: GPUTextureView;
}
const kvTextures = new WeakMap<GpuContext, KvTextures>();

function decodeTextures(ctx: GpuContext, width: number, height: number): KvTextures {
  const cur = kvTextures.get(ctx);
  if (cur && cur.k.width === width && cur.k.height >= height) return cur;
  if (cur) {
    ctx.flush(); // recorded work may still use the old pair
    cur.k.destroy();
    cur.v.destroy();
  }
  const rows = Math.max(height, Math.ceil((cur?.k.height ?? 0) * 1.5), 16);
  const make = (label: string) =>
    ctx.device.createTexture({
      label,
      size: [width, Math.min(rows, ctx.device.limits.maxTextureDimension2D)],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
    });
  const k = make("attn-k-texture"), v = make("attn-v-texture");
  const t = { k, v, kView: k.createView(), vView: v.createView() };
  kvTextures.set(ctx, t);
  return t;
}

/**
 * Tokens per texture row for the texture path, or 0 when it cannot be used: rows of whole tokens whose byte
 * length is a multiple of 256 (a copy requirement), within the texture size limit.
 */
function texTokensPerRow(ctx: GpuContext, nKv: number, hd: number, len: number): number {
  const maxDim = ctx.device.limits.maxTextureDimension2D;
  const texels = nKv * hd / 4;
  let f = 1;
  while (f * 2 * texels <= maxDim) f *= 2;
  if ((f * texels * 16) % 256 !== 0 || Math.ceil(len / f) > maxDim) return 0;
  return f;
}

function bufferOf(b: Binding): { buffer: GPUBuffer; offset: number } {
  return b instanceof GPUBuffer ? { buffer: b, offset: 0 } : { buffer: b.buffer, offset: b.offset ?? 0 };
}

/** WGSL for bindings 2 and 3 (K, V) and their accessors: textures with `tpr` tokens per row, or buffers. */
function kvAccessors(nKv: number, HD4: number, tpr: number): string {
  return tpr > 0
    ? `@group(0) @binding(2) var kt: texture_2d<f32>;
@group(0) @binding(3) var vt: texture_2d<f32>;
fn texel(tok: u32, kh: u32, d: u32) -> vec2u {
  return vec2u((tok % ${tpr}u) * ${nKv * HD4}u + kh * ${HD4}u + d, tok / ${tpr}u);
}
fn kload(tok: u32, kh: u32, d: u32) -> vec4f { return textureLoad(kt, texel(tok, kh, d), 0); }
fn vload(tok: u32, kh: u32, d: u32) -> vec4f { return textureLoad(vt, texel(tok, kh, d), 0); }
`
    : `@group(0) @binding(2) var<storage, read> k: array<vec4f>;
@group(0) @binding(3) var<storage, read> v: array<vec4f>;
fn kload(tok: u32, kh: u32, d: u32) -> vec4f { return k[(tok * ${nKv}u + kh) * ${HD4}u + d]; }
fn vload(tok: u32, kh: u32, d: u32) -> vec4f { return v[(tok * ${nKv}u + kh) * ${HD4}u + d]; }
`;
}

/**
 * Binds K/V for `n` tokens: on the texture path (default on CPU adapters) records copies of them into the
 * context's texture pair and returns its views with the tokens per texture row; else the buffers and 0.
 */
function stageKv(
  ctx: GpuContext,
  k: Binding,
  v: Binding,
  nKv: number,
  hd: number,
  n: number,
  texture: boolean | undefined,
): { bind: (Binding | GPUTextureView)[]; tpr: number } {
  const kSrc = bufferOf(k), vSrc = bufferOf(v);
  const tpr = (texture ?? ctx.gpu.isFallback) && kSrc.offset % 16 === 0 && vSrc.offset % 16 === 0
    ? texTokensPerRow(ctx, nKv, hd, n)
    : 0;
  if (tpr === 0) return { bind: [k, v], tpr };
  const rowTexels = tpr * nKv * hd / 4;
  const bytesPerRow = rowTexels * 16;
  const tex = decodeTextures(ctx, rowTexels, Math.ceil(n / tpr));
  const full = Math.floor(n / tpr), tail = n % tpr;
  for (const [src, dst] of [[kSrc, tex.k], [vSrc, tex.v]] as const) {
    if (full > 0) ctx.copyToTexture(src.buffer, src.offset, bytesPerRow, dst, [0, 0], [rowTexels, full]);
    if (tail > 0) {
      ctx.copyToTexture(src.buffer, src.offset + full * bytesPerRow, bytesPerRow, dst, [0, full], [
        tail * nKv * hd / 4,
        1,
      ]);
    }
  }
  return { bind: [tex.kView, tex.vView], tpr };
}

const prefillKernels = new Map<string, KernelSource>();
function prefillKernel(
  nHeads: number,
  nKv: number,
  hd: number,
  M: number,
  tpr: number,
  entryPoint: string,
): KernelSource {
  const G = nHeads / nKv;
  const key = `${nHeads}/${nKv}/${hd}/${M}/${tpr}/${entryPoint}`;
  let k = prefillKernels.get(key);
  if (!k) {
    const header = `const G: u32 = ${G}u;\nconst HD4: u32 = ${hd / 4}u;\nconst M: u32 = ${M}u;\n` +
      `const NH: u32 = ${nHeads}u;\nconst CH: u32 = ${PREFILL_CH}u;\nconst WG: u32 = ${PREFILL_WG}u;\n` +
      kvAccessors(nKv, hd / 4, tpr);
    k = {
      name: `attention_prefill_${entryPoint}_h${nHeads}_kv${nKv}_d${hd}_m${M}${tpr > 0 ? `_tex${tpr}` : ""}`,
      code: header + prefillCode,
      entryPoint,
    };
    prefillKernels.set(key, k);
  }
  return k;
}

/**
 * Queries per prefill block: the block's queries must fit one uniform binding (64 KiB), and the M·G rows'
 * logits one chunk of workgroup memory (M·G·CH·4 bytes ≤ 12 KiB).
 */
export function prefillBlock(s: AttentionShape): number {
  const G = s.nHeads / s.nKvHeads;
  const byUniform = Math.floor(65536 / (s.nHeads * s.headDim * 4));
  const byShared = Math.floor(12288 / (G * PREFILL_CH * 4));
  return Math.max(1, Math.min(16, byUniform, byShared));
}

/**
 * Records decode attention for one sequence: `partial` (chunks × KV heads workgroups), `combine` (one per
 * head) and, with `scores`, a per-token score pass. Scratch comes from the context's pool.
 */
export function attentionDecode(ctx: GpuContext, a: DecodeArgs): void {
  checkShape(a);
  const { nHeads, nKvHeads, headDim: hd, len } = a;
  if (!(len >= 1)) throw new Error(`decode attention needs len ≥ 1, got ${len}`);
  const nChunks = Math.ceil(len / DECODE_CHUNK);
  const wantScores = a.scores !== undefined;
  const [sx, sy] = ctx.grid(Math.ceil(len / 256));
  const u = new ArrayBuffer(48);
  const u32 = new Uint32Array(u);
  const f32 = new Float32Array(u);
  u32.set([
    len,
    nChunks,
    checkOffset("qOffset", a.qOffset ?? 0),
    checkOffset("outOffset", a.outOffset ?? 0),
    a.scores?.offset ?? 0,
    a.scores?.gamma === undefined ? 0 : 1,
    nKvHeads,
    wantScores ? 1 : 0,
  ]);
  f32[8] = 1 / Math.sqrt(hd);
  f32[9] = a.scores?.gamma ?? 0;
  u32[10] = sx * 256;
  u32[11] = nHeads;
  const uniforms = new Uint8Array(u);

  const pool = ctx.pool;
  const partO = pool.acquire(nHeads * nChunks * hd * 4, STORAGE_USAGE, "attn-part-o");
  const partMl = pool.acquire(nHeads * nChunks * 8, STORAGE_USAGE, "attn-part-ml");
  const weights = pool.acquire(wantScores ? nHeads * len * 4 : 4, STORAGE_USAGE, "attn-weights");
  const factor = pool.acquire(wantScores ? nHeads * nChunks * 4 : 4, STORAGE_USAGE, "attn-factor");
  // The query goes to a uniform buffer (see wgsl/attention_decode.wgsl for why).
  const qBytes = nHeads * hd * 4;
  const qUniform = pool.acquire(qBytes, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, "attn-q-uniform");
  const qSrc = a.q instanceof GPUBuffer
    ? { buffer: a.q, offset: 0 }
    : { buffer: a.q.buffer, offset: a.q.offset ?? 0 };
  ctx.copy(qSrc.buffer, qSrc.offset + (a.qOffset ?? 0) * 4, qUniform, 0, qBytes);
  const { bind: kvBind, tpr } = stageKv(ctx, a.k, a.v, nKvHeads, hd, len, a.texture);
  ctx.dispatch(
    decodeKernel(nHeads, nKvHeads, hd, tpr, "partial"),
    [qUniform, ...kvBind, partO, partMl, weights],
    [nChunks, nKvHeads],
    uniforms,
  );
  ctx.dispatch(
    decodeKernel(nHeads, nKvHeads, hd, 0, "combine"),
    [partO, partMl, a.out, factor],
    [nHeads],
    uniforms,
  );
  if (a.scores) {
    ctx.dispatch(
      decodeKernel(nHeads, nKvHeads, hd, 0, "scores"),
      [weights, factor, a.scores.buffer],
      [sx, sy],
      uniforms,
    );
  }
  // Safe to recycle now: later users of these buffers are recorded (and so run) after this work.
  for (const b of [qUniform, partO, partMl, weights, factor]) pool.release(b);
}

/**
 * Records causal prefill attention for one sequence: per block of {@link prefillBlock} queries, a copy of the
 * block's queries into a uniform buffer, `partial` (chunks × KV heads) and `combine` (queries × heads); then,
 * when asked, the observation-window scores. Scratch comes from the context's pool.
 */
export function attentionPrefill(ctx: GpuContext, a: PrefillArgs): void {
  checkShape(a);
  const { nHeads, nKvHeads, headDim: hd, T, start } = a;
  if (!(T >= 1)) throw new Error(`prefill attention needs T ≥ 1, got ${T}`);
  const n = start + T;
  const M = prefillBlock(a);
  const W = Math.min(a.window?.size ?? 0, T);
  const [wx, wy] = ctx.grid(Math.ceil(n / 64));
  const qOff4 = checkOffset("qOffset", a.qOffset ?? 0);
  const outOff4 = checkOffset("outOffset", a.outOffset ?? 0);
  const maxChunks = Math.ceil(n / PREFILL_CH);
  const pool = ctx.pool;
  const rowBytes = nHeads * hd * 4;
  const qUniform = pool.acquire(M * rowBytes, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, "prefill-q");
  const partO = pool.acquire(M * nHeads * maxChunks * hd * 4, STORAGE_USAGE, "prefill-part-o");
  const partMl = pool.acquire(M * nHeads * maxChunks * 8, STORAGE_USAGE, "prefill-part-ml");
  const stats = pool.acquire(T * nHeads * 8, STORAGE_USAGE, "prefill-stats");
  const qSrc = bufferOf(a.q);
  const { bind: kvBind, tpr } = stageKv(ctx, a.k, a.v, nKvHeads, hd, n, a.texture);
  const params = (q0: number, mv: number, nChunks: number): Uint8Array => {
    const u = new ArrayBuffer(64);
    const u32 = new Uint32Array(u);
    const f32 = new Float32Array(u);
    u32.set([T, start, nKvHeads, q0, mv, nChunks, outOff4, W]);
    f32[8] = 1 / Math.sqrt(hd);
    f32[9] = a.window?.gamma ?? 0;
    u32[10] = a.window?.gamma === undefined ? 0 : 1;
    u32[11] = wx * 64;
    u32[12] = a.window?.offset ?? 0;
    u32[13] = qOff4;
    return new Uint8Array(u);
  };
  for (let q0 = 0; q0 < T; q0 += M) {
    const mv = Math.min(M, T - q0);
    const nChunks = Math.ceil((start + q0 + mv) / PREFILL_CH);
    const u = params(q0, mv, nChunks);
    // Blocks run in recording order, so one set of scratch buffers serves them all.
    ctx.copy(qSrc.buffer, qSrc.offset + (a.qOffset ?? 0) * 4 + q0 * rowBytes, qUniform, 0, mv * rowBytes);
    ctx.dispatch(
      prefillKernel(nHeads, nKvHeads, hd, M, tpr, "partial"),
      [qUniform, ...kvBind, partO, partMl],
      [nChunks, nKvHeads],
      u,
    );
    ctx.dispatch(
      prefillKernel(nHeads, nKvHeads, hd, M, tpr, "combine"),
      [partO, partMl, a.out, stats],
      [mv * nHeads],
      u,
    );
  }
  if (a.window && W > 0) {
    ctx.dispatch(
      prefillKernel(nHeads, nKvHeads, hd, M, tpr, "window"),
      [a.q, kvBind[0], stats, a.window.buffer],
      [wx, wy],
      params(0, 0, 0),
    );
  }
  for (const b of [qUniform, partO, partMl, stats]) pool.release(b);
}
