/**
 * `deno task eval`: KV policies × budgets (plus Lethe's τ × γ ablation) on a model — task accuracy on its
 * held-out sets or a MATH-500 / GSM8K / AIME file, or fidelity to `full` for models without either.
 * `deno task results`: regenerates bench/RESULTS.md's evaluation section from bench/eval/*\/results.json.
 */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Engine } from "../src/engine/engine.ts";
import type { KvSettings } from "../src/kv/options.ts";
import { DEFAULT_KV_OPTIONS, POLICY_NAMES, type PolicyName } from "../src/kv/policy.ts";
import {
  type CellResult,
  defaultBudgets,
  emptyTrace,
  type EvalResults,
  limitPerFamily,
  parseSamples,
  planCells,
  runFidelity,
  runTasks,
  type TaskSample,
} from "../src/eval/harness.ts";
import {
  HEADLINE_BEGIN_MARKER,
  HEADLINE_END_MARKER,
  headlineTable,
  renderReport,
  replaceMarkedSection,
  resultsSection,
  writeReport,
} from "../src/eval/report.ts";
import { CountProgress, formatDuration } from "../src/util/progress.ts";
import { DEFAULT_MODEL_DIR, exists } from "../src/util/paths.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const HELP = `deno task eval — compare KV policies on accuracy, memory and speed

  deno task eval [--model DIR] [options]
  deno task results [--eval-dir bench/eval] [--results-file bench/RESULTS.md] [--readme README.md]
                         (also rewrites each directory's results.md and charts from its results.json, and
                         the README's headline table between its headline markers from the evaluations on
                         bench/data/reasoner-fresh/)
  deno task eval render OUT_DIR...   (rewrite results.md and the charts from OUT_DIR/results.json)

What runs (--mode, default chosen from the model and data):
  tasks     greedy generation and answer matching: DIR/heldout/*.jsonl (prompt, answer, family: exact match
            of the text after </think>), or --data FILE (MATH-500 / AIME: \\boxed{…}; GSM8K: ####)
  fidelity  full's greedy continuation of --prompt-ids, then every policy teacher-forced over it: tokens
            before the first divergence, mean KL(full ‖ policy)
  Default: tasks when --data is given or DIR/heldout/ exists; fidelity for a model without a tokenizer;
  else tasks on ../shared/data/math500.jsonl when present.

Options:
  --model DIR            model directory (default models/lethe-reasoner-tiny)
  --data FILE[,FILE]     JSONL task file(s); "math500", "gsm8k", "aime24" name ../shared/data/<name>.jsonl
  --limit N              first N samples per family (tasks)
  --offset N             skip each family's first N samples (a split to choose settings on; default 0)
  --families a,b         only these families (tasks)
  --policies a,b         default: ${POLICY_NAMES.join(",")}
  --budgets a,b          tokens per layer (default: powers of 2 from 16 below the typical sequence length)
  --taus a,b             Lethe τ ablation (default 1.5,2,2.5); --gammas a,b: γ (default 0.8,0.9,0.95)
  --ablation-budgets a,b budgets of the τ × γ grid (default: all); --no-ablation skips it
  --tokens N             fidelity: tokens to generate (default 500, capped by the context)
  --prompt-ids a,b       fidelity: prompt ids (default: the BOS id)
  --max-tokens N         tasks: most tokens per sample (default 4096, capped by the context)
  --length-slack X       tasks: non-full cells stop at X × full's length + 32 (default 2; 0 = off)
  --batch N              tasks: decode N samples of a cell together (faster on CPU adapters; tok/s is then
                         the batch's aggregate throughput); default 1 = one Engine.generate per sample
  --sink N --recent-ratio X --window N --segments N --interval N   KV settings (default: the model's
                         kv_defaults.json, else the README's)
  --rkv-lambda X --rkv-threshold X   R-KV's λ and near-duplicate cosine (default: the model's, else ${DEFAULT_KV_OPTIONS.rkvLambda}/${DEFAULT_KV_OPTIONS.rkvThreshold})
  --tau X --gamma X      Lethe's main-grid τ/γ (default: the model's, else ${DEFAULT_KV_OPTIONS.lethe.tau}/${DEFAULT_KV_OPTIONS.lethe.gamma})
  --lethe-adaptive-recent F   Lethe's adaptive recent window, 0 = off (default: the model's, else 0)
  --trace-budget N       budget whose runs record KV-over-steps and Lethe rounds (default: middle budget)
  --out DIR              output directory (default bench/eval/<model-name>[-<data>]/)
  --resume               tasks: continue an interrupted run in --out (its partial results.json): cells already
                         there for the same samples and settings are kept, not run again
  --add-to DIR           add this run's cells (all but full) to DIR/results.json and rewrite its report, when
                         this run's full reproduces DIR's per-sample predictions (same samples and engine)
  --kv-dtype D           KV storage format of every cell (default: the engine's)
  --quiet                no progress bar
  --help
`;

function list(s: string | undefined): string[] | undefined {
  return s === undefined ? undefined : s.split(",").map((x) => x.trim()).filter((x) => x !== "");
}

function numbers(s: string | undefined, what: string): number[] | undefined {
  const l = list(s);
  if (!l) return undefined;
  return l.map((x) => {
    const v = Number(x);
    if (!Number.isFinite(v)) throw new Error(`--${what}: not a number: ${x}`);
    return v;
  });
}

/** `deno task results`. */
async function results(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      "eval-dir": { type: "string", default: join(ROOT, "bench/eval") },
      "results-file": { type: "string", default: join(ROOT, "bench/RESULTS.md") },
      readme: { type: "string", default: join(ROOT, "README.md") },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const evalDir = resolve(values["eval-dir"]);
  const file = resolve(values["results-file"]);
  const entries: { dir: string; results: EvalResults }[] = [];
  const dirs: string[] = [];
  try {
    for await (const e of Deno.readDir(evalDir)) if (e.isDirectory) dirs.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  for (const d of dirs.sort()) {
    const path = join(evalDir, d, "results.json");
    if (!(await exists(path))) continue;
    const r = JSON.parse(await Deno.readTextFile(path)) as EvalResults;
    // Other tools' results (their own schema and report) may share the directory: left to them.
    if (r.kind !== "tasks" && r.kind !== "fidelity") {
      console.log(`${path}: not written by deno task eval (no "kind"), skipped`);
      continue;
    }
    // Each directory's own report and charts too, from its results.json (which stays as it is).
    await renderReport(r, join(evalDir, d));
    entries.push({ dir: relative(dirname(file), join(evalDir, d)), results: r });
  }
  // Reasoning tasks first (the headline), then fidelity.
  entries.sort((a, b) => (a.results.kind === b.results.kind ? 0 : a.results.kind === "tasks" ? -1 : 1));
  // A new file gets a title; an existing one keeps every byte outside the markers.
  let doc = "# Lethe results\n";
  try {
    doc = await Deno.readTextFile(file);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  await Deno.writeTextFile(file, replaceMarkedSection(doc, resultsSection(entries)));
  console.log(`${file}: evaluation section from ${entries.length} result set(s)`);
  // The README's headline table, from the evaluations on fresh samples, where the README carries its markers.
  const headline = headlineTable(entries);
  const readme = resolve(values.readme);
  if (headline && await exists(readme)) {
    const text = await Deno.readTextFile(readme);
    if (text.includes(HEADLINE_BEGIN_MARKER)) {
      await Deno.writeTextFile(
        readme,
        replaceMarkedSection(text, headline, HEADLINE_BEGIN_MARKER, HEADLINE_END_MARKER),
      );
      // The README is checked by `deno fmt`: its formatter aligns the new table, so `deno task check` stays clean.
      const fmt = await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", readme], cwd: ROOT })
        .output();
      if (fmt.code !== 0) console.error(`${readme}: deno fmt failed; run it before deno task check`);
      console.log(`${readme}: headline table from the fresh-sample evaluations`);
    }
  }
}

/** The quick form of an evaluation, suggested before a long run. */
export const QUICK_EVAL_FLAGS = "--policies full,lethe --budgets 64 --no-ablation";

/**
 * The line printed before a run: how many cells, an estimate when one is known, and the quick form when the
 * run is long and the flags that shorten it were not given.
 */
export function planHint(
  cells: number,
  unitsPerCell: number,
  unit: string,
  estimateS: number | null,
  given: { policies: boolean; budgets: boolean; noAblation: boolean },
): string {
  const est = estimateS === null ? "" : `, about ${formatDuration(estimateS)}`;
  let line = `eval: ${cells} cells × ${unitsPerCell} ${unit}${est}`;
  const long = cells > 8 || (estimateS !== null && estimateS > 120);
  if (long && !(given.policies && given.budgets && given.noAblation)) {
    line += `; for a quick look: ${QUICK_EVAL_FLAGS}`;
  }
  return line;
}

async function main(): Promise<void> {
  if (Deno.args[0] === "results") return await results(Deno.args.slice(1));
  if (Deno.args[0] === "render") {
    // Rewrites results.md and the charts of existing output directories from their results.json.
    for (const dir of Deno.args.slice(1)) {
      const r = JSON.parse(await Deno.readTextFile(join(dir, "results.json"))) as EvalResults;
      console.log(`wrote ${(await writeReport(r, dir)).join(", ")}`);
    }
    return;
  }
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      mode: { type: "string" },
      data: { type: "string" },
      limit: { type: "string" },
      offset: { type: "string" },
      families: { type: "string" },
      policies: { type: "string" },
      budgets: { type: "string" },
      taus: { type: "string", default: "1.5,2,2.5" },
      gammas: { type: "string", default: "0.8,0.9,0.95" },
      "ablation-budgets": { type: "string" },
      "no-ablation": { type: "boolean", default: false },
      tokens: { type: "string", default: "500" },
      "prompt-ids": { type: "string" },
      "max-tokens": { type: "string", default: "4096" },
      "length-slack": { type: "string", default: "2" },
      batch: { type: "string", default: "1" },
      sink: { type: "string" },
      "recent-ratio": { type: "string" },
      window: { type: "string" },
      segments: { type: "string" },
      interval: { type: "string" },
      "lethe-adaptive-recent": { type: "string" },
      "rkv-lambda": { type: "string" },
      "kv-dtype": { type: "string" },
      "add-to": { type: "string" },
      resume: { type: "boolean", default: false },
      "rkv-threshold": { type: "string" },
      tau: { type: "string" },
      gamma: { type: "string" },
      "trace-budget": { type: "string" },
      out: { type: "string" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (v.help) {
    console.log(HELP);
    return;
  }
  const started = performance.now();
  const modelDir = resolve(v.model ?? DEFAULT_MODEL_DIR);
  const sharedData = resolve(ROOT, "../shared/data");
  const dataFiles = list(v.data)?.map((d) =>
    /^[a-z0-9_]+$/i.test(d) && !d.endsWith(".jsonl")
      ? join(sharedData, d === "gsm8k" ? "gsm8k_test.jsonl" : `${d}.jsonl`)
      : resolve(d)
  );
  const heldoutDir = join(modelDir, "heldout");
  const hasTokenizer = await exists(join(modelDir, "tokenizer.json"));
  let mode = v.mode;
  let files: string[] = [];
  if (!mode) {
    if (dataFiles) mode = "tasks";
    else if (await exists(heldoutDir)) mode = "tasks";
    else if (!hasTokenizer) mode = "fidelity";
    else if (await exists(join(sharedData, "math500.jsonl"))) mode = "tasks";
    else mode = "fidelity";
  }
  if (mode !== "tasks" && mode !== "fidelity") {
    throw new Error(`--mode must be tasks or fidelity, got ${mode}`);
  }
  if (mode === "tasks") {
    if (dataFiles) files = dataFiles;
    else if (await exists(heldoutDir)) {
      // With --families, only their held-out files (so the report names what was evaluated).
      const only = list(v.families);
      for await (const e of Deno.readDir(heldoutDir)) {
        if (e.name.endsWith(".jsonl") && (!only || only.includes(basename(e.name, ".jsonl")))) {
          files.push(join(heldoutDir, e.name));
        }
      }
      files.sort();
    } else files = [join(sharedData, "math500.jsonl")];
  }

  const policies = (list(v.policies) ?? [...POLICY_NAMES]) as PolicyName[];
  for (const p of policies) if (!POLICY_NAMES.includes(p)) throw new Error(`unknown policy ${p}`);
  if (!policies.includes("full")) policies.unshift("full");
  const engine = await Engine.load(modelDir, { progress: !v.quiet });
  // Settings not given here come from the model's kv_defaults.json, else the documented defaults.
  const d = engine.kvDefaults;
  const int = (s: string | undefined) => (s === undefined ? undefined : Number(s));
  const lethe = {
    ...d.lethe,
    ...(v.segments ? { segments: Number(v.segments) } : {}),
    ...(v.interval ? { interval: Number(v.interval) } : {}),
    ...(v["lethe-adaptive-recent"] ? { adaptiveRecent: Number(v["lethe-adaptive-recent"]) } : {}),
  };
  const kvBase: KvSettings = {
    sink: int(v.sink) ?? d.sink,
    recentRatio: int(v["recent-ratio"]) ?? d.recentRatio,
    window: int(v.window) ?? (mode === "fidelity" ? 8 : d.window),
    lethe,
    rkvLambda: int(v["rkv-lambda"]) ?? d.rkvLambda,
    rkvThreshold: int(v["rkv-threshold"]) ?? d.rkvThreshold,
    ...(v["kv-dtype"] !== undefined ? { dtype: v["kv-dtype"] as KvSettings["dtype"] } : {}),
  };
  const tau = int(v.tau) ?? lethe.tau;
  const gamma = int(v.gamma) ?? lethe.gamma;
  const taus = v["no-ablation"] ? [tau] : numbers(v.taus, "taus")!;
  const gammas = v["no-ablation"] ? [gamma] : numbers(v.gammas, "gammas")!;
  const plan = (budgets: number[]) =>
    planCells({
      policies,
      budgets,
      taus,
      gammas,
      tau,
      gamma,
      ablationBudgets: numbers(v["ablation-budgets"], "ablation-budgets") ?? budgets,
    });
  const traceBudgetOf = (budgets: number[]) =>
    v["trace-budget"] ? Number(v["trace-budget"]) : budgets[Math.floor((budgets.length - 1) / 2)] ?? null;

  const model = basename(modelDir);
  const dataTag = mode === "tasks" && dataFiles
    ? `-${dataFiles.map((f) => basename(f, ".jsonl")).join("+")}`
    : "";
  const outDir = resolve(v.out ?? join(ROOT, "bench/eval", `${model}${dataTag}`));
  const created = new Date().toISOString();
  let budgets = numbers(v.budgets, "budgets") ?? [];
  const given = { policies: !!v.policies, budgets: !!v.budgets, noAblation: !!v["no-ablation"] };
  const settings: Record<string, unknown> = {
    policies,
    taus,
    gammas,
    tau,
    gamma,
    kv: kvBase,
    argv: Deno.args,
  };
  let bar: CountProgress | null = null;
  const snapshot = (cells: CellResult[], trace: EvalResults["trace"], partial: boolean): EvalResults => ({
    version: 1,
    kind: mode as "tasks" | "fidelity",
    model,
    model_dir: relative(ROOT, modelDir) || modelDir,
    data: mode === "tasks" ? files.map((f) => relative(ROOT, f)) : null,
    created,
    settings,
    budgets,
    cells,
    trace,
    partial,
    wall_s: (performance.now() - started) / 1000,
  });
  let last: EvalResults | null = null;
  const onCell = async (cells: CellResult[], trace: EvalResults["trace"]) => {
    last = snapshot(cells, trace, true);
    // An --add-to run writes only the merged results at the end: snapshots in the default directory would
    // leave (or overwrite) a results set of their own there.
    if (v["add-to"]) return;
    await Deno.mkdir(outDir, { recursive: true });
    await Deno.writeTextFile(join(outDir, "results.json"), JSON.stringify(last, null, 1) + "\n");
  };

  if (mode === "fidelity") {
    const c = engine.model.config;
    const prompt = numbers(v["prompt-ids"], "prompt-ids") ?? [c.bosTokenId ?? 1];
    const tokens = Math.min(Number(v.tokens), c.maxPositionEmbeddings - prompt.length);
    if (!budgets.length) budgets = defaultBudgets(prompt.length + tokens);
    settings.tokens = tokens;
    settings.prompt = prompt;
    const cells = plan(budgets);
    if (!v.quiet) console.error(planHint(cells.length, tokens, "tokens", null, given));
    bar = new CountProgress(`eval ${model}`, cells.length * tokens, !v.quiet);
    const r = await runFidelity(engine, prompt, tokens, {
      kv: kvBase,
      cells,
      traceBudget: traceBudgetOf(budgets),
      onCell,
      onProgress: (d) => bar!.advance(1, d),
    });
    last = snapshot(r.cells, r.trace, false);
  } else {
    if (!hasTokenizer) throw new Error(`model ${modelDir} has no tokenizer.json: task evaluation needs one`);
    const tok = engine.tokenizer!;
    const wrap = (q: string) =>
      tok.chatTemplate
        ? tok.encodeChat([{ role: "user", content: q }])
        : tok.encode(q, { addSpecialTokens: true });
    let samples: TaskSample[] = [];
    for (const f of files) {
      samples.push(...parseSamples(await Deno.readTextFile(f), basename(f, ".jsonl"), wrap));
    }
    const fams = list(v.families);
    if (fams) samples = samples.filter((s) => fams.includes(s.family));
    const offset = Number(v.offset ?? 0);
    if (!Number.isInteger(offset) || offset < 0) {
      throw new Error(`--offset must be an integer ≥ 0, got ${v.offset}`);
    }
    if (v.limit || offset > 0) samples = limitPerFamily(samples, Number(v.limit ?? Infinity), offset);
    if (!samples.length) throw new Error("no samples to evaluate");
    settings.samples = samples.length;
    settings.offset = offset;
    settings.max_tokens = Number(v["max-tokens"]);
    settings.length_slack = Number(v["length-slack"]);
    settings.batch = Number(v.batch);
    const fixed = budgets.length > 0;
    const cells = fixed ? plan(budgets) : plan([]).slice(0, 1);
    if (!v.quiet && fixed) console.error(planHint(cells.length, samples.length, "samples", null, given));
    const started = performance.now();
    bar = new CountProgress(`eval ${model}`, cells.length * samples.length, !v.quiet);
    let traceBudget = fixed ? traceBudgetOf(budgets) : null;
    const opts = {
      kv: kvBase,
      cells,
      get traceBudget() {
        return traceBudget;
      },
      maxTokens: Number(v["max-tokens"]),
      lengthSlack: Number(v["length-slack"]),
      batch: Number(v.batch),
      onCell,
      onProgress: (d: string) => bar!.advance(1, d),
      afterFull: fixed ? undefined : (mean: number) => {
        budgets = defaultBudgets(mean);
        traceBudget = traceBudgetOf(budgets);
        const rest = plan(budgets).slice(1);
        bar!.setTotal((rest.length + 1) * samples.length);
        if (!v.quiet) {
          // The rest cost about what full did, each: a rough estimate, said before the long part.
          const fullS = (performance.now() - started) / 1000;
          const hint = planHint(rest.length + 1, samples.length, "samples", fullS * rest.length, given);
          const nl = Deno.stderr.isTerminal() ? "\n" : ""; // the bar is mid-line on a terminal
          console.error(`${nl}${hint} (full took ${formatDuration(fullS)})`);
        }
        return rest;
      },
    };
    const resume = v.resume ? await resumeFrom(outDir, snapshot([], emptyTrace(null, ""), true)) : undefined;
    if (resume && !v.quiet) {
      console.error(`eval: resuming ${relative(Deno.cwd(), outDir)}: ${resume.cells.length} cells done`);
    }
    const r = await runTasks(engine, samples, { ...opts, resume });
    r.trace.budget = traceBudget;
    last = snapshot(r.cells, r.trace, false);
  }
  bar?.finish();
  if (v["add-to"]) {
    const into = resolve(v["add-to"]);
    const merged = addCells(JSON.parse(await Deno.readTextFile(join(into, "results.json"))), last!, into);
    console.log(`wrote ${(await writeReport(merged, into)).map((f) => relative(Deno.cwd(), f)).join(", ")}`);
    engine.destroy();
    return;
  }
  const written = await writeReport(last!, outDir);
  console.log(`wrote ${written.map((f) => relative(Deno.cwd(), f)).join(", ")}`);
  engine.destroy();
}

/**
 * `--resume`: the cells of DIR/results.json, when it was written by a run of this one's model, data, samples
 * and settings (the fields compared are named in the error); none when there is no results.json yet.
 */
export async function resumeFrom(
  dir: string,
  now: EvalResults,
): Promise<{ cells: CellResult[]; trace: EvalResults["trace"] } | undefined> {
  const path = join(dir, "results.json");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      console.error(`eval: --resume: no ${path} yet, starting afresh`);
      return undefined;
    }
    throw e;
  }
  const prev = JSON.parse(text) as EvalResults;
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  const checks: [string, unknown, unknown][] = [
    ["kind", prev.kind, now.kind],
    ["model_dir", prev.model_dir, now.model_dir],
    ["data", prev.data, now.data],
  ];
  // Every setting but the command line itself (a resumed run adds --resume) must match.
  for (const k of new Set([...Object.keys(prev.settings ?? {}), ...Object.keys(now.settings)])) {
    if (k !== "argv") checks.push([`settings.${k}`, prev.settings?.[k], now.settings[k]]);
  }
  const bad = checks.filter(([, a, b]) => !same(a, b));
  if (bad.length) {
    const [field, a, b] = bad[0];
    throw new Error(
      `--resume: ${path} was written with ${field} = ${JSON.stringify(a)}, this run has ${
        JSON.stringify(b)
      }; ` +
        "resume with the same settings, or choose another --out",
    );
  }
  return { cells: prev.cells ?? [], trace: prev.trace ?? emptyTrace(null, "") };
}

/**
 * `--add-to DIR`: the new run's cells (all but full) added to DIR's committed results, replacing cells of the same
 * label. Only when the new run evaluated the same samples and its `full` cell reproduces DIR's per-sample
 * predictions (same model, data and engine behaviour); KV ratios are taken against DIR's `full`.
 */
export function addCells(target: EvalResults, run: EvalResults, where: string): EvalResults {
  const fail = (why: string) => {
    throw new Error(`--add-to ${where}: ${why}`);
  };
  if (target.kind !== "tasks" || run.kind !== "tasks") fail("only task evaluations can be extended");
  if (target.model !== run.model) fail(`its model is ${target.model}, this run's ${run.model}`);
  const full = target.cells.find((c) => c.policy === "full");
  const newFull = run.cells.find((c) => c.policy === "full");
  if (!full?.predictions || !newFull?.predictions) fail("full's per-sample predictions are missing");
  if (JSON.stringify(full!.predictions) !== JSON.stringify(newFull!.predictions)) {
    fail(
      "this run's full does not reproduce its per-sample predictions (other samples, model or engine " +
        "behaviour): its cells would not be comparable",
    );
  }
  const added = run.cells.filter((c) => c.policy !== "full").map((c) => {
    const ratio = c.kv_bytes_peak / full!.kv_bytes_peak;
    return {
      ...c,
      kv_peak_ratio: ratio,
      kv_live_peak_ratio: c.kv_bytes_live_peak / full!.kv_bytes_live_peak,
      kv_reduction: 1 - ratio,
    };
  });
  const labels = new Set(added.map((c) => c.label));
  const kept = target.cells.filter((c) => !labels.has(c.label));
  // Main-grid cells before the ablation, each budget's policies together, as a run orders them.
  const cells = [...kept.filter((c) => !c.ablation), ...added, ...kept.filter((c) => c.ablation)];
  const order = (c: CellResult) => (c.ablation ? 1 : 0) * 1e9 + (c.budget ?? -1);
  cells.sort((a, b) => order(a) - order(b));
  const budgets = [...new Set([...target.budgets, ...run.budgets])].sort((a, b) => a - b);
  const additions = [...((target.settings.added as unknown[] | undefined) ?? []), {
    created: run.created,
    argv: run.settings.argv,
    kv: run.settings.kv,
    cells: added.map((c) => c.label),
    wall_s: run.wall_s,
  }];
  return { ...target, budgets, cells, settings: { ...target.settings, added: additions } };
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`eval: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
