/**
 * Decode throughput against batch size on the shipped reasoner: B held-out prompts prefilled, then decoded
 * together (one `forward.decode` per step, sampling and due pruning rounds read back together), for `full`
 * `lethe` and `h2o` (a policy that evicts on the GPU every step once at its cap). Reports the mean step time (pruning rounds included), tokens/s, the gain over the first batch size
 * (batch 1 by default) of the same policy, and GPU dispatches per step — what continuous batching in the server is built on.
 *
 *   deno run -A bench/batch_scaling.ts [--model DIR] [--batches 1,4,16,32] [--steps 64] [--budget 64]
 *     [--policies full,lethe,h2o] [--json]
 */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";
import type { RunnerRow } from "../src/engine/runner.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import { POLICY_NAMES, type PolicyName } from "../src/kv/policy.ts";
import { DEFAULT_MODEL_DIR } from "../src/util/paths.ts";

/** One measured cell. */
export interface BatchCell {
  policy: string;
  batch: number;
  step_ms_mean: number;
  tok_s: number;
  /** tok/s over that of the first batch size measured (batch 1 by default), same policy, same run. */
  gain_over_first: number;
  dispatches_per_step: number;
  kv_tokens_per_layer_mean: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      batches: { type: "string", default: "1,4,16,32" },
      steps: { type: "string", default: "64" },
      budget: { type: "string", default: "64" },
      policies: { type: "string", default: "full,lethe,h2o" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "deno run -A bench/batch_scaling.ts [--model DIR] [--batches 1,4,16,32] [--steps 64] [--budget 64]",
    );
    return;
  }
  const dir = values.model ?? DEFAULT_MODEL_DIR;
  const batches = values.batches.split(",").map(Number);
  const steps = Number(values.steps), budget = Number(values.budget);
  if (batches.some((b) => !(b >= 1)) || !(steps >= 8) || !(budget >= 16)) {
    throw new Error("--batches must be positive, --steps ≥ 8, --budget ≥ 16");
  }
  const engine = await Engine.load(dir);
  const heldout = await Deno.readTextFile(`${dir}/heldout/walk.jsonl`);
  const prompts = heldout.trim().split("\n").map((l) => engine.encode(JSON.parse(l).prompt));
  const greedy = { ...DEFAULT_SAMPLING, temperature: 0 };
  const cells: BatchCell[] = [];
  const policies = values.policies.split(",") as PolicyName[];
  for (const policy of policies) {
    if (!POLICY_NAMES.includes(policy)) {
      throw new Error(`unknown policy ${policy}; one of ${POLICY_NAMES.join(", ")}`);
    }
    let base = 0;
    for (const B of batches) {
      const kv = policy === "full" ? { policy } : { policy, budget };
      // Synchronous steps through the runner (nothing recorded ahead): one readback of ids + due rounds per step.
      const runner = engine.createRunner();
      const rows: RunnerRow[] = [];
      for (let b = 0; b < B; b++) {
        const p = prompts[b % prompts.length];
        const row = {
          seq: engine.newSequence(kv, p.length + steps + 8, p.length),
          sampling: greedy,
          step: 0,
          next: 0,
        };
        row.next = (await runner.prefill(row, p)).id!;
        rows.push(row);
      }
      const seqs = rows.map((r) => r.seq);
      // Warm-up steps (pipelines, growth), then the timed ones; the greedy walk never stops early here
      // because the ids are fed back whatever they are.
      const warm = 4;
      let t0 = 0, d0 = 0, kvTokens = 0;
      for (let step = 1; step <= warm + steps; step++) {
        if (step === warm + 1) {
          await engine.ctx.sync();
          t0 = performance.now();
          d0 = engine.ctx.stats.dispatches;
        }
        const r = await runner.step(rows);
        rows.forEach((row, b) => (row.next = r.ids[b]));
        if (step > warm) kvTokens += seqs.reduce((n, s) => n + s.kv.lens()[0], 0) / B;
      }
      const ms = (performance.now() - t0) / steps;
      const tokS = (B * 1000) / ms;
      if (B === batches[0]) base = tokS;
      cells.push({
        policy,
        batch: B,
        step_ms_mean: ms,
        tok_s: tokS,
        gain_over_first: tokS / base,
        dispatches_per_step: (engine.ctx.stats.dispatches - d0) / steps,
        kv_tokens_per_layer_mean: kvTokens / steps,
      });
      for (const s of seqs) s.kv.destroy();
      runner.destroy();
      if (!values.json) {
        const c = cells[cells.length - 1];
        console.error(
          `${policy} B=${B}: ${c.step_ms_mean.toFixed(1)} ms/step, ${c.tok_s.toFixed(1)} tok/s, ` +
            `${c.dispatches_per_step.toFixed(0)} dispatches/step`,
        );
      }
    }
  }
  if (values.json) {
    console.log(
      JSON.stringify({ model: dir, adapter: engine.ctx.gpu.description, steps, budget, cells }, null, 2),
    );
    return;
  }
  console.log(`\n${dir} on ${engine.ctx.gpu.description}, ${steps} timed steps, lethe budget ${budget}\n`);
  console.log(
    `| policy | batch | ms/step | tok/s | × batch ${batches[0]} | dispatches/step | KV tokens/layer |`,
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const c of cells) {
    console.log(
      `| ${c.policy} | ${c.batch} | ${c.step_ms_mean.toFixed(1)} | ${c.tok_s.toFixed(1)} | ` +
        `${c.gain_over_first.toFixed(2)} | ${c.dispatches_per_step.toFixed(0)} | ${
          c.kv_tokens_per_layer_mean.toFixed(0)
        } |`,
    );
  }
  engine.destroy();
}

if (import.meta.main) await main();
