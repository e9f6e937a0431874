/**
 * Token selection on the GPU: argmax and temperature/top-k/top-p sampling over rows of logits. Only the
 * chosen ids (u32 per row) are written, so the host reads back `rows` u32s, never the logits. Semantics are
 * documented in src/ref/sample.ts (the CPU reference implements the same ones).
 *
 * One workgroup (256 threads) per row. `sampleRows` uses ~22 KiB of workgroup memory (a 2048-bin histogram
 * and a 1536-entry candidate buffer): above WebGPU's 16 KiB default, within the real limit of the adapters
 * we request (lavapipe 32 KiB, desktop GPUs ≥ 32 KiB).
 */
import code from "../../wgsl/sample.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";
import type { KernelSource } from "../gpu/pipelines.ts";
import type { SampleParams } from "./types.ts";

export type { SampleParams } from "./types.ts";

const ARGMAX: KernelSource = { name: "sample_argmax", code, entryPoint: "argmax" };
const SAMPLE: KernelSource = { name: "sample_topkp", code, entryPoint: "sample" };
/** Workgroup memory of the `sample` entry point (histogram, candidates, reduction scratch), rounded up. */
const SAMPLE_SHARED_BYTES = 23 * 1024;

/** Where the rows are: `rows` rows of `vocab` f32 logits, row r at element offset + r·rowStride. */
export interface LogitRows {
  logits: Binding;
  rows: number;
  vocab: number;
  /** Elements between row starts (default vocab). */
  rowStride?: number;
  /** Element offset of row 0 (default 0). */
  offset?: number;
}

function uniforms(ctx: GpuContext, l: LogitRows, s: SampleParams | null): [Uint8Array, [number, number]] {
  const [x, y] = ctx.grid(l.rows);
  const u = new ArrayBuffer(48);
  const u32 = new Uint32Array(u);
  const f32 = new Float32Array(u);
  u32[0] = l.vocab;
  u32[1] = l.rowStride ?? l.vocab;
  u32[2] = l.offset ?? 0;
  u32[3] = s?.topK ?? 0;
  f32[4] = s?.topP ?? 1;
  f32[5] = s ? 1 / s.temperature : 1;
  u32[6] = s?.seed ?? 0;
  u32[7] = s?.step ?? 0;
  u32[8] = x;
  u32[9] = l.rows;
  return [new Uint8Array(u), [x, y]];
}

/** Records ids[r] = argmax of row r (ties → lowest id). `ids` is u32 [rows]. */
export function argmaxRows(ctx: GpuContext, l: LogitRows, ids: Binding): void {
  const [u, grid] = uniforms(ctx, l, null);
  ctx.dispatch(ARGMAX, [l.logits, ids], grid, u);
}

/**
 * Records ids[r] = a draw from row r under `params` (row r feeds the hash, so rows draw independently).
 * temperature ≤ 0 falls back to argmax.
 */
export function sampleRows(ctx: GpuContext, l: LogitRows, params: SampleParams, ids: Binding): void {
  if (!(params.temperature > 0)) return argmaxRows(ctx, l, ids);
  if (ctx.gpu.limits.maxComputeWorkgroupStorageSize < SAMPLE_SHARED_BYTES) {
    throw new Error(
      `sampleRows needs ${SAMPLE_SHARED_BYTES} bytes of workgroup memory; this adapter allows ${ctx.gpu.limits.maxComputeWorkgroupStorageSize}`,
    );
  }
  const [u, grid] = uniforms(ctx, l, params);
  ctx.dispatch(SAMPLE, [l.logits, ids], grid, u);
}
