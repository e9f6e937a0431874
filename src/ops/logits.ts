/**
 * Per-row work around sampling (wgsl/logits.wgsl): the processed row the sampler draws from (penalties, min_p),
 * the raw row's logprobs at the sampled id and its top N, and the per-sequence token counts the penalties read.
 * One workgroup per dispatch: each row has its own counts buffer and id slot. Semantics are documented in the
 * WGSL file and implemented again in src/ref/logits.ts.
 */
import code from "../../wgsl/logits.wgsl" with { type: "text" };
import { type Binding, type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
import type { KernelSource } from "../gpu/pipelines.ts";

/**
 * What changes a row before sampling (semantics in wgsl/logits.wgsl and src/ref/logits.ts). Penalties 0 / 1 and
 * min_p 0 are off; `temperature` only scales min_p's threshold (≤ 0: greedy, min_p off).
 */
export interface LogitsProcessing {
  /** OpenAI presence penalty over generated tokens: l −= p when generated at least once. */
  presencePenalty: number;
  /** OpenAI frequency penalty over generated tokens: l −= f · times generated. */
  frequencyPenalty: number;
  /** HF/vLLM repetition penalty over prompt and generated tokens: l > 0 ? l / r : l · r. */
  repetitionPenalty: number;
  /** Keep ids with p ≥ min_p · p_max after temperature. */
  minP: number;
  temperature: number;
  /** OpenAI logit_bias: added to the logits of these ids first (the values live in a GPU buffer per sequence). */
  logitBias?: Readonly<Record<number, number>>;
}

const PROCESS: KernelSource = { name: "logits_process", code, entryPoint: "process" };
const LOGPROBS: KernelSource = { name: "logits_logprobs", code, entryPoint: "logprobs" };
const COUNT: KernelSource = { name: "logits_count", code, entryPoint: "count" };

/** Most top logprobs per token (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;

/** u32 words a logprob record takes in an id slot: the id, its logprob, then (id, logprob) × top N. */
export const LOGPROB_SLOT_WORDS = 2 + 2 * MAX_TOP_LOGPROBS;

/** A row of f32 logits: element `offset` of `buffer`, `vocab` long. */
export interface LogitsRow {
  buffer: GPUBuffer;
  offset: number;
  vocab: number;
}

const dummies = new WeakMap<GpuContext, GPUBuffer[]>();

/**
 * A small buffer bound where a kernel's unused input must still be bound; `which` tells two apart (one buffer
 * may not be bound writable and read-only in the same dispatch).
 */
function dummy(ctx: GpuContext, which: 0 | 1): GPUBuffer {
  let b = dummies.get(ctx);
  if (!b) {
    dummies.set(ctx, b = [0, 1].map((i) => ctx.createBuffer(16, `logits-dummy-${i}`, STORAGE_USAGE)));
  }
  return b[which];
}

function uniforms(
  vocab: number,
  inOff: number,
  outOff: number,
  flags: number,
  p: Partial<LogitsProcessing>,
  topN: number,
): Uint8Array {
  const u = new ArrayBuffer(48);
  const u32 = new Uint32Array(u);
  const f32 = new Float32Array(u);
  u32[0] = vocab;
  u32[1] = inOff;
  u32[2] = outOff;
  u32[3] = flags;
  f32[4] = p.presencePenalty ?? 0;
  f32[5] = p.frequencyPenalty ?? 0;
  f32[6] = p.repetitionPenalty ?? 1;
  f32[7] = (p.minP ?? 0) > 0 ? Math.log(p.minP!) : 0;
  f32[8] = (p.temperature ?? 0) > 0 ? 1 / p.temperature! : 1;
  u32[9] = topN;
  return new Uint8Array(u);
}

/** Whether `p` changes the row at all: penalties, or min_p while sampling (min_p cannot change an argmax). */
export function processes(p: Partial<LogitsProcessing>): boolean {
  return hasPenalties(p) || hasBias(p) || ((p.minP ?? 0) > 0 && (p.temperature ?? 0) > 0);
}

/** Whether `p` has a logit bias (its sequence then needs a bias buffer: {@link biasBuffer}). */
export function hasBias(p: Partial<LogitsProcessing>): boolean {
  return p.logitBias !== undefined && Object.keys(p.logitBias).length > 0;
}

/** A sequence's logit bias as the kernel reads it: f32 [vocab], zero where no bias is given. */
export function biasBuffer(
  ctx: GpuContext,
  bias: Readonly<Record<number, number>>,
  vocab: number,
): GPUBuffer {
  const b = new Float32Array(vocab);
  for (const [k, v] of Object.entries(bias)) {
    const id = Number(k);
    if (!(Number.isInteger(id) && id >= 0 && id < vocab)) {
      throw new Error(`logit bias: token id ${k} is outside [0, ${vocab})`);
    }
    b[id] = v;
  }
  return ctx.upload(b, "logit-bias");
}

/** Whether `p` applies any penalty (and so needs the sequence's token counts). */
export function hasPenalties(p: Partial<LogitsProcessing>): boolean {
  return (p.presencePenalty ?? 0) !== 0 || (p.frequencyPenalty ?? 0) !== 0 ||
    (p.repetitionPenalty ?? 1) !== 1;
}

/**
 * Records out = `src` with the logit bias (`bias`, f32 [vocab], when `p` has one), penalties (from `counts`,
 * u32 [vocab], when `p` has any) and min_p applied; `out` is a row of the same length. Buffers `p` does not
 * need may be null.
 */
export function processLogits(
  ctx: GpuContext,
  src: LogitsRow,
  out: { buffer: GPUBuffer; offset: number },
  counts: GPUBuffer | null,
  p: Partial<LogitsProcessing>,
  bias: GPUBuffer | null = null,
): void {
  const pen = hasPenalties(p);
  if (pen && !counts) throw new Error("processLogits: penalties need the sequence's token counts");
  const biased = hasBias(p);
  if (biased && !bias) throw new Error("processLogits: a logit bias needs its buffer");
  const minP = (p.minP ?? 0) > 0 && (p.temperature ?? 0) > 0;
  const flags = (pen ? 1 : 0) | (minP ? 2 : 0) | (biased ? 4 : 0);
  const u = uniforms(src.vocab, src.offset, out.offset, flags, p, 0);
  ctx.dispatch(
    PROCESS,
    [src.buffer, pen ? counts! : dummy(ctx, 0), out.buffer, biased ? bias! : dummy(ctx, 1)],
    [1],
    u,
  );
}

/**
 * Records the logprob of the id in `slot` (u32 word 0, a 256-byte-aligned range) under the raw row `src`, into
 * word 1, and the row's `topN` (≤ {@link MAX_TOP_LOGPROBS}) most likely ids and their logprobs from word 2.
 */
export function logprobsRow(ctx: GpuContext, src: LogitsRow, slot: Binding, topN: number): void {
  if (!(topN >= 0 && topN <= MAX_TOP_LOGPROBS)) {
    throw new Error(`logprobsRow: topN must be in [0, ${MAX_TOP_LOGPROBS}], got ${topN}`);
  }
  ctx.dispatch(LOGPROBS, [src.buffer, slot], [1], uniforms(src.vocab, src.offset, 0, 0, {}, topN));
}

/** Records counts[id] += 1 for the id in word 0 of `slot` (ids ≥ vocab are ignored). */
export function countToken(ctx: GpuContext, slot: Binding, counts: GPUBuffer, vocab: number): void {
  ctx.dispatch(COUNT, [slot, counts], [1], uniforms(vocab, 0, 0, 0, {}, 0));
}
