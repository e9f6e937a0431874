/**
 * The synergy evaluation: does KV pruning compound with low precision (the Lethe paper's open question)?
 * Held-out task accuracy of the bundled reasoner for weights {stored (bf16), q8, q4} × KV {f16, int8} with
 * `full`, and, with int8 KV, Lethe and the strongest baseline at the given budgets; every cell carries
 * `weights`, `kv_dtype`, its per-sample predictions, an exact McNemar test and a bootstrap interval against
 * the reference (stored weights, f16 KV, full), and its KV bytes against that reference's (full f16).
 * stories260K's mean KL (teacher-forced over the reference's greedy continuation) covers the same grid.
 *
 *   deno task eval:quant [--limit 100] [--weights stored,q8,q4] [--budgets 64,128] [--baseline streaming]
 *                        [--batch 16] [--out bench/eval/lethe-reasoner-tiny-quant] [--kl-tokens 300] [--quiet]
 *
 * Results are written after every cell; a rerun with the same samples skips the cells already there, so a
 * stopped run resumes.
 */
import "../src/io/deno_fs.ts";
import { basename, join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";
import {
  type CellResult,
  type CellSpec,
  forcedRun,
  limitPerFamily,
  parseSamples,
  runTasks,
  type TaskSample,
} from "../src/eval/harness.ts";
import { lineChart, type Series } from "../src/eval/svg.ts";
import { testText } from "../src/eval/report.ts";
import { type PairedTest, pairedTest } from "../src/eval/stats.ts";
import type { PolicyName } from "../src/kv/policy.ts";
import { bytesPerToken } from "../src/kv/cache.ts";
import type { WeightsOption } from "../src/model/model.ts";
import type { KvDtype } from "../src/ops/kv_layout.ts";

const ROOT = resolve(new URL("..", import.meta.url).pathname);
const HELP = `deno task eval:quant — KV pruning × low precision on the bundled reasoner (and stories260K's KL)

  --model DIR        reasoner with heldout/*.jsonl (default models/lethe-reasoner-tiny)
  --limit N          samples per family (default 100)
  --weights LIST     weight formats (default stored,q8,q4; stored = as the checkpoint holds them, bf16 here)
  --budgets LIST     pruned cells' tokens per layer (default 64,128)
  --baseline NAME    the strongest baseline beside Lethe (default streaming: best on walks at 64)
  --quant-budgets L  Lethe's budgets with q8/q4 weights, no baseline (default 64: the walks target; the
                     stored weights run every budget and the baseline)
  --batch N          samples decoded together (default 16)
  --max-tokens N     most tokens per sample (default 4096, capped by the context)
  --kl-model DIR     the fidelity model (default models/stories260K; "none" skips it)
  --kl-tokens N      teacher-forced tokens of the fidelity grid (default 300)
  --out DIR          output (default bench/eval/<model>-quant)
  --quiet            no progress lines
  --help`;

const { values: v } = parseArgs({
  options: {
    model: { type: "string", default: join(ROOT, "models/lethe-reasoner-tiny") },
    limit: { type: "string", default: "100" },
    weights: { type: "string", default: "stored,q8,q4" },
    budgets: { type: "string", default: "64,128" },
    baseline: { type: "string", default: "streaming" },
    "quant-budgets": { type: "string", default: "64" },
    batch: { type: "string", default: "16" },
    "max-tokens": { type: "string", default: "4096" },
    "kl-model": { type: "string", default: join(ROOT, "models/stories260K") },
    "kl-tokens": { type: "string", default: "300" },
    out: { type: "string" },
    quiet: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (v.help) {
  console.log(HELP);
  Deno.exit(0);
}

/** One cell of the synergy grid. */
export interface QuantCell {
  weights: WeightsOption;
  kv_dtype: KvDtype;
  policy: PolicyName;
  budget: number | null;
  label: string;
  n: number;
  accuracy: number;
  per_family: Record<string, { n: number; correct: number; accuracy: number }>;
  /** Mean per-sample peaks, bytes, and against the reference cell (stored weights, f16, full) on the same samples. */
  kv_bytes_live_peak: number;
  kv_bytes_peak: number;
  kv_live_vs_full_f16: number;
  kv_peak_vs_full_f16: number;
  decode_tok_s: number;
  tokens: number;
  /** This cell against the reference cell (A = this), per family and "all"; empty for the reference itself. */
  tests: Record<string, PairedTest | null>;
  predictions: [string, string | null, boolean][];
}

/** One cell of the fidelity grid (stories260K). */
export interface KlCell {
  weights: WeightsOption;
  kv_dtype: KvDtype;
  policy: PolicyName;
  budget: number | null;
  label: string;
  kl_mean: number;
  kl_max: number;
  agree_tokens: number;
  kv_live_vs_full_f16: number;
}

/** results.json. */
export interface QuantResults {
  version: 1;
  model: string;
  samples: string[];
  settings: Record<string, unknown>;
  cells: QuantCell[];
  kl: { model: string; tokens: number; cells: KlCell[] } | null;
  created: string;
  wall_s: number;
}

const list = (s: string) => s.split(",").map((x) => x.trim()).filter((x) => x !== "");
const weightsList = list(v.weights!) as WeightsOption[];
for (const w of weightsList) {
  if (!["stored", "q8", "q4"].includes(w)) throw new Error(`--weights: unknown format ${w} (stored, q8, q4)`);
}
const budgets = list(v.budgets!).map(Number);
if (budgets.some((b) => !(Number.isInteger(b) && b > 0))) {
  throw new Error(`--budgets: positive integers, got ${v.budgets}`);
}
const baseline = v.baseline as PolicyName;
const quantBudgets = list(v["quant-budgets"]!).map(Number);
const modelDir = resolve(v.model!);
const outDir = resolve(v.out ?? join(ROOT, "bench/eval", `${basename(modelDir)}-quant`));
const log = (s: string) => {
  if (!v.quiet) console.error(s);
};

/**
 * The grid for one weight format: [KV dtype, cells] groups, full first in each (it sets the length caps). The
 * stored weights run Lethe and the baseline at every budget; q8/q4 run Lethe at --quant-budgets (compute: each
 * cell is 2 × limit greedy generations).
 */
function grid(w: WeightsOption): [KvDtype, CellSpec[]][] {
  const cell = (policy: PolicyName, budget: number | null): CellSpec => ({
    policy,
    budget,
    tau: null,
    gamma: null,
    ablation: false,
  });
  const pruned = w === "stored"
    ? budgets.flatMap((b) => [cell("lethe", b), cell(baseline, b)])
    : quantBudgets.map((b) => cell("lethe", b));
  return [["f16", [cell("full", null)]], ["int8", [cell("full", null), ...pruned]]];
}
const labelOf = (w: WeightsOption, d: KvDtype, c: { policy: string; budget: number | null }) =>
  `${w}/${d}/${c.budget === null ? c.policy : `${c.policy}@${c.budget}`}`;

async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

const t0 = performance.now();
await Deno.mkdir(outDir, { recursive: true });
const resultsPath = join(outDir, "results.json");
const limit = Number(v.limit);

// Samples: the first `limit` of each held-out family (the committed files; the same for every cell).
const probe = await Engine.load(modelDir, { progress: false, weights: "stored" });
const tok = probe.tokenizer!;
const wrap = (q: string) =>
  tok.chatTemplate
    ? tok.encodeChat([{ role: "user", content: q }])
    : tok.encode(q, { addSpecialTokens: true });
let samples: TaskSample[] = [];
for await (const e of Deno.readDir(join(modelDir, "heldout"))) {
  if (!e.name.endsWith(".jsonl")) continue;
  samples.push(
    ...parseSamples(
      await Deno.readTextFile(join(modelDir, "heldout", e.name)),
      basename(e.name, ".jsonl"),
      wrap,
    ),
  );
}
samples.sort((a, b) => a.family.localeCompare(b.family));
samples = limitPerFamily(samples, limit);
const c = probe.model.config;
const shape = { layers: c.numLayers, nKvHeads: c.numKvHeads, headDim: c.headDim };
probe.destroy();

const prior = await readJson<QuantResults>(resultsPath);
const sameSamples = prior && JSON.stringify(prior.samples) === JSON.stringify(samples.map((s) => s.id));
const results: QuantResults = {
  version: 1,
  model: basename(modelDir),
  samples: samples.map((s) => s.id),
  settings: {
    limit,
    weights: weightsList,
    budgets,
    quant_budgets: quantBudgets,
    baseline,
    batch: Number(v.batch),
    max_tokens: Number(v["max-tokens"]),
    length_slack: 2,
    kv_token_layer_bytes: {
      f16: bytesPerToken({ ...shape, dtype: "f16" }),
      int8: bytesPerToken({ ...shape, dtype: "int8" }),
    },
    argv: Deno.args,
  },
  cells: sameSamples ? prior!.cells : [],
  kl: sameSamples ? prior!.kl : null,
  created: new Date().toISOString(),
  wall_s: sameSamples ? prior!.wall_s : 0,
};
if (prior && !sameSamples) log(`${relative(Deno.cwd(), resultsPath)} holds other samples: starting over`);

const REF = labelOf("stored", "f16", { policy: "full", budget: null });
const families = [...new Set(samples.map((s) => s.family))];

/** Fills in the derived fields of every cell against the reference (once it exists). */
function relate(): void {
  const ref = results.cells.find((x) => x.label === REF);
  for (const x of results.cells) {
    if (!ref) continue;
    x.kv_live_vs_full_f16 = x.kv_bytes_live_peak / ref.kv_bytes_live_peak;
    x.kv_peak_vs_full_f16 = x.kv_bytes_peak / ref.kv_bytes_peak;
    x.tests = {};
    if (x.label === REF) continue;
    for (const f of [...families, "all"]) {
      const pick = (cell: QuantCell) =>
        cell.predictions.filter((p) => f === "all" || samples.find((s) => s.id === p[0])?.family === f);
      x.tests[f] = pairedTest(pick(x), pick(ref));
    }
  }
}

async function save(): Promise<void> {
  relate();
  results.wall_s = (prior && sameSamples ? prior.wall_s : 0) + (performance.now() - t0) / 1000;
  await Deno.writeTextFile(resultsPath, JSON.stringify(results, null, 1) + "\n");
}

function toQuant(w: WeightsOption, d: KvDtype, r: CellResult): QuantCell {
  return {
    weights: w,
    kv_dtype: d,
    policy: r.policy,
    budget: r.budget,
    label: labelOf(w, d, r),
    n: r.n,
    accuracy: r.accuracy ?? 0,
    per_family: r.per_family ?? {},
    kv_bytes_live_peak: r.kv_bytes_live_peak,
    kv_bytes_peak: r.kv_bytes_peak,
    kv_live_vs_full_f16: NaN,
    kv_peak_vs_full_f16: NaN,
    decode_tok_s: r.decode_tok_s,
    tokens: r.tokens,
    tests: {},
    predictions: r.predictions ?? [],
  };
}

for (const w of weightsList) {
  const todo = grid(w).map(([d, cells]) =>
    [d, cells.filter((x) => !results.cells.some((y) => y.label === labelOf(w, d, x)))] as const
  ).filter(([, cells]) => cells.length > 0);
  if (todo.length === 0) continue;
  const engine = await Engine.load(modelDir, { progress: false, weights: w });
  for (const [d, missing] of todo) {
    // Full always runs first in a group: it sets the pruned cells' length caps (and is kept if new).
    const cells = grid(w).find(([x]) => x === d)![1];
    const run = missing.some((x) => x.policy !== "full") ? cells : missing;
    let done = 0;
    await runTasks(engine, samples, {
      kv: { dtype: d },
      cells: run,
      traceBudget: null,
      maxTokens: Number(v["max-tokens"]),
      lengthSlack: 2,
      batch: Number(v.batch),
      onProgress: () => {
        if (++done % 50 === 0) log(`  ${w}/${d}: ${done} of ${run.length * samples.length} sample runs`);
      },
      onCell: async (cs) => {
        const last = cs[cs.length - 1];
        const q = toQuant(w, d, last);
        if (!results.cells.some((y) => y.label === q.label)) results.cells.push(q);
        log(
          `${q.label}: ${(q.accuracy * 100).toFixed(1)}% (${
            families.map((f) => `${f} ${q.per_family[f]?.correct}/${q.per_family[f]?.n}`).join(", ")
          })`,
        );
        await save();
      },
    });
  }
  engine.destroy();
}

// stories260K: mean KL over the same grid, against stored weights + f16 KV + full.
if (v["kl-model"] !== "none" && !results.kl) {
  const tokens = Number(v["kl-tokens"]);
  const klCells: KlCell[] = [];
  const prompt = [1, 400, 300, 200];
  let ref: { ids: number[]; logits: Float32Array[] } | null = null;
  let refLive = 0;
  for (const w of weightsList) {
    const engine = await Engine.load(resolve(v["kl-model"]!), { progress: false, weights: w });
    if (!ref) {
      const r0 = await forcedRun(engine, prompt, tokens, { policy: "full", dtype: "f16" });
      ref = { ids: r0.ids, logits: r0.logits! };
      refLive = r0.kvLivePeak;
    }
    for (const [d, cells] of grid(w)) {
      for (const cell of cells) {
        const r = await forcedRun(engine, prompt, tokens, {
          policy: cell.policy,
          dtype: d,
          ...(cell.budget !== null ? { budget: cell.budget, window: 8 } : {}),
        }, ref);
        const label = labelOf(w, d, cell);
        klCells.push({
          weights: w,
          kv_dtype: d,
          policy: cell.policy,
          budget: cell.budget,
          label,
          kl_mean: r.klMean,
          kl_max: r.klMax,
          agree_tokens: r.agree,
          kv_live_vs_full_f16: r.kvLivePeak / refLive,
        });
        log(`stories260K ${label}: mean KL ${r.klMean.toExponential(2)}, agree ${r.agree}/${tokens}`);
      }
    }
    engine.destroy();
  }
  results.kl = { model: basename(resolve(v["kl-model"]!)), tokens, cells: klCells };
  await save();
}

await save();
const md = report(results);
await Deno.writeTextFile(join(outDir, "results.md"), md);
for (const f of families) await Deno.writeTextFile(join(outDir, `accuracy_${f}.svg`), chart(results, f));
console.log(
  `wrote ${relative(Deno.cwd(), outDir)}/{results.json,results.md,${
    families.map((f) => `accuracy_${f}.svg`).join(",")
  }}`,
);

/** The Markdown report. */
function report(r: QuantResults): string {
  const bytes = r.settings.kv_token_layer_bytes as Record<KvDtype, number>;
  const int8Share = bytes.int8 / bytes.f16;
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const lines = [
    `# Synergy: KV pruning × low precision (${r.model})`,
    "",
    `${r.samples.length} held-out samples (${
      families.map((f) => `${f} ${samples.filter((s) => s.family === f).length}`).join(", ")
    }), greedy; ` +
    `every cell against the reference **stored weights (bf16) + f16 KV + full**: accuracy difference per family ` +
    `with an exact McNemar p (discordant pairs) and a bootstrap 95% interval; KV is the mean per-sample peak of ` +
    `live bytes against the reference's (full f16), so int8 full is ~${
      int8Share.toFixed(2)
    } of it. Reproduce: \`deno task eval:quant ${(r.settings.argv as string[]).join(" ")}\`.`,
    "",
    `| weights | KV | policy | ${
      families.map((f) => `${f} | ${f} against the reference`).join(" | ")
    } | live KV vs full f16 | decode tok/s |`,
    `| --- | --- | --- | ${families.map(() => "---: | ---:").join(" | ")} | ---: | ---: |`,
  ];
  const order = (
    x: QuantCell,
  ) => [
    weightsList.indexOf(x.weights),
    x.kv_dtype === "f16" ? 0 : 1,
    x.policy === "full" ? 0 : 1,
    x.budget ?? 0,
    x.policy === "lethe" ? 0 : 1,
  ];
  const sorted = [...r.cells].sort((a, b) => {
    const x = order(a), y = order(b);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
    return 0;
  });
  for (const x of sorted) {
    const fam = families.map((f) => {
      const s = x.per_family[f];
      const t = x.tests[f];
      const delta = t ? testText(t) : "reference";
      return `${s ? `${pct(s.accuracy)} (${s.correct}/${s.n})` : "–"} | ${delta}`;
    });
    lines.push(
      `| ${x.weights} | ${x.kv_dtype} | ${x.budget === null ? x.policy : `${x.policy}@${x.budget}`} | ${
        fam.join(" | ")
      } | ${x.kv_live_vs_full_f16.toFixed(3)} | ${x.decode_tok_s.toFixed(0)} |`,
    );
  }
  if (r.kl) {
    lines.push(
      "",
      `## ${r.kl.model}: mean KL against stored weights + f16 KV + full (${r.kl.tokens} teacher-forced tokens)`,
      "",
      "| weights | KV | policy | mean KL | max KL | greedy agreement | live KV vs full f16 |",
      "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    );
    for (const k of r.kl.cells) {
      lines.push(
        `| ${k.weights} | ${k.kv_dtype} | ${k.budget === null ? k.policy : `${k.policy}@${k.budget}`} | ${
          k.kl_mean.toExponential(2)
        } | ${k.kl_max.toExponential(2)} | ${k.agree_tokens}/${r.kl.tokens} | ${
          k.kv_live_vs_full_f16.toFixed(3)
        } |`,
      );
    }
  }
  lines.push("", `Wall time ${(r.wall_s / 60).toFixed(0)} min.`, "");
  return lines.join("\n");
}

/** Accuracy against live KV (fraction of full f16, log scale) for one family: a series per weight format. */
function chart(r: QuantResults, family: string): string {
  const series: Series[] = [];
  for (const w of weightsList) {
    for (const pol of ["lethe", baseline, "full"]) {
      const pts = r.cells
        .filter((x) => x.weights === w && (x.policy === pol))
        .map((x) => [x.kv_live_vs_full_f16, (x.per_family[family]?.accuracy ?? 0) * 100] as [number, number])
        .sort((a, b) => a[0] - b[0]);
      if (pts.length) series.push({ name: `${w} ${pol}`, points: pts, dashed: pol !== "lethe" });
    }
  }
  return lineChart({
    title: `${r.model} ${family}: accuracy against live KV (weights × KV dtype × policy)`,
    xLabel: "live KV / full f16 (log2)",
    yLabel: "accuracy %",
    series,
    xLog2: true,
    yMin: 0,
    yMax: 100,
  });
}
