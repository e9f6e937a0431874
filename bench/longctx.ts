/**
 * Decode speed at long contexts, `full` against `lethe` at a 10% budget, in one run on one adapter, plus the
 * cost of Lethe's own work (scoring in the attention pass + pruning rounds) as a fraction of its step time.
 *
 * For each context length the prompt is prefilled once (chunked, with Lethe's observation-window scores), then
 * forked on the GPU into three sequences decoded for the same number of steps:
 *   full    — the whole context, no scores;
 *   lethe   — compressed to the budget after prefill, decayed scores every step, pruning rounds;
 *   frozen  — the same compressed cache, decoded without scores or rounds (the baseline for the overhead).
 *
 *   deno run -A bench/longctx.ts [--model DIR | --shape NAME --layers 2] [--contexts 1024,4096,8192]
 *                                [--steps 16] [--budget-ratio 0.1] [--fill random|prefill] [--json]
 *
 * `--fill prefill` runs a real (chunked) prefill of the context; the default fills the cache with random K/V rows
 * and scores, which costs the decode step the same and takes seconds instead of many minutes on a CPU adapter.
 */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import { maybePrune, sampleIds } from "../tests/support/steps.ts";
import type { SequenceState } from "../src/model/forward.ts";
import { checkpointFor } from "./decode.ts";
import { median } from "./roofline.ts";

/** One context length's measurements. */
export interface LongCtxRow {
  context: number;
  budget: number;
  full_tok_s: number;
  lethe_tok_s: number;
  speedup: number;
  full_kv_bytes: number;
  lethe_kv_bytes_peak: number;
  kv_ratio: number;
  lethe_step_ms: number;
  frozen_step_ms: number;
  round_ms_per_step: number;
  overhead_fraction: number;
  rounds: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      shape: { type: "string", default: "DeepSeek-R1-Distill-Qwen-1.5B" },
      layers: { type: "string", default: "2" },
      contexts: { type: "string", default: "1024,4096,8192" },
      steps: { type: "string", default: "16" },
      "budget-ratio": { type: "string", default: "0.1" },
      fill: { type: "string", default: "random" },
      json: { type: "boolean", default: false },
    },
  });
  const dir = values.model ?? await checkpointFor(values.shape, Number(values.layers));
  const engine = await Engine.load(dir);
  const c = engine.model.config;
  const steps = Number(values.steps);
  const rows: LongCtxRow[] = [];
  for (const context of values.contexts.split(",").map(Number)) {
    const budget = Math.max(16, Math.round(context * Number(values["budget-ratio"])));
    const kv = { policy: "lethe" as const, budget };
    const prompt = Array.from({ length: context }, (_, i) => (i * 7919 + 13) % c.vocabSize);
    const lethe = engine.newSequence(kv, context + steps);
    let first = 1;
    if (values.fill === "prefill") {
      console.error(`context ${context}: prefilling …`);
      const logits = engine.forward.prefill(lethe, prompt);
      [first] = await sampleIds(engine, logits, 1, DEFAULT_SAMPLING, 0);
    } else {
      // Random K/V rows and positive scores: the decode step costs the same as after a real prefill, at a
      // fraction of the set-up time on a CPU adapter (pruning decisions then follow random scores).
      console.error(`context ${context}: filling the cache with random K/V …`);
      const row = c.numKvHeads * c.headDim;
      const rnd = (n: number, scale: number, offset = 0) =>
        Float32Array.from({ length: n }, (_, i) => offset + scale * Math.sin(i * 12.9898 + context) * 0.5);
      const k = engine.ctx.upload(rnd(context * row, 1), "fill-k");
      const v = engine.ctx.upload(rnd(context * row, 1, 0.1), "fill-v");
      for (let l = 0; l < c.numLayers; l++) {
        lethe.kv.append(l, k, v, 0, context, 0);
        const score = lethe.kv.layers[l].score;
        engine.ctx.write(score.buffer, rnd(context, 1, 0.6).map(Math.abs), score.offset);
      }
      lethe.pos = context;
      engine.ctx.destroyLater(k);
      engine.ctx.destroyLater(v);
    }
    const full: SequenceState = {
      kv: lethe.kv.clone(),
      policy: engine.newSequence({ policy: "full" }, 16).policy,
      pos: lethe.pos,
    };
    await maybePrune(engine, lethe, 0, true);
    lethe.kv.peakLive = lethe.kv.liveBytes(); // measure the decode-time peak, after the prompt is compressed
    const frozenPolicy = { ...lethe.policy, decodeGamma: null, wantsRound: () => false };
    const frozen: SequenceState = { kv: lethe.kv.clone(), policy: frozenPolicy, pos: lethe.pos };
    await engine.ctx.sync();

    // The three sequences take turns step by step, so load from other processes falls on all of them alike.
    const runs = [
      { seq: full, prune: false, stepMs: [] as number[], roundMs: 0, rounds: 0, id: first },
      { seq: lethe, prune: true, stepMs: [] as number[], roundMs: 0, rounds: 0, id: first },
      { seq: frozen, prune: false, stepMs: [] as number[], roundMs: 0, rounds: 0, id: first },
    ];
    for (let s = 1; s <= steps; s++) {
      for (const r of runs) {
        const t = performance.now();
        [r.id] = await sampleIds(engine, engine.forward.decode([r.seq], [r.id]), 1, DEFAULT_SAMPLING, s);
        r.stepMs.push(performance.now() - t);
        if (r.prune) {
          const r0 = performance.now();
          if (await maybePrune(engine, r.seq, s, false)) r.rounds++;
          r.roundMs += performance.now() - r0;
        }
      }
    }
    const [f, l, z] = runs.map((r) => ({
      ms: median(r.stepMs),
      roundMs: r.roundMs / steps,
      rounds: r.rounds,
    }));
    const letheMs = l.ms + l.roundMs;
    rows.push({
      context,
      budget,
      full_tok_s: 1000 / f.ms,
      lethe_tok_s: 1000 / letheMs,
      speedup: f.ms / letheMs,
      full_kv_bytes: full.kv.liveBytes(),
      lethe_kv_bytes_peak: lethe.kv.peakLive,
      kv_ratio: lethe.kv.peakLive / full.kv.liveBytes(),
      lethe_step_ms: letheMs,
      frozen_step_ms: z.ms,
      round_ms_per_step: l.roundMs,
      overhead_fraction: Math.max(0, letheMs - z.ms) / letheMs,
      rounds: l.rounds,
    });
    for (const s of [full, lethe, frozen]) s.kv.destroy();
  }
  if (values.json) {
    console.log(
      JSON.stringify({ model: dir, adapter: engine.ctx.gpu.description, layers: c.numLayers, rows }),
    );
    return;
  }
  console.log(
    `${dir} (${c.numLayers} layers) on ${engine.ctx.gpu.description}; ${steps} decode steps, medians`,
  );
  console.log(
    `| context | lethe budget | full tok/s | lethe tok/s | speed-up | lethe KV vs full | scoring+pruning overhead | rounds |`,
  );
  console.log(`| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |`);
  for (const r of rows) {
    console.log(
      `| ${r.context} | ${r.budget} | ${r.full_tok_s.toFixed(2)} | ${r.lethe_tok_s.toFixed(2)} | ${
        r.speedup.toFixed(2)
      }× | ${r.kv_ratio.toFixed(3)} | ${(100 * r.overhead_fraction).toFixed(1)}% | ${r.rounds} |`,
    );
  }
}

if (import.meta.main) await main();
