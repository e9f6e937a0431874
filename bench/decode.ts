/**
 * End-to-end decode and prefill speed of a model, with the bytes each decode step reads and the ratio of the
 * achieved bandwidth to the same adapter's copy bandwidth measured in the same run.
 *
 *   deno run -A bench/decode.ts --model DIR [--prompt 512] [--steps 16] [--batch 1] [--json]
 *   deno run -A bench/decode.ts --shape DeepSeek-R1-Distill-Qwen-1.5B [--layers 28]   (builds a random checkpoint
 *                                                                            once, under $LETHE_CACHE or /tmp)
 */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import { sampleIds } from "../tests/support/steps.ts";
import { makeCheckpoint } from "../tools/make_checkpoint.ts";
import { copyCeilingGbps, median } from "./roofline.ts";

/** A shape-faithful checkpoint directory, built once and cached. */
export async function checkpointFor(shape: string, layers?: number): Promise<string> {
  const root = Deno.env.get("LETHE_CACHE") ?? `${Deno.env.get("TMPDIR") ?? "/tmp"}/lethe-cache`;
  const dir = `${root}/${shape.replace(/[^A-Za-z0-9.-]/g, "_")}-L${layers ?? "all"}`;
  try {
    await Deno.stat(`${dir}/config.json`);
    return dir;
  } catch {
    console.error(`building ${shape} (${layers ?? "all"} layers) in ${dir} …`);
    await makeCheckpoint({ shape, out: dir, layers, log: (l) => console.error(l) });
    return dir;
  }
}

/** What one run measured. */
export interface DecodeBench {
  model: string;
  adapter: string;
  batch: number;
  prompt_tokens: number;
  prefill_tok_s: number;
  decode_steps: number;
  decode_step_ms_median: number;
  decode_tok_s: number;
  weight_bytes_per_step: number;
  kv_bytes_per_step: number;
  achieved_gbps: number;
  copy_ceiling_gbps: number;
  ratio: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      shape: { type: "string" },
      layers: { type: "string" },
      prompt: { type: "string", default: "512" },
      steps: { type: "string", default: "16" },
      batch: { type: "string", default: "1" },
      json: { type: "boolean", default: false },
    },
  });
  const dir = values.model ??
    await checkpointFor(
      values.shape ?? "DeepSeek-R1-Distill-Qwen-1.5B",
      values.layers ? Number(values.layers) : undefined,
    );
  const promptLen = Number(values.prompt);
  const steps = Number(values.steps);
  const batch = Number(values.batch);
  const engine = await Engine.load(dir);
  const ctx = engine.ctx;
  const c = engine.model.config;
  const ceiling = await copyCeilingGbps(ctx);

  // Prefill: one sequence, `promptLen` tokens (token ids cycle through the vocabulary).
  const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919 + 1) % c.vocabSize);
  const seqs = Array.from(
    { length: batch },
    () => engine.newSequence({ policy: "full" }, promptLen + steps + 1),
  );
  const t0 = performance.now();
  let ids = await sampleIds(engine, engine.forward.prefill(seqs[0], prompt), 1, DEFAULT_SAMPLING, 0);
  const prefillS = (performance.now() - t0) / 1000;
  for (let b = 1; b < batch; b++) engine.forward.prefill(seqs[b], prompt);
  await ctx.sync();
  ids = new Array(batch).fill(ids[0]);

  // Decode: each step is a submit plus one id readback per sequence, timed end to end.
  const stepMs: number[] = [];
  for (let s = 1; s <= steps; s++) {
    const t = performance.now();
    ids = await sampleIds(engine, engine.forward.decode(seqs, ids), batch, DEFAULT_SAMPLING, s);
    stepMs.push(performance.now() - t);
  }
  const ms = median(stepMs);
  const ctxLen = promptLen + steps / 2;
  const kvBytes = batch * ctxLen * c.numLayers * 2 * c.numKvHeads * c.headDim * 4; // K and V rows read
  const weightBytes = engine.model.decodeWeightBytes;
  const achieved = (weightBytes + kvBytes) / ms / 1e6;
  const result: DecodeBench = {
    model: dir,
    adapter: ctx.gpu.description,
    batch,
    prompt_tokens: promptLen,
    prefill_tok_s: promptLen / prefillS,
    decode_steps: steps,
    decode_step_ms_median: ms,
    decode_tok_s: (batch * 1000) / ms,
    weight_bytes_per_step: weightBytes,
    kv_bytes_per_step: kvBytes,
    achieved_gbps: achieved,
    copy_ceiling_gbps: ceiling,
    ratio: achieved / ceiling,
  };
  for (const s of seqs) s.kv.destroy();
  if (values.json) console.log(JSON.stringify(result));
  else {
    console.log(
      `model            ${dir} (${c.numLayers} layers, ${(weightBytes / 1e9).toFixed(2)} GB read per step)`,
    );
    console.log(`adapter          ${result.adapter}`);
    console.log(`prefill          ${promptLen} tokens at ${result.prefill_tok_s.toFixed(2)} tok/s`);
    console.log(
      `decode           batch ${batch}: ${ms.toFixed(1)} ms/step median → ${
        result.decode_tok_s.toFixed(2)
      } tok/s`,
    );
    console.log(
      `bytes per step   ${(weightBytes / 1e6).toFixed(1)} MB weights + ${(kvBytes / 1e6).toFixed(1)} MB KV`,
    );
    console.log(
      `bandwidth        ${achieved.toFixed(2)} GB/s of a ${ceiling.toFixed(2)} GB/s copy ceiling → ratio ${
        result.ratio.toFixed(3)
      }`,
    );
  }
}

if (import.meta.main) await main();
