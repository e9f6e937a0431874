/**
 * KV-policy fidelity on stories260K (a trained model): greedy generation from prompt [1] for 500 tokens under
 * each policy and budget, against `full` in the same run. Reports the tokens generated before the first
 * divergence from `full`, and the peak KV bytes (allocated and live) relative to `full`.
 *
 *   deno run -A bench/policies.ts [--tokens 500] [--budgets 32,64,128] [--json] [--markdown]
 */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";
import type { GenerationResult } from "../src/engine/generate.ts";
import { POLICY_NAMES, type PolicyName } from "../src/kv/policy.ts";
import { STORIES_DIR } from "../tests/support/models.ts";

/** One cell of the table. */
export interface PolicyRow {
  policy: PolicyName;
  budget: number | null;
  agree_tokens: number;
  tokens: number;
  kv_bytes_peak: number;
  kv_peak_ratio: number;
  kv_live_peak_ratio: number;
  prune_rounds: number;
  decode_tok_s: number;
}

/** Length of the common prefix of two id lists. */
export function agreement(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      tokens: { type: "string", default: "500" },
      budgets: { type: "string", default: "32,64,128" },
      model: { type: "string" },
      prompt: { type: "string", default: "1" },
      json: { type: "boolean", default: false },
      markdown: { type: "boolean", default: false },
    },
  });
  const engine = await Engine.load(values.model ?? STORIES_DIR, { progress: false });
  const maxTokens = Number(values.tokens);
  const prompt = values.prompt.split(",").map(Number);
  const run = (policy: PolicyName, budget?: number): Promise<GenerationResult> =>
    engine.generate(prompt, { maxTokens, eos: [], kv: { policy, budget, window: 8 } });
  const full = await run("full");
  const rows: PolicyRow[] = [];
  const row = (policy: PolicyName, budget: number | null, r: GenerationResult): PolicyRow => ({
    policy,
    budget,
    agree_tokens: agreement(r.ids, full.ids),
    tokens: r.ids.length,
    kv_bytes_peak: r.stats.kv_bytes_peak,
    kv_peak_ratio: r.stats.kv_bytes_peak / full.stats.kv_bytes_peak,
    kv_live_peak_ratio: r.stats.kv_bytes_live_peak / full.stats.kv_bytes_live_peak,
    prune_rounds: r.stats.prune_rounds,
    decode_tok_s: r.stats.decode_tok_s,
  });
  rows.push(row("full", null, full));
  for (const budget of values.budgets.split(",").map(Number)) {
    for (const policy of POLICY_NAMES.filter((p) => p !== "full")) {
      rows.push(row(policy, budget, await run(policy, budget)));
      if (!values.json) {
        console.error(`  ${policy} @ ${budget}: agrees for ${rows.at(-1)!.agree_tokens} tokens`);
      }
    }
  }
  if (values.json) {
    console.log(JSON.stringify(rows));
    return;
  }
  console.log(
    `stories260K, prompt [${prompt}], ${maxTokens} greedy tokens; ratios against full in the same run`,
  );
  console.log(
    `| policy | budget/layer | tokens before first divergence | peak KV allocated vs full | peak KV live vs full | rounds |`,
  );
  console.log(`| --- | ---: | ---: | ---: | ---: | ---: |`);
  for (const r of rows) {
    console.log(
      `| ${r.policy} | ${r.budget ?? "—"} | ${r.agree_tokens} / ${r.tokens} | ${
        r.kv_peak_ratio.toFixed(3)
      } | ${r.kv_live_peak_ratio.toFixed(3)} | ${r.prune_rounds} |`,
    );
  }
}

if (import.meta.main) await main();
