/**
 * `deno task fuzz`: a seeded model-directory fuzzer. Each case starts from a valid small model directory
 * (lethe-reasoner-tiny, and stories260K which has no tokenizer), applies one to three seeded mutations to its
 * files (config.json, model.safetensors or a sharded index, tokenizer.json, tokenizer_config.json,
 * kv_defaults.json, missing or empty files), loads it from memory with warm-up, and when it loads, generates
 * four greedy tokens and checks the logits are finite. A case ends `loaded`, `nonfinite`, `error` (an Error
 * naming a file), `error-unnamed`, `crash` or `hang`; the last three are defects, each replayable alone with
 * `--seed S --only K`. Cases run in worker subprocesses on one shared GPU context, so that an out-of-memory
 * abort or a synchronous hang ends only the worker.
 *
 * The library entry is {@link runFuzz} (tests/fuzz_loaders.test.ts uses it).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { DEFAULT_MODELS, type FuzzOptions, type FuzzReport, runFuzz } from "./fuzz/run.ts";
import { formatReport } from "./fuzz/report.ts";
import { DEFECTS } from "./fuzz/protocol.ts";

export { DEFAULT_MODELS, type FuzzOptions, type FuzzReport, runFuzz } from "./fuzz/run.ts";
export { formatReport } from "./fuzz/report.ts";
export { makeCase, readBaseModel } from "./fuzz/cases.ts";
export { MUTATION_KINDS } from "./fuzz/mutations.ts";
export { DEFECTS, type Outcome, OUTCOMES } from "./fuzz/protocol.ts";

const HELP = `deno task fuzz — seeded fuzzing of model directories through the loaders

  deno task fuzz [--cases N] [--seed S] [--model DIR]... [--json] [--timeout-ms T]
  deno task fuzz --seed S --only K[,K...]      replay cases

Options:
  --cases N         cases 0..N-1 (default 200)
  --seed S          the run's seed (default 1); the same seed gives the same cases
  --only K,K        run only these case indices (a defect's --seed S --only K replays it)
  --model DIR       a base model directory (repeatable; default models/lethe-reasoner-tiny and
                    models/stories260K, the first drawn 3× as often)
  --timeout-ms T    a case running longer is a hang (default 10000)
  --jobs J          worker processes side by side (default 1)
  --heap-mb M       V8 heap limit of a worker (default 1024); past it the worker aborts: a crash
  --max-rss-mb M    a worker past this RSS is killed: a crash (default 4096)
  --keep-weights    do not free the weights Engine.destroy leaves on the shared context
  --json            print the report as JSON
  --quiet           no progress on stderr
  --list            print case K's mutations without running (with --only or --cases)

Exit status: 0 when no case crashed, hung or failed with an error naming no file; 1 otherwise.`;

/** Parses the command line into run options (exported for tests). */
export function parseFuzzArgs(
  args: string[],
): FuzzOptions & { json: boolean; quiet: boolean; list: boolean; help: boolean } {
  const { values } = parseArgs({
    args,
    options: {
      cases: { type: "string" },
      seed: { type: "string" },
      only: { type: "string" },
      model: { type: "string", multiple: true },
      "timeout-ms": { type: "string" },
      jobs: { type: "string" },
      "heap-mb": { type: "string" },
      "max-rss-mb": { type: "string" },
      "keep-weights": { type: "boolean" },
      json: { type: "boolean" },
      quiet: { type: "boolean" },
      list: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  const int = (name: string, v: string | undefined, min: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new Error(`--${name} must be an integer ≥ ${min}, got ${v}`);
    }
    return n;
  };
  const only = values.only?.split(",").map((s) => int("only", s.trim(), 0)!);
  return {
    seed: values.seed ?? "1",
    cases: int("cases", values.cases, 1) ?? 200,
    only,
    models: values.model?.map((m) => resolve(m)),
    timeoutMs: int("timeout-ms", values["timeout-ms"], 1),
    jobs: int("jobs", values.jobs, 1),
    heapMb: int("heap-mb", values["heap-mb"], 64),
    maxRssMb: int("max-rss-mb", values["max-rss-mb"], 64),
    freeWeights: !values["keep-weights"],
    json: values.json ?? false,
    quiet: values.quiet ?? false,
    list: values.list ?? false,
    help: values.help ?? false,
  };
}

async function main(): Promise<number> {
  let o;
  try {
    o = parseFuzzArgs(Deno.args);
  } catch (e) {
    console.error(`fuzz: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (o.help) {
    console.log(HELP);
    return 0;
  }
  if (o.list) {
    const { makeCase, readBaseModel } = await import("./fuzz/cases.ts");
    const bases = await Promise.all((o.models ?? [...DEFAULT_MODELS]).map(readBaseModel));
    for (const k of o.only ?? Array.from({ length: o.cases ?? 0 }, (_, i) => i)) {
      const c = makeCase(String(o.seed), k, bases);
      console.log(
        `${k} ${c.base}: ${c.mutations.map((m) => `${m.kind} (${m.file}) ${m.detail}`).join("; ")}`,
      );
    }
    return 0;
  }
  const total = o.only?.length ?? o.cases ?? 0;
  const every = Math.max(1, Math.round(total / 20));
  const report: FuzzReport = await runFuzz({
    ...o,
    onCase: o.quiet ? undefined : (r, done, all) => {
      if (DEFECTS.includes(r.outcome)) {
        console.error(
          `  case ${r.index}: ${r.outcome} (${r.phase}): ${(r.message ?? "").split("\n")[0].slice(0, 200)}`,
        );
      }
      if (done % every === 0 || done === all) console.error(`fuzz: ${done}/${all} cases`);
    },
  });
  console.log(o.json ? JSON.stringify(report, null, 1) : formatReport(report));
  return DEFECTS.some((d) => report.counts[d] > 0) ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
