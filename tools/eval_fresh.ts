/**
 * `deno task eval:fresh` — the headline evaluation: every KV policy on the reasoner's fresh held-out samples
 * (`bench/data/reasoner-fresh/`, drawn by `tools/train/tasks.py --fresh-seed` with a seed never used while
 * settings were chosen), one `tools/eval.ts` run per family into `bench/eval/<model>-fresh-<family>/`.
 * Each run resumes where an interrupted one stopped (`eval --resume`), so the hours this takes on a CPU adapter
 * can be spread over several sittings.
 */
import { parseArgs } from "node:util";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/**
 * Budgets (tokens per layer) per family: 64, where a policy's live KV is ≤ 10% of full's on the walks and
 * programs (~900–1050-token sequences). The sums' ~240-token sequences reach 10% only near 24 tokens per
 * layer, less than a sink plus their ~30-token scratchpad line, where no policy can work: they run at 64
 * (~27% of full's live KV), the budget of the earlier sum evaluations.
 */
export const FRESH_BUDGETS: Readonly<Record<string, readonly number[]>> = {
  walk: [64],
  prog: [64],
  sum: [64],
};

/**
 * SnapKV is left out: it prunes only the prompt and keeps every decoded token, so its live KV is never at a
 * budget's memory and the report never counts it as a peer.
 */
export const FRESH_POLICIES = "full,lethe,rkv,streaming,h2o,pyramidkv";

const HELP = `deno task eval:fresh — every KV policy on the reasoner's fresh held-out samples

  deno task eval:fresh [--families prog,walk,sum] [--batch N] [--limit N] [--model DIR] [--data-dir DIR]

One tools/eval.ts run per family (data DIR/<family>.jsonl, output bench/eval/<model>-fresh-<family>/), each
resuming an interrupted run of the same settings. Budgets: ${
  Object.entries(FRESH_BUDGETS).map(([f, b]) => `${f} ${b.join(",")}`).join("; ")
}; policies ${FRESH_POLICIES}.

  --families a,b   which families, in this order (default prog,walk,sum)
  --batch N        samples decoded together (default 100)
  --limit N        first N samples per family (default all: 200)
  --model DIR      model directory (default models/lethe-reasoner-tiny)
  --data-dir DIR   fresh sets (default bench/data/reasoner-fresh)
`;

async function main(): Promise<void> {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      families: { type: "string", default: "prog,walk,sum" },
      batch: { type: "string", default: "100" },
      limit: { type: "string" },
      model: { type: "string", default: join(ROOT, "models/lethe-reasoner-tiny") },
      "data-dir": { type: "string", default: join(ROOT, "bench/data/reasoner-fresh") },
      help: { type: "boolean", default: false },
    },
  });
  if (v.help) {
    console.log(HELP);
    return;
  }
  const model = resolve(v.model);
  for (const family of v.families.split(",").map((f) => f.trim()).filter(Boolean)) {
    const budgets = FRESH_BUDGETS[family];
    if (!budgets) {
      throw new Error(`--families: no budgets for ${family} (known: ${Object.keys(FRESH_BUDGETS)})`);
    }
    const data = join(resolve(v["data-dir"]), `${family}.jsonl`);
    const out = join(ROOT, "bench/eval", `${basename(model)}-fresh-${family}`);
    const args = [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      join(ROOT, "tools/eval.ts"),
      "--model",
      model,
      "--data",
      data,
      "--policies",
      FRESH_POLICIES,
      "--budgets",
      budgets.join(","),
      "--no-ablation",
      "--batch",
      v.batch,
      "--out",
      out,
      "--resume",
      ...(v.limit ? ["--limit", v.limit] : []),
    ];
    console.error(`eval:fresh: ${family} → ${out}`);
    const { code } = await new Deno.Command(Deno.execPath(), { args, stdout: "inherit", stderr: "inherit" })
      .output();
    if (code !== 0) throw new Error(`eval of ${family} exited with ${code}`);
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`eval:fresh: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
