/**
 * Attention on the GPU: decode (one query token, split-K "flash decoding" with per-token KV-policy scores)
 * and causal prefill (blocked multi-query split-K, optional observation-window scores).
 *
 * KV layout (the KV-cache contract): for one sequence and one layer, K and V are token-major
 * [capacity, nKvHeads, headDim] (K after RoPE), stored as f32, f16 pairs or int8 with per-head scales
 * (src/ops/kv_layout.ts; the kernels decode through the kload/vload accessors this file generates); `len`
 * slots are valid, in slot order (positions do not matter: RoPE is applied). Queries and outputs are f32 [nHeads, headDim] per token; query head h reads KV
 * head floor(h / (nHeads / nKvHeads)); scale 1/√headDim.
 *
 * Both ops copy their queries into a uniform buffer (CPU adapters broadcast uniform loads but gather per
 * lane from storage memory), so the query buffer needs COPY_SRC usage (STORAGE_USAGE has it). A batch of
 * decoding sequences is one call (see {@link attentionDecodeBatch}); all calls batch into one submit.
 */
import decodeCode from "../../wgsl/attention_decode.wgsl" with { type: "text" };
import prefillCode from "../../wgsl/attention_prefill.wgsl" with { type: "text" };
import { type Binding, type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
import type { KernelSource } from "../gpu/pipelines.ts";
import { batchesBy } from "../util/group.ts";
import { type KvDtype, type KvLayout, kvLayout } from "./kv_layout.ts";
import type { AttentionShape } from "./types.ts";

export type { AttentionShape } from "./types.ts";

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

/** Arguments of {@link attentionPrefill}. */
export interface PrefillArgs extends AttentionShape {
  /** f32 [T, nHeads, headDim] at element `qOffset` (a multiple of 4). */
  q: Binding;
  qOffset?: number;
  /** [capacity, nKvHeads, headDim] in `kvDtype`, already holding start + T slots (past cache and this chunk). */
  k: Binding;
  v: Binding;
  /** How K and V are stored (default f32). */
  kvDtype?: KvDtype;
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
  /** Read K/V through texture copies (see {@link DecodeBatchArgs.texture}). Default: on CPU adapters only. */
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
  layout: KvLayout,
  tpr: number,
  entryPoint: string,
): KernelSource {
  const { nKvHeads: nKv, headDim: hd, dtype } = layout;
  const key = `${nHeads}/${nKv}/${hd}/${dtype}/${tpr}/${entryPoint}`;
  let k = decodeKernels.get(key);
  if (!k) {
    const bmax = decodeBatchMax(nHeads * hd);
    const G = nHeads / nKv;
    const HD4 = hd / 4;
    let header = `const G: u32 = ${G}u;\nconst HD4: u32 = ${HD4}u;\nconst CH: u32 = ${DECODE_CHUNK}u;\n` +
      `const WG: u32 = ${DECODE_WG}u;\nconst NQ4: u32 = ${nHeads * HD4}u;\nconst BMAX: u32 = ${bmax}u;\n`;
    header += kvAccessors(layout, tpr);
    k = {
      name: `attention_decode_${entryPoint}_h${nHeads}_kv${nKv}_d${hd}_${dtype}${
        tpr > 0 ? `_tex${tpr}` : ""
      }`,
      code: header + decodeCode,
      entryPoint,
    };
    decodeKernels.set(key, k);
  }
  return k;
}

/**
 * The per-context K/V texture pairs of the CPU-adapter path, one per width (grown on demand, shared by all
 * layers). Texels are rgba32uint: 16 raw bytes of stored rows, whatever the KV dtype, decoded by kload/vload.
 */
interface KvTextures {
  k: GPUTexture;
  v: GPUTexture;
  kView: GPUTextureView;
  vView: GPUTextureView;
}
const kvTextures = new WeakMap<GpuContext, Map<number, KvTextures>>();

function decodeTextures(ctx: GpuContext, width: number, height: number): KvTextures {
  let byWidth = kvTextures.get(ctx);
  if (!byWidth) kvTextures.set(ctx, byWidth = new Map());
  const cur = byWidth.get(width);
  if (cur && cur.k.height >= height) return cur;
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
      format: "rgba32uint",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
    });
  const k = make("attn-k-texture"), v = make("attn-v-texture");
  const t = { k, v, kView: k.createView(), vView: v.createView() };
  byWidth.set(width, t);
  return t;
}

/**
 * Tokens per texture row for the texture path, or 0 when it cannot be used: rows of whole tokens whose byte
 * length is a multiple of 256 (a copy requirement), within the texture size limit; a stored row must be whole
 * 16-byte texels.
 */
function texTokensPerRow(ctx: GpuContext, layout: KvLayout, len: number): number {
  const maxDim = ctx.device.limits.maxTextureDimension2D;
  if (layout.words % 4 !== 0) return 0;
  const texels = layout.words / 4;
  let f = 1;
  while (f * 2 * texels <= maxDim) f *= 2;
  if ((f * texels * 16) % 256 !== 0 || Math.ceil(len / f) > maxDim) return 0;
  return f;
}

function bufferOf(b: Binding): { buffer: GPUBuffer; offset: number } {
  return b instanceof GPUBuffer ? { buffer: b, offset: 0 } : { buffer: b.buffer, offset: b.offset ?? 0 };
}

/**
 * WGSL for bindings 2 and 3 (K, V) and their accessors, decoding the stored format. The kernels read K and V in
 * units of QPT quads (4 values each) — one 16-byte fetch where the format allows (f32: 4 values, f16: 8, int8:
 * 16), fewer bytes only where a head is too small — so a packed format takes fewer fetches, not the same number
 * of half-used ones: `kunit`/`vunit(token, kv head, unit) -> array<vec4f, QPT>` for units 0..HU−1 of the head
 * (HU = HD4 / QPT), and `kscale`/`vscale(token, kv head) -> f32`, the factor of that token and head's values
 * (int8's scale, read once per token; 1 otherwise). From storage buffers, or (tpr > 0) rgba32uint textures with
 * `tpr` tokens per row.
 */
function kvAccessors(layout: KvLayout, tpr: number): string {
  const { headDim, words: W, dtype } = layout;
  const HD4 = headDim / 4;
  const { unitWords, qpt } = kvUnit(layout);
  const headWords = HD4 * (unitWords / qpt);
  const elem = unitWords === 4 ? "vec4u" : unitWords === 2 ? "vec2u" : "u32";
  let code = `const QPT: u32 = ${qpt}u;\nconst HU: u32 = ${HD4 / qpt}u;\n`;
  code += tpr > 0
    ? `@group(0) @binding(2) var kt: texture_2d<u32>;\n@group(0) @binding(3) var vt: texture_2d<u32>;\n`
    : `@group(0) @binding(2) var<storage, read> k: array<${elem}>;\n@group(0) @binding(3) var<storage, read> v: array<${elem}>;\n`;
  for (const x of ["k", "v"] as const) {
    // The unit's raw words, and word j of a token's row (scales).
    if (tpr > 0) {
      code += `fn ${x}tex(tok: u32, t: u32) -> vec4u {
  return textureLoad(${x}t, vec2u((tok % ${tpr}u) * ${W / 4}u + t, tok / ${tpr}u), 0);
}
fn ${x}raw(tok: u32, kh: u32, u: u32) -> ${elem} {
  let wo = kh * ${headWords}u + u * ${unitWords}u;
  let t = ${x}tex(tok, wo / 4u);
  return ${unitWords === 4 ? "t" : unitWords === 2 ? "select(t.zw, t.xy, (wo & 2u) == 0u)" : "t[wo % 4u]"};
}
fn ${x}word(tok: u32, j: u32) -> u32 { return ${x}tex(tok, j / 4u)[j % 4u]; }
`;
    } else {
      const word = unitWords === 1
        ? `${x}[tok * ${W}u + j]`
        : `${x}[tok * ${W / unitWords}u + j / ${unitWords}u][j % ${unitWords}u]`;
      code += `fn ${x}raw(tok: u32, kh: u32, u: u32) -> ${elem} { return ${x}[tok * ${
        W / unitWords
      }u + kh * ${headWords / unitWords}u + u]; }
fn ${x}word(tok: u32, j: u32) -> u32 { return ${word}; }
`;
    }
    const quads = dtype === "f32"
      ? ["bitcast<vec4f>(r)"]
      : dtype === "f16"
      ? (unitWords === 4 ? ["r.xy", "r.zw"] : ["r"]).map((w) =>
        `vec4f(unpack2x16float(${w}.x), unpack2x16float(${w}.y))`
      )
      : (unitWords === 4 ? ["r.x", "r.y", "r.z", "r.w"] : unitWords === 2 ? ["r.x", "r.y"] : ["r"]).map((w) =>
        `unpack4x8snorm(${w})`
      );
    code += `fn ${x}unit(tok: u32, kh: u32, u: u32) -> array<vec4f, QPT> {
  let r = ${x}raw(tok, kh, u);
  return array<vec4f, QPT>(${quads.join(", ")});
}
`;
    code += dtype === "int8"
      ? `fn ${x}scale(tok: u32, kh: u32) -> f32 { return bitcast<f32>(${x}word(tok, ${
        layout.values / 4
      }u + kh)); }\n`
      : `fn ${x}scale(tok: u32, kh: u32) -> f32 { return 1.0; }\n`;
  }
  return code;
}

/**
 * The read unit of a stored format: the largest of 4, 2 or 1 words that holds whole quads and tiles both a
 * head and a row, and the quads it holds.
 */
function kvUnit(layout: KvLayout): { unitWords: number; qpt: number } {
  const wpq = layout.dtype === "f32" ? 4 : layout.dtype === "f16" ? 2 : 1;
  const headWords = (layout.headDim / 4) * wpq;
  const unitWords = [4, 2, 1].find((u) => u % wpq === 0 && headWords % u === 0 && layout.words % u === 0)!;
  return { unitWords, qpt: unitWords / wpq };
}

/**
 * Binds K/V for `n` tokens: on the texture path (default on CPU adapters) records copies of them into the
 * context's texture pair and returns its views with the tokens per texture row; else the buffers and 0.
 */
function stageKv(
  ctx: GpuContext,
  k: Binding,
  v: Binding,
  layout: KvLayout,
  n: number,
  texture: boolean | undefined,
): { bind: (Binding | GPUTextureView)[]; tpr: number } {
  const kSrc = bufferOf(k), vSrc = bufferOf(v);
  const tpr = (texture ?? ctx.gpu.useTextures) && kSrc.offset % 16 === 0 && vSrc.offset % 16 === 0
    ? texTokensPerRow(ctx, layout, n)
    : 0;
  if (tpr === 0) return { bind: [k, v], tpr };
  const seg = { k: kSrc.buffer, v: vSrc.buffer, kStart: kSrc.offset, vStart: vSrc.offset, tokens: n };
  return { bind: stageSegments(ctx, [seg], layout, tpr, []), tpr };
}

const prefillKernels = new Map<string, KernelSource>();
function prefillKernel(
  nHeads: number,
  layout: KvLayout,
  M: number,
  tpr: number,
  entryPoint: string,
): KernelSource {
  const { nKvHeads: nKv, headDim: hd, dtype } = layout;
  const G = nHeads / nKv;
  const key = `${nHeads}/${nKv}/${hd}/${dtype}/${M}/${tpr}/${entryPoint}`;
  let k = prefillKernels.get(key);
  if (!k) {
    const header = `const G: u32 = ${G}u;\nconst HD4: u32 = ${hd / 4}u;\nconst M: u32 = ${M}u;\n` +
      `const NH: u32 = ${nHeads}u;\nconst CH: u32 = ${PREFILL_CH}u;\nconst WG: u32 = ${PREFILL_WG}u;\n` +
      kvAccessors(layout, tpr);
    k = {
      name: `attention_prefill_${entryPoint}_h${nHeads}_kv${nKv}_d${hd}_${dtype}_m${M}${
        tpr > 0 ? `_tex${tpr}` : ""
      }`,
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
 * Sequences one decode-attention call can take: their queries share one uniform binding (64 KiB), and the
 * table of per-sequence offsets is sized for the same count.
 */
export function decodeBatchMax(qFloats: number): number {
  return Math.max(1, Math.min(64, Math.floor(65536 / (qFloats * 4))));
}

/** One sequence of {@link attentionDecodeBatch}: its K/V, valid slots and optional scores. */
export interface DecodeSequence {
  /** [capacity, nKvHeads, headDim] stored as `dtype`, the first `len` slots valid. */
  k: Binding;
  v: Binding;
  /** How K and V are stored (default f32). */
  dtype?: KvDtype;
  /** Valid slots, ≥ 1. */
  len: number;
  /** score[j] = Σ_h softmax(q_h·K/√d)[j] for j < len. */
  scores?: ScoreTarget;
}

/** Arguments of {@link attentionDecodeBatch}. */
export interface DecodeBatchArgs extends AttentionShape {
  /** f32 [B, nHeads, headDim] from element `qOffset` (a multiple of 4): sequence b's query is row b. */
  q: Binding;
  qOffset?: number;
  /** f32 [B, nHeads, headDim] written from element `outOffset` (a multiple of 4). */
  out: Binding;
  outOffset?: number;
  seqs: DecodeSequence[];
  /**
   * Read K/V through texture copies (made by copyBufferToTexture each call): several times faster on CPU
   * adapters, pure overhead on GPUs. Default: on CPU (fallback) adapters only. Without the texture path,
   * sequences take one dispatch pair per run of consecutive sequences whose K/V are regions of the same
   * buffers.
   */
  texture?: boolean;
}

/**
 * Records decode attention for a batch of sequences, each with its own K/V and length: `partial` (chunks ×
 * KV heads × sequences workgroups) and `combine` (heads × sequences) once per run of sequences, then the
 * per-token scores, one `scores` dispatch per score buffer. Sequences whose K/V are regions of one buffer (the
 * KV arena) share one binding; on the texture path (CPU adapters) each such buffer's used extent is staged
 * into the context's texture pair once, so the batch costs two dispatches and two copies per buffer and not
 * per sequence — on lavapipe a dispatch costs ~0.13 ms and a copy ~0.07 ms whatever their size, which made
 * per-sequence work most of a batched decode step. Scratch comes from the context's pool.
 */
export function attentionDecodeBatch(ctx: GpuContext, a: DecodeBatchArgs): void {
  checkShape(a);
  const { nHeads, nKvHeads, headDim: hd } = a;
  const qRow = nHeads * hd;
  const qOff = a.qOffset ?? 0, outOff = a.outOffset ?? 0;
  checkOffset("qOffset", qOff);
  checkOffset("outOffset", outOff);
  for (const s of a.seqs) {
    if (!(s.len >= 1)) throw new Error(`decode attention needs len ≥ 1, got ${s.len}`);
  }
  const bmax = decodeBatchMax(qRow);
  const staged = (a.texture ?? ctx.gpu.useTextures) &&
    a.seqs.every((s) => bufferOf(s.k).offset % 16 === 0 && bufferOf(s.v).offset % 16 === 0);
  // Tokens per texture row for each storage format of the batch (0: the buffer path).
  const tprOf = new Map<KvDtype, number>();
  for (const dtype of new Set(a.seqs.map((s) => s.dtype ?? "f32"))) {
    const layout = kvLayout(dtype, nKvHeads, hd);
    const of = a.seqs.filter((s) => (s.dtype ?? "f32") === dtype);
    const longest = Math.max(...segmentsOf(of, layout.words * 4).segments.map((g) => g.tokens));
    tprOf.set(dtype, staged ? texTokensPerRow(ctx, layout, longest) : 0);
  }
  // Runs of consecutive sequences (their queries and outputs are consecutive rows) of one storage format: up
  // to bmax, and on the buffer path only sequences whose K/V share one binding.
  let b0 = 0;
  while (b0 < a.seqs.length) {
    const dtype = a.seqs[b0].dtype ?? "f32";
    const tpr = tprOf.get(dtype)!;
    let b1 = b0 + 1;
    while (
      b1 < a.seqs.length && b1 - b0 < bmax && (a.seqs[b1].dtype ?? "f32") === dtype &&
      (tpr > 0 || sameSegment(a.seqs[b0], a.seqs[b1]))
    ) b1++;
    const layout = kvLayout(dtype, nKvHeads, hd);
    decodeRun(ctx, a, layout, a.seqs.slice(b0, b1), qOff + b0 * qRow, outOff + b0 * qRow, tpr);
    b0 = b1;
  }
}

/** A stretch of one K buffer (and its V buffer) holding some sequences' tokens, bound or staged as one. */
interface Segment {
  k: GPUBuffer;
  v: GPUBuffer;
  /** Byte offsets of the first token in K and V. */
  kStart: number;
  vStart: number;
  /** Tokens from the first sequence's first token to the end of the last one's valid tokens. */
  tokens: number;
}

function sameSegment(x: DecodeSequence, y: DecodeSequence): boolean {
  const xk = bufferOf(x.k), xv = bufferOf(x.v), yk = bufferOf(y.k), yv = bufferOf(y.v);
  return xk.buffer === yk.buffer && xv.buffer === yv.buffer &&
    xk.offset - xv.offset === yk.offset - yv.offset;
}

/** Groups sequences by shared K/V buffers; `of[i]` is sequence i's segment and first token in it. */
function segmentsOf(
  seqs: DecodeSequence[],
  rowBytes: number,
): { segments: Segment[]; of: { seg: number; tok: number }[] } {
  const segments: Segment[] = [];
  const members: number[][] = [];
  seqs.forEach((s, i) => {
    let g = segments.findIndex((_, j) => sameSegment(seqs[members[j][0]], s));
    if (g < 0) {
      const k = bufferOf(s.k), v = bufferOf(s.v);
      segments.push({ k: k.buffer, v: v.buffer, kStart: k.offset, vStart: v.offset, tokens: 0 });
      members.push([]);
      g = segments.length - 1;
    }
    members[g].push(i);
    segments[g].kStart = Math.min(segments[g].kStart, bufferOf(s.k).offset);
    segments[g].vStart = Math.min(segments[g].vStart, bufferOf(s.v).offset);
  });
  const of = seqs.map(() => ({ seg: 0, tok: 0 }));
  segments.forEach((g, j) => {
    for (const i of members[j]) {
      const tok = (bufferOf(seqs[i].k).offset - g.kStart) / rowBytes;
      if (!Number.isInteger(tok)) {
        throw new Error("decode attention: K offsets of one buffer must be whole rows apart");
      }
      of[i] = { seg: j, tok };
      g.tokens = Math.max(g.tokens, tok + seqs[i].len);
    }
  });
  return { segments, of };
}

/** One run of sequences (≤ decodeBatchMax; on the buffer path all in one segment). */
function decodeRun(
  ctx: GpuContext,
  a: DecodeBatchArgs,
  layout: KvLayout,
  seqs: DecodeSequence[],
  qOff: number,
  outOff: number,
  tpr: number,
): void {
  const { nHeads, nKvHeads, headDim: hd } = a;
  const rowBytes = layout.words * 4;
  const { segments, of } = segmentsOf(seqs, rowBytes);
  // First token of each segment in what is bound: texture rows staged one segment after another, or the
  // buffer bound from the segment's start.
  const segTok0: number[] = [];
  let kv: (Binding | GPUTextureView)[];
  if (tpr > 0) {
    const rows = segments.reduce((n, g) => n + Math.ceil(g.tokens / tpr), 0);
    if (rows > ctx.device.limits.maxTextureDimension2D && seqs.length > 1) {
      // More staged rows than a texture holds: split the run.
      const half = Math.ceil(seqs.length / 2);
      const qRow = nHeads * hd;
      decodeRun(ctx, a, layout, seqs.slice(0, half), qOff, outOff, tpr);
      decodeRun(ctx, a, layout, seqs.slice(half), qOff + half * qRow, outOff + half * qRow, tpr);
      return;
    }
    kv = stageSegments(ctx, segments, layout, tpr, segTok0);
  } else {
    const g = segments[0];
    kv = [
      { buffer: g.k, offset: g.kStart, size: g.tokens * rowBytes },
      { buffer: g.v, offset: g.vStart, size: g.tokens * rowBytes },
    ];
    segTok0.push(0);
  }
  const B = seqs.length;
  const bmax = decodeBatchMax(nHeads * hd);
  // Uniforms: 16 bytes of parameters, then the per-sequence table (len, first token in K/V, first chunk row,
  // first weight) — in the dispatch's own uniforms, so each call keeps its table within a shared submit.
  const u = new ArrayBuffer(16 + bmax * 16);
  const u32 = new Uint32Array(u);
  const f32 = new Float32Array(u);
  const table = new Uint32Array(u, 16);
  let chunkRows = 0, w = 0;
  const at: { chunk0: number; w0: number; nChunks: number }[] = [];
  seqs.forEach((s, b) => {
    const nChunks = Math.ceil(s.len / DECODE_CHUNK);
    table.set([s.len, segTok0[of[b].seg] + of[b].tok, chunkRows, s.scores ? w : 0xffffffff], b * 4);
    at.push({ chunk0: chunkRows, w0: w, nChunks });
    chunkRows += nHeads * nChunks;
    w += s.scores ? Math.ceil((nHeads * s.len) / 64) * 64 : 0;
  });
  const maxChunks = Math.max(...at.map((x) => x.nChunks));
  const wantScores = seqs.some((s) => s.scores !== undefined);
  u32.set([outOff / 4, wantScores ? 1 : 0]);
  f32[2] = 1 / Math.sqrt(hd);
  const uniforms = new Uint8Array(u);

  const pool = ctx.pool;
  const partO = pool.acquire(chunkRows * hd * 4, STORAGE_USAGE, "attn-part-o");
  const partMl = pool.acquire(chunkRows * 8, STORAGE_USAGE, "attn-part-ml");
  const weights = pool.acquire(Math.max(4, w * 4), STORAGE_USAGE, "attn-weights");
  const factor = pool.acquire(wantScores ? chunkRows * 4 : 4, STORAGE_USAGE, "attn-factor");
  // The queries go to a uniform buffer (see wgsl/attention_decode.wgsl for why).
  const qBytes = nHeads * hd * 4;
  const qUniform = pool.acquire(
    bmax * qBytes,
    GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    "attn-q-uniform",
  );
  const qSrc = bufferOf(a.q);
  ctx.copy(qSrc.buffer, qSrc.offset + qOff * 4, qUniform, 0, B * qBytes);
  ctx.dispatch(
    decodeKernel(nHeads, layout, tpr, "partial"),
    [qUniform, ...kv, partO, partMl, weights],
    [maxChunks, nKvHeads, B],
    uniforms,
  );
  ctx.dispatch(
    decodeKernel(nHeads, kvLayout("f32", nKvHeads, hd), 0, "combine"),
    [partO, partMl, a.out, factor],
    [nHeads, B],
    uniforms,
  );
  // Scores: one dispatch per score buffer, a table row pair per sequence.
  const scored = seqs.map((_, b) => b).filter((b) => seqs[b].scores);
  for (const list of batchesBy(scored, (b) => bufferOf(seqs[b].scores!.buffer).buffer)) {
    const buffer = bufferOf(seqs[list[0]].scores!.buffer).buffer;
    const su = new ArrayBuffer(16 + bmax * 32);
    const su32 = new Uint32Array(su);
    const sf32 = new Float32Array(su);
    const [sx, sy] = ctx.grid(Math.ceil(Math.max(...list.map((b) => seqs[b].len)) / 256));
    su32.set([sx * 256, nHeads]);
    list.forEach((b, i) => {
      const t = seqs[b].scores!;
      const off = bufferOf(t.buffer).offset / 4 + (t.offset ?? 0);
      su32.set(
        [seqs[b].len, at[b].nChunks, at[b].w0, at[b].chunk0, off, t.gamma === undefined ? 0 : 1],
        4 + i * 8,
      );
      sf32[4 + i * 8 + 6] = t.gamma ?? 0;
    });
    ctx.dispatch(
      decodeKernel(nHeads, kvLayout("f32", nKvHeads, hd), 0, "scores"),
      [weights, factor, buffer],
      [sx, sy, list.length],
      new Uint8Array(su),
    );
  }
  // Safe to recycle now: later users of these buffers are recorded (and so run) after this work.
  for (const b of [qUniform, partO, partMl, weights, factor]) pool.release(b);
}

/**
 * Stages each segment's K/V into the context's texture pair, each from a fresh row; `tok0` receives each
 * segment's first token in the textures. Returns the views.
 */
function stageSegments(
  ctx: GpuContext,
  segments: Segment[],
  layout: KvLayout,
  tpr: number,
  tok0: number[],
): GPUTextureView[] {
  const tokTexels = layout.words / 4;
  const rowTexels = tpr * tokTexels;
  const bytesPerRow = rowTexels * 16;
  const rows = segments.reduce((n, g) => n + Math.ceil(g.tokens / tpr), 0);
  const tex = decodeTextures(ctx, rowTexels, rows);
  let row0 = 0;
  for (const g of segments) {
    tok0.push(row0 * tpr);
    const full = Math.floor(g.tokens / tpr), tail = g.tokens % tpr;
    for (const [buf, start, dst] of [[g.k, g.kStart, tex.k], [g.v, g.vStart, tex.v]] as const) {
      if (full > 0) ctx.copyToTexture(buf, start, bytesPerRow, dst, [0, row0], [rowTexels, full]);
      if (tail > 0) {
        ctx.copyToTexture(buf, start + full * bytesPerRow, bytesPerRow, dst, [0, row0 + full], [
          tail * tokTexels,
          1,
        ]);
      }
    }
    row0 += Math.ceil(g.tokens / tpr);
  }
  return [tex.kView, tex.vView];
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
  const layout = kvLayout(a.kvDtype ?? "f32", nKvHeads, hd);
  const { bind: kvBind, tpr } = stageKv(ctx, a.k, a.v, layout, n, a.texture);
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
      prefillKernel(nHeads, layout, M, tpr, "partial"),
      [qUniform, ...kvBind, partO, partMl],
      [nChunks, nKvHeads],
      u,
    );
    ctx.dispatch(
      prefillKernel(nHeads, kvLayout("f32", nKvHeads, hd), M, 0, "combine"),
      [partO, partMl, a.out, stats],
      [mv * nHeads],
      u,
    );
  }
  if (a.window && W > 0) {
    ctx.dispatch(
      prefillKernel(nHeads, layout, M, tpr, "window"),
      [a.q, kvBind[0], stats, a.window.buffer],
      [wx, wy],
      params(0, 0, 0),
    );
  }
  for (const b of [qUniform, partO, partMl, stats]) pool.release(b);
}
