/**
 * End-to-end decode and prefill speed of one model held as bf16 (as stored), q8 and q4 weights, measured in
 * one run: the engines are loaded side by side on one GPU context and timed in alternation (round r times
 * every format before round r + 1), so that the load of a shared machine falls on all of them alike; the
 * figures are medians.
 *
 *   deno task bench:decode [--json] [--layers 4] [--steps 12] [--rounds 3] [--prefill 16,512]
 *                          [--weights stored,q8,q4] [--shape DeepSeek-R1-Distill-Qwen-1.5B | --model DIR]
 *                          [--gpu-path auto|texture|storage] [--batch 1] [--prompt 16] [--prefill-rounds 2]
 *
 * By default the R1-Distill-Qwen-1.5B layer shapes with 4 layers (374 MB of bf16 layer weights, far past a
 * 32 MiB L3) and the full 151,936-row LM head (467 MB): a random-weight checkpoint built once under
 * $LETHE_CACHE or /tmp/lethe-cache. `--json` prints an array of rows: one per format with kind "decode"
 * ({weights, decode_tok_s, weights_bytes, …}) and one per format and prompt length with kind "prefill"
 * (prefills are timed in the first `--prefill-rounds` rounds only: 512 tokens take tens of seconds here).
 */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import { GpuContext } from "../src/gpu/context.ts";
import { parseGpuPath } from "../src/gpu/device.ts";
import { parseWeightsOption, type WeightsOption } from "../src/model/model.ts";
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

/** One decode row of the JSON output. */
export interface DecodeRow {
  kind: "decode";
  /** "bf16" (or the stored dtype), "q8" or "q4". */
  weights: string;
  batch: number;
  /** Tokens in the cache when decoding starts. */
  context_tokens: number;
  decode_steps: number;
  decode_step_ms_median: number;
  decode_tok_s: number;
  /** Weight bytes one decode step reads (every matrix once, scales included; one embedding row). */
  weights_bytes: number;
  /** Weight bytes on the GPU (the embedding included). */
  weights_gpu_bytes: number;
  achieved_gbps: number;
  copy_ceiling_gbps: number;
  /** decode_tok_s over the first format's (bf16). */
  speedup: number;
  model: string;
  layers: number;
  adapter: string;
  gpu_path: "texture" | "storage";
}

/** One prefill row of the JSON output. */
export interface PrefillRow {
  kind: "prefill";
  weights: string;
  prompt_tokens: number;
  prefill_ms_median: number;
  prefill_tok_s: number;
  speedup: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      shape: { type: "string", default: "DeepSeek-R1-Distill-Qwen-1.5B" },
      layers: { type: "string", default: "4" },
      weights: { type: "string", default: "stored,q8,q4" },
      steps: { type: "string", default: "12" },
      rounds: { type: "string", default: "3" },
      "prefill-rounds": { type: "string", default: "2" },
      prompt: { type: "string", default: "16" },
      prefill: { type: "string", default: "16,512" },
      batch: { type: "string", default: "1" },
      "gpu-path": { type: "string", default: "auto" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task bench:decode [--json] [--layers 4] [--steps 12] [--rounds 3] [--prefill 16,512]\n" +
        "         [--weights stored,q8,q4] [--shape NAME | --model DIR] [--gpu-path auto|texture|storage]\n" +
        "Decode tok/s (batch 1) and prefill tok/s of one model as bf16, q8 and q4 weights, timed alternately in one run.",
    );
    return;
  }
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got "${v}"`);
    return n;
  };
  const steps = int("steps", values.steps, 1);
  const rounds = int("rounds", values.rounds, 1);
  const prefillRounds = Math.min(rounds, int("prefill-rounds", values["prefill-rounds"], 1));
  const batch = int("batch", values.batch, 1);
  const context = int("prompt", values.prompt, 1);
  const prefills = values.prefill === "" ? [] : values.prefill.split(",").map((s) => int("prefill", s, 1));
  const formats = values.weights.split(",").map((w) => parseWeightsOption(w.trim(), "--weights"));
  const gpuPath = parseGpuPath(values["gpu-path"], "--gpu-path");
  const dir = values.model ?? await checkpointFor(values.shape, int("layers", values.layers, 1));

  const ctx = await GpuContext.create({ gpuPath });
  const ceiling = await copyCeilingGbps(ctx);
  const engines: { name: string; format: WeightsOption; engine: Engine }[] = [];
  for (const format of formats) {
    const t0 = performance.now();
    const engine = await Engine.load(dir, { ctx, weights: format, progress: false });
    const name = format === "stored" ? engine.model.weights.layers[0].q.dtype : format;
    console.error(`loaded ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    engines.push({ name, format, engine });
  }
  const c = engines[0].engine.model.config;
  const vocab = c.vocabSize;
  const prompt = (n: number) => Array.from({ length: n }, (_, i) => (i * 7919 + 1) % vocab);

  // Decode: per round and format, a fresh context of `context` tokens, then `steps` timed steps (each one
  // submit and one id readback, as a generation runs them).
  const stepMs = engines.map(() => [] as number[]);
  const prefillMs = engines.map(() => prefills.map(() => [] as number[]));
  for (let r = 0; r < rounds; r++) {
    for (const [e, { engine }] of engines.entries()) {
      const seqs = Array.from(
        { length: batch },
        () => engine.newSequence({ policy: "full" }, context + steps + 1),
      );
      let ids: number[] = [];
      for (const s of seqs) {
        ids = await sampleIds(engine, engine.forward.prefill(s, prompt(context)), 1, DEFAULT_SAMPLING, 0);
      }
      ids = new Array(batch).fill(ids[0]);
      // The first step of a round is a warm-up (pipelines compile in round 0; caches settle).
      for (let s = 0; s <= steps; s++) {
        const t = performance.now();
        ids = await sampleIds(engine, engine.forward.decode(seqs, ids), batch, DEFAULT_SAMPLING, s + 1);
        if (s > 0) stepMs[e].push(performance.now() - t);
      }
      for (const s of seqs) s.kv.destroy();
      for (const [p, n] of r < prefillRounds ? prefills.entries() : []) {
        const seq = engine.newSequence({ policy: "full" }, n + 1);
        const t = performance.now();
        await sampleIds(engine, engine.forward.prefill(seq, prompt(n)), 1, DEFAULT_SAMPLING, 0);
        prefillMs[e][p].push(performance.now() - t);
        seq.kv.destroy();
      }
    }
  }

  const decode: DecodeRow[] = engines.map(({ name, engine }, e) => {
    const ms = median(stepMs[e]);
    const bytes = engine.model.decodeWeightBytes;
    return {
      kind: "decode",
      weights: name,
      batch,
      context_tokens: context,
      decode_steps: stepMs[e].length,
      decode_step_ms_median: ms,
      decode_tok_s: (batch * 1000) / ms,
      weights_bytes: bytes,
      weights_gpu_bytes: engine.model.weightBytes,
      achieved_gbps: bytes / ms / 1e6,
      copy_ceiling_gbps: ceiling,
      speedup: 0,
      model: dir,
      layers: c.numLayers,
      adapter: ctx.gpu.description,
      gpu_path: ctx.gpu.useTextures ? "texture" : "storage",
    };
  });
  for (const d of decode) d.speedup = d.decode_tok_s / decode[0].decode_tok_s;
  const prefill: PrefillRow[] = [];
  for (const [p, n] of prefills.entries()) {
    const base = n / median(prefillMs[0][p]);
    for (const [e, { name }] of engines.entries()) {
      const ms = median(prefillMs[e][p]);
      prefill.push({
        kind: "prefill",
        weights: name,
        prompt_tokens: n,
        prefill_ms_median: ms,
        prefill_tok_s: (n * 1000) / ms,
        speedup: n / ms / base,
      });
    }
  }
  for (const { engine } of engines) engine.destroy();
  ctx.destroy();
  if (values.json) {
    console.log(JSON.stringify([...decode, ...prefill]));
    return;
  }
  console.log(
    `model   ${dir} (${c.numLayers} layers, vocab ${vocab}); adapter ${decode[0].adapter}, ${
      decode[0].gpu_path
    } path; ${rounds} alternating rounds × ${steps} steps, medians`,
  );
  console.log(
    "weights  decode tok/s  ms/step  ×bf16  MB read/step  GB/s (copy ceiling " + ceiling.toFixed(2) + ")",
  );
  for (const d of decode) {
    console.log(
      `${d.weights.padEnd(8)} ${d.decode_tok_s.toFixed(2).padStart(12)} ${
        d.decode_step_ms_median.toFixed(1).padStart(8)
      } ${d.speedup.toFixed(2).padStart(6)} ${(d.weights_bytes / 1e6).toFixed(1).padStart(13)} ${
        d.achieved_gbps.toFixed(2).padStart(6)
      }`,
    );
  }
  for (const p of prefill) {
    console.log(
      `prefill ${String(p.prompt_tokens).padStart(4)} tokens, ${p.weights.padEnd(5)} ${
        p.prefill_tok_s.toFixed(1).padStart(8)
      } tok/s (${(p.prefill_ms_median / 1000).toFixed(2)} s, ×${p.speedup.toFixed(2)})`,
    );
  }
}

if (import.meta.main) await main();
