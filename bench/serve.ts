/**
 * Serving throughput under a KV memory cap, full against a pruning policy, in one run (`deno task bench:serve`).
 *
 * Starts the OpenAI-compatible server (in this process, on 127.0.0.1) once per policy with the same
 * --kv-memory pool, sends N concurrent long completions over HTTP (token-id prompts, EOS ignored so every
 * request generates exactly max_tokens), and reports requests completed, generated tokens/s, peak KV bytes,
 * the largest decode batch, preemptions, and the throughput ratio. Default pool: room for `--fit` full-KV
 * requests, so full runs that many at a time while the pruned requests, whose caches stay near the budget,
 * decode more at once. `--fit 1,2,4` sweeps pool sizes: full and the pruned policy under each, in one run.
 * `--no-align-rounds` serves the pruned policy with each sequence's rounds on its own schedule (see
 * `SchedulerOptions.alignRounds`). `--kv-dtype int8` stores the pruned policy's K/V as int8 (full stays f16, or
 * `--full-kv-dtype`): the pool is always sized in full f16 requests, what a real engine would hold.
 *
 * Model: models/lethe-reasoner-tiny unless --model says otherwise.
 *
 *   deno task bench:serve [--model DIR] [--n 16] [--max-tokens 448] [--prompt-tokens 32] [--fit 4|1,2,4]
 *     [--kv-memory BYTES] [--policy lethe] [--kv-budget 64] [--max-batch 16] [--json] [--token-ids]
 *     [--families sum] [--lethe-gamma 0.95] [--kv-recent-ratio 0.3] [--no-align-rounds]
 *
 * With a tokenizer and held-out task files (models/lethe-reasoner-tiny/heldout/*.jsonl) the requests are
 * the held-out questions through /v1/chat/completions (greedy, stopping at EOS), and each policy's accuracy is
 * the exact match of the answer after </think> (the trainer's metric); --token-ids forces random id prompts.
 */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";
import type { PolicyName } from "../src/kv/policy.ts";
import { isKvDtype, KV_DTYPES, type KvDtype } from "../src/ops/kv_layout.ts";
import { startServer } from "../src/server/server.ts";
import { parseByteSize } from "../src/server/main.ts";
import { DEFAULT_MODEL_DIR } from "../src/util/paths.ts";

const SERVE_HELP = `Usage: deno task bench:serve [options]

Serving throughput under a KV memory cap: full KV against a pruning policy, N concurrent requests over HTTP.

  --model DIR            model directory (default: the bundled lethe-reasoner-tiny)
  --n N                  concurrent requests (default 16)
  --max-tokens N         tokens per request (default 448)
  --prompt-tokens N      prompt length of token-id prompts (default 32)
  --fit K|1,2,4          KV pool sized for K full-KV requests; a list sweeps pool sizes (default 4)
  --kv-memory BYTES      KV pool size instead of --fit (e.g. 64MiB)
  --policy NAME          the pruning policy compared with full (default lethe)
  --kv-budget N          its per-layer budget (default 64)
  --kv-dtype DTYPE       how the pruned policy stores K/V: f16 | f32 | int8 (default f16)
  --full-kv-dtype DTYPE  how full stores K/V (default f16; the pool is sized in full f16 requests)
  --max-batch N          largest decode batch (default 16)
  --families LIST        held-out task families to use (e.g. sum)
  --lethe-gamma G        Lethe's γ
  --kv-recent-ratio R    recent window ratio
  --no-align-rounds      prune each sequence on its own schedule
  --token-ids            random token-id prompts even when held-out task files exist
  --json                 print JSON instead of a table
  -h, --help             this help
`;

let parsedArgs;
try {
  parsedArgs = parseArgs({
    args: Deno.args,
    options: {
      help: { type: "boolean", short: "h", default: false },
      model: { type: "string" },
      n: { type: "string", default: "16" },
      "max-tokens": { type: "string", default: "448" },
      "prompt-tokens": { type: "string", default: "32" },
      fit: { type: "string", default: "4" },
      "kv-memory": { type: "string" },
      policy: { type: "string", default: "lethe" },
      "kv-budget": { type: "string", default: "64" },
      "kv-dtype": { type: "string", default: "f16" },
      "full-kv-dtype": { type: "string", default: "f16" },
      "max-batch": { type: "string", default: "16" },
      json: { type: "boolean", default: false },
      "token-ids": { type: "boolean", default: false },
      families: { type: "string" },
      "lethe-gamma": { type: "string" },
      "kv-recent-ratio": { type: "string" },
      "no-align-rounds": { type: "boolean", default: false },
    },
  });
} catch (e) {
  console.error(`error: ${(e as Error).message}\nRun with --help for the options.`);
  Deno.exit(2);
}
const v = parsedArgs.values;
if (v.help) {
  console.log(SERVE_HELP);
  Deno.exit(0);
}

const modelDir = v.model ?? DEFAULT_MODEL_DIR;
const N = Number(v.n);
const maxTokens = Number(v["max-tokens"]);
const promptTokens = Number(v["prompt-tokens"]);
const budget = Number(v["kv-budget"]);
const policy = v.policy as PolicyName;
const dtypes = { pruned: v["kv-dtype"] as KvDtype, full: v["full-kv-dtype"] as KvDtype };
for (const [flag, d] of [["--kv-dtype", dtypes.pruned], ["--full-kv-dtype", dtypes.full]]) {
  if (!isKvDtype(d)) {
    console.error(`error: ${flag} must be one of ${KV_DTYPES.join(", ")}, got ${JSON.stringify(d)}`);
    Deno.exit(2);
  }
}

const engine = await Engine.load(modelDir);
const c = engine.model.config;
// Task mode: a reasoner export with held-out sets (heldout/*.jsonl: {prompt, answer, family}) is served through
// /v1/chat/completions, greedy and stopping at EOS, and scored by exact match of the answer after </think>.
interface TaskRow {
  question: string;
  answer: string;
  family: string;
  promptTokens: number;
}
const tasks: TaskRow[] = [];
// --families a,b: only these held-out files (e.g. the families the model has learned).
const onlyFamilies = v.families?.split(",").map((f) => f.trim()).filter((f) => f !== "");
if (engine.tokenizer && !v["token-ids"]) {
  const families: TaskRow[][] = [];
  try {
    for await (const f of Deno.readDir(`${modelDir}/heldout`)) {
      if (!f.name.endsWith(".jsonl")) continue;
      if (onlyFamilies && !onlyFamilies.includes(f.name.slice(0, -".jsonl".length))) continue;
      const rows = (await Deno.readTextFile(`${modelDir}/heldout/${f.name}`)).split("\n").filter((l) =>
        l.trim()
      )
        .map((l) => JSON.parse(l) as { prompt: string; answer: string; family: string });
      families.push(rows.map((r) => {
        const user = "<｜User｜>";
        const from = r.prompt.indexOf(user) + user.length;
        return {
          question: r.prompt.slice(from, r.prompt.indexOf("<｜Assistant｜>")),
          answer: r.answer,
          family: r.family,
          promptTokens: engine.tokenizer!.encode(r.prompt, { addSpecialTokens: false }).length,
        };
      }));
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  families.sort((a, b) => a[0]?.family.localeCompare(b[0]?.family ?? "") ?? 0);
  // Round-robin over the families.
  for (let i = 0; tasks.length < N && families.some((f) => i < f.length); i++) {
    for (const f of families) if (i < f.length && tasks.length < N) tasks.push(f[i]);
  }
}
const taskMode = tasks.length > 0;

const longestPrompt = taskMode ? Math.max(...tasks.map((t) => t.promptTokens)) : promptTokens;
if (!taskMode && promptTokens + maxTokens > c.maxPositionEmbeddings) {
  throw new Error(`--prompt-tokens + --max-tokens exceeds the context ${c.maxPositionEmbeddings}`);
}
// Pools are sized in full-KV requests stored as f16, whatever the runs store.
const tokenBytes = engine.kvTokenBytes("f16");
const fullRequestBytes = Math.ceil(Math.min(longestPrompt + maxTokens, c.maxPositionEmbeddings) / 16) * 16 *
  tokenBytes;
const fits = v.fit.split(",").map((f) => Number(f.trim()));
if (fits.some((f) => !(f > 0))) throw new Error(`--fit must be positive numbers, got ${v.fit}`);
const pools = v["kv-memory"] !== undefined
  ? [parseByteSize(v["kv-memory"])]
  : fits.map((f) => Math.floor(f * fullRequestBytes));

// Deterministic prompts: ids drawn from the vocabulary (BOS first when the model has one).
let state = 12345;
const rand = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
const prompts = Array.from({ length: N }, () => {
  const ids = Array.from({ length: promptTokens }, () => 3 + Math.floor(rand() * (c.vocabSize - 3)));
  if (c.bosTokenId !== null && c.bosTokenId !== undefined) ids[0] = c.bosTokenId;
  return ids;
});

interface RunResult {
  policy: string;
  completed: number;
  failed: number;
  generated_tokens: number;
  wall_s: number;
  tokens_per_s: number;
  kv_bytes_peak: number;
  max_batch: number;
  preemptions: number;
  prune_rounds: number;
  /** Fraction of decode steps recorded before the previous step's ids were read back. */
  steps_ahead: number;
  outputs: number[][];
  /** Task mode: exact-match accuracy of the final answers. */
  accuracy: number | null;
}

async function metrics(url: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await (await fetch(`${url}/metrics`)).text()).split("\n")) {
    const m = /^(\w+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

async function run(kvPolicy: PolicyName, kvMemory: number, dtype: KvDtype): Promise<RunResult> {
  const server = startServer(engine, {
    kvMemory,
    maxBatch: Number(v["max-batch"]),
    // Every request of the benchmark is queued at once: the queue must hold them all.
    maxQueue: Math.max(64, N),
    alignRounds: !v["no-align-rounds"],
    kv: {
      policy: kvPolicy,
      dtype,
      budget,
      // Unset: the model's kv_defaults.json, else the documented defaults.
      ...(v["kv-recent-ratio"] !== undefined ? { recentRatio: Number(v["kv-recent-ratio"]) } : {}),
      ...(v["lethe-gamma"] !== undefined ? { lethe: { gamma: Number(v["lethe-gamma"]) } } : {}),
    },
  });
  const t0 = performance.now();
  let correct = 0;
  const results = taskMode
    ? await Promise.all(tasks.map(async (task, i) => {
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({
          messages: [{ role: "user", content: task.question }],
          max_tokens: Math.min(maxTokens, c.maxPositionEmbeddings - task.promptTokens),
          temperature: 0,
          seed: i,
          return_token_ids: true,
        }),
      });
      const body = await res.json();
      if (res.status !== 200) {
        console.error(`request ${i}: ${res.status} ${JSON.stringify(body)}`);
        return null;
      }
      if ((body.choices[0].message.content as string).trim() === task.answer.trim()) correct++;
      return body.choices[0].token_ids as number[];
    }))
    : await Promise.all(prompts.map(async (prompt, i) => {
      const res = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({
          prompt,
          max_tokens: maxTokens,
          temperature: 0.8,
          seed: i,
          ignore_eos: true,
          return_token_ids: true,
        }),
      });
      const body = await res.json();
      if (res.status !== 200) {
        console.error(`request ${i}: ${res.status} ${JSON.stringify(body)}`);
        return null;
      }
      return body.choices[0].token_ids as number[];
    }));
  const wall = (performance.now() - t0) / 1000;
  const m = await metrics(server.url);
  await server.shutdown();
  const ok = results.filter((r): r is number[] => r !== null && (taskMode || r.length === maxTokens));
  const generated = results.reduce((s, r) => s + (r?.length ?? 0), 0);
  return {
    policy: `${kvPolicy === "full" ? "full" : `${kvPolicy}(budget ${budget})`} ${dtype}`,
    completed: ok.length,
    failed: (taskMode ? tasks.length : N) - ok.length,
    generated_tokens: generated,
    wall_s: wall,
    tokens_per_s: generated / wall,
    kv_bytes_peak: m.lethe_kv_bytes_peak,
    max_batch: m.lethe_batch_size_max,
    preemptions: m.lethe_preemptions_total,
    prune_rounds: m.lethe_prune_rounds_total,
    steps_ahead: m.lethe_decode_steps_ahead_total / Math.max(1, m.lethe_decode_steps_total),
    outputs: results.map((r) => r ?? []),
    accuracy: taskMode ? correct / tasks.length : null,
  };
}

const n = taskMode ? tasks.length : N;
console.error(
  taskMode
    ? `model ${modelDir}: ${n} held-out tasks (chat, greedy, up to ${maxTokens} tokens)`
    : `model ${modelDir}: ${N} requests × (${promptTokens} prompt + ${maxTokens} generated) tokens`,
);

interface PoolResult {
  kv_memory: number;
  /** The pool in full-KV requests of the longest prompt + max_tokens. */
  fit: number;
  full: RunResult;
  pruned: RunResult;
  throughput_ratio: number;
  /** Fidelity proxy: mean fraction of each pruned output that agrees with full's from the start. */
  mean_prefix_agreement: number;
}

const results: PoolResult[] = [];
for (const kvMemory of pools) {
  const fit = kvMemory / fullRequestBytes;
  console.error(`KV pool ${kvMemory} bytes (${fit.toFixed(2)} full-KV requests)`);
  const full = await run("full", kvMemory, dtypes.full);
  console.error(`  full done in ${full.wall_s.toFixed(1)} s`);
  const pruned = await run(policy, kvMemory, dtypes.pruned);
  console.error(`  ${policy} done in ${pruned.wall_s.toFixed(1)} s`);
  const agree = full.outputs.map((f, i) => {
    const p = pruned.outputs[i];
    let k = 0;
    while (k < f.length && k < p.length && f[k] === p[k]) k++;
    return k / Math.max(1, f.length);
  });
  results.push({
    kv_memory: kvMemory,
    fit,
    full,
    pruned,
    throughput_ratio: pruned.tokens_per_s / full.tokens_per_s,
    mean_prefix_agreement: agree.reduce((a, b) => a + b, 0) / agree.length,
  });
}

if (v.json) {
  const strip = ({ outputs: _o, ...r }: RunResult) => r;
  console.log(JSON.stringify(
    {
      model: modelDir,
      n,
      task_mode: taskMode,
      prompt_tokens: promptTokens,
      max_tokens: maxTokens,
      align_rounds: !v["no-align-rounds"],
      pools: results.map((r) => ({ ...r, full: strip(r.full), pruned: strip(r.pruned) })),
    },
    null,
    2,
  ));
} else {
  const head = [
    "pool KiB",
    "fit",
    "policy",
    "completed",
    "accuracy",
    "gen tok/s",
    "wall s",
    "peak KV KiB",
    "max batch",
    "ahead",
    "preempt",
    "prunes",
  ];
  const rows = results.flatMap((p) =>
    [p.full, p.pruned].map((r) => [
      (p.kv_memory / 1024).toFixed(0),
      p.fit.toFixed(2),
      r.policy,
      `${r.completed}/${n}`,
      r.accuracy === null ? "-" : `${(r.accuracy * 100).toFixed(1)}%`,
      r.tokens_per_s.toFixed(1),
      r.wall_s.toFixed(1),
      (r.kv_bytes_peak / 1024).toFixed(0),
      String(r.max_batch),
      `${(r.steps_ahead * 100).toFixed(0)}%`,
      String(r.preemptions),
      String(r.prune_rounds),
    ])
  );
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((x, i) => x.padStart(w[i])).join("  ");
  console.log(fmt(head));
  for (const r of rows) console.log(fmt(r));
  for (const p of results) {
    let line = `pool ${p.fit.toFixed(2)} full requests: throughput ratio ${policy}/full ${
      p.throughput_ratio.toFixed(2)
    }×`;
    if (taskMode) {
      const d = (p.pruned.accuracy! - p.full.accuracy!) * 100;
      line += `, accuracy full ${(p.full.accuracy! * 100).toFixed(1)}% / ${policy} ${
        (p.pruned.accuracy! * 100).toFixed(1)
      }% (${d >= 0 ? "+" : ""}${d.toFixed(1)} points)`;
    }
    line += `, agreement with full ${(p.mean_prefix_agreement * 100).toFixed(1)}% (common-prefix fraction)`;
    console.log(line);
  }
}
engine.destroy();
