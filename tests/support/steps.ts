/**
 * Single-step helpers for tests and benchmarks that drive the forward pass by hand (the library decodes through
 * `DecodeRunner`): sample ids on the GPU and read them back; run a sequence's pruning round if one is due.
 */
import type { Engine } from "../../src/engine/engine.ts";
import { type PruneRound, readAndPrune } from "../../src/engine/rounds.ts";
import type { SamplingOptions } from "../../src/engine/sampler.ts";
import type { SequenceState } from "../../src/model/forward.ts";
import { sampleRows } from "../../src/ops/sample.ts";

/** Samples one id per logits row (one dispatch, `sampling` for every row, at decode step `step`); reads them back. */
export async function sampleIds(
  engine: Engine,
  logits: GPUBuffer,
  rows: number,
  sampling: SamplingOptions,
  step: number,
): Promise<number[]> {
  const ids = engine.ctx.pool.acquire(
    Math.max(4, rows * 4),
    GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  );
  sampleRows(engine.ctx, { logits, rows, vocab: engine.model.config.vocabSize }, { ...sampling, step }, ids);
  const out = [...await engine.ctx.readU32(ids, 0, rows)];
  engine.ctx.pool.release(ids);
  return out;
}

/** Runs `seq`'s pruning round after prefill or after decode step `step`, if one is due; returns it or null. */
export async function maybePrune(
  engine: Engine,
  seq: SequenceState,
  step: number,
  afterPrefill: boolean,
): Promise<PruneRound | null> {
  return (await readAndPrune(engine.ctx, [{ seq, step, afterPrefill }])).rounds[0];
}

/** Every due round of `seqs` after the same decode step, from one readback (`align`: see readAndPrune). */
export async function pruneBatch(
  engine: Engine,
  seqs: SequenceState[],
  step: number,
  align = false,
): Promise<(PruneRound | null)[]> {
  return (await readAndPrune(
    engine.ctx,
    seqs.map((seq) => ({ seq, step, afterPrefill: false })),
    undefined,
    align,
  ))
    .rounds;
}
