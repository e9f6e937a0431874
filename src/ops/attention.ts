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
function decodeKernel(nHeads: number, G: number, hd: number, entryPoint: string): KernelSource {
  const key = `${nHeads}/${G}/${hd}/${entryPoint}`;
  let k = decodeKernels.get(key);
  if (!k) {
    const header =
      `const G: u32 = ${G}u;\nconst HD4: u32 = ${hd / 4}u;\nconst CH: u32 = ${DECODE_CHUNK}u;\n` +
      `const WG: u32 = ${DECODE_WG}u;\nconst NQ4: u32 = ${nHeads * hd / 4}u;\n`;
    k = {
      name: `attention_decode_${entryPoint}_h${nHeads}_g${G}_d${hd}`,
      code: header + decodeCode,
      entryPoint,
    };
    decodeKernels.set(key, k);
  }
  return k;
}

const prefillKernels = new Map<string, KernelSource>();
function prefillKernel(nHeads: number, G: number, hd: number, M: number, entryPoint: string): KernelSource {
  const key = `${nHeads}/${G}/${hd}/${M}/${entryPoint}`;
  let k = prefillKernels.get(key);
  if (!k) {
    const header = `const G: u32 = ${G}u;\nconst HD4: u32 = ${hd / 4}u;\nconst M: u32 = ${M}u;\n` +
      `const NH: u32 = ${nHeads}u;\nconst CH: u32 = ${PREFILL_CH}u;\nconst WG: u32 = ${PREFILL_WG}u;\n`;
    k = {
      name: `attention_prefill_${entryPoint}_h${nHeads}_g${G}_d${hd}_m${M}`,
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
  const G = checkShape(a);
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
  ctx.dispatch(
    decodeKernel(nHeads, G, hd, "partial"),
    [qUniform, a.k, a.v, partO, partMl, weights],
    [nChunks, nKvHeads],
    uniforms,
  );
  ctx.dispatch(decodeKernel(nHeads, G, hd, "combine"), [partO, partMl, a.out, factor], [nHeads], uniforms);
  if (a.scores) {
    ctx.dispatch(
      decodeKernel(nHeads, G, hd, "scores"),
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
  const G = checkShape(a);
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
  const qSrc = a.q instanceof GPUBuffer
    ? { buffer: a.q, offset: 0 }
    : { buffer: a.q.buffer, offset: a.q.offset ?? 0 };
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
      prefillKernel(nHeads, G, hd, M, "partial"),
      [qUniform, a.k, a.v, partO, partMl],
      [nChunks, nKvHeads],
      u,
    );
    ctx.dispatch(prefillKernel(nHeads, G, hd, M, "combine"), [partO, partMl, a.out, stats], [mv * nHeads], u);
  }
  if (a.window && W > 0) {
    ctx.dispatch(
      prefillKernel(nHeads, G, hd, M, "window"),
      [a.q, a.k, stats, a.window.buffer],
      [wx, wy],
      params(0, 0, 0),
    );
  }
  for (const b of [qUniform, partO, partMl, stats]) pool.release(b);
}
