/**
 * The evaluation harness: KV policies × budgets (and Lethe's τ/γ ablations) on
 *  - "fidelity": a model's greedy continuation of a prompt under `full`, against each policy teacher-forced
 *    over the same ids (agreement length = the first step whose argmax differs, which is exactly where free
 *    greedy generation would diverge; mean KL(full ‖ policy) of the next-token distributions);
 *  - "tasks": prompt/answer rows (a shipped model's held-out sets, or MATH-500 / GSM8K / AIME files) by greedy
 *    generation and answer matching.
 * Every cell also records peak KV bytes (allocated and live) against `full`'s and the decode speed.
 */
import type { Engine } from "../engine/engine.ts";
import type { PruneRound } from "../engine/rounds.ts";
import type { RunnerRow } from "../engine/runner.ts";
import { DEFAULT_SAMPLING } from "../engine/sampler.ts";
import type { SequenceKv } from "../kv/cache.ts";
import type { KvSettings } from "../kv/options.ts";
import { DEFAULT_KV_OPTIONS, type PolicyName } from "../kv/policy.ts";
import { afterThink, answersMatch, extractModelAnswer, gsm8kReference } from "./extract.ts";
import { argmax, klFromLogits } from "./kl.ts";

/** One cell of the grid: a policy at a budget (null for `full`), with Lethe's τ/γ. */
export interface CellSpec {
  policy: PolicyName;
  budget: number | null;
  /** Lethe only (null otherwise). */
  tau: number | null;
  gamma: number | null;
  /** True for Lethe cells off the default τ/γ (the ablation grid). */
  ablation: boolean;
}

/** A readable name: "lethe@64 τ=2 γ=0.9", "h2o@64", "full". */
export function cellLabel(c: CellSpec): string {
  if (c.budget === null) return c.policy;
  const base = `${c.policy}@${c.budget}`;
  return c.policy === "lethe" ? `${base} τ=${c.tau} γ=${c.gamma}` : base;
}

/** Options of {@link planCells}. */
export interface PlanOptions {
  policies: readonly PolicyName[];
  budgets: readonly number[];
  taus: readonly number[];
  gammas: readonly number[];
  /** Budgets at which the τ × γ grid runs (default: all budgets). */
  ablationBudgets?: readonly number[];
  /** Lethe's default τ and γ (the main grid's Lethe cell). */
  tau?: number;
  gamma?: number;
}

/** `full` once, every other policy at every budget, then the Lethe τ × γ grid (minus the default pair). */
export function planCells(o: PlanOptions): CellSpec[] {
  const tau = o.tau ?? DEFAULT_KV_OPTIONS.lethe.tau;
  const gamma = o.gamma ?? DEFAULT_KV_OPTIONS.lethe.gamma;
  const cells: CellSpec[] = [{ policy: "full", budget: null, tau: null, gamma: null, ablation: false }];
  for (const budget of o.budgets) {
    for (const policy of o.policies) {
      if (policy === "full") continue;
      const lethe = policy === "lethe";
      cells.push({ policy, budget, tau: lethe ? tau : null, gamma: lethe ? gamma : null, ablation: false });
    }
  }
  if (o.policies.includes("lethe")) {
    for (const budget of o.ablationBudgets ?? o.budgets) {
      for (const t of o.taus) {
        for (const g of o.gammas) {
          if (t === tau && g === gamma) continue;
          cells.push({ policy: "lethe", budget, tau: t, gamma: g, ablation: true });
        }
      }
    }
  }
  return cells;
}

/** KV options of a cell over shared settings; what neither sets, the engine fills from its model's defaults. */
export function cellKv(c: CellSpec, base: KvSettings): KvSettings {
  const lethe = { ...base.lethe };
  if (c.tau !== null) lethe.tau = c.tau;
  if (c.gamma !== null) lethe.gamma = c.gamma;
  return { ...base, policy: c.policy, budget: c.budget ?? base.budget, lethe };
}

/** Per-family accuracy. */
export interface FamilyScore {
  n: number;
  correct: number;
  accuracy: number;
}

/** Measured outcome of one cell. */
export interface CellResult extends CellSpec {
  label: string;
  /** Samples (tasks) or 1 (fidelity). */
  n: number;
  /** Tasks: fraction correct, overall and per family. */
  accuracy: number | null;
  correct: number | null;
  per_family: Record<string, FamilyScore> | null;
  /** Fidelity: tokens before the first greedy divergence from `full`, of `tokens`. */
  agree_tokens: number | null;
  agree_frac: number | null;
  /** Fidelity: mean and max KL(full ‖ policy) in nats over the teacher-forced steps. */
  kl_mean: number | null;
  kl_max: number | null;
  /** Mean generated tokens per sample. */
  tokens: number;
  /** Mean over samples of the peak KV bytes allocated / holding valid tokens. */
  kv_bytes_peak: number;
  kv_bytes_live_peak: number;
  /** Against `full` on the same samples (sums over samples). */
  kv_peak_ratio: number;
  kv_live_peak_ratio: number;
  /** 1 − kv_peak_ratio. */
  kv_reduction: number;
  decode_tok_s: number;
  /** Mean pruning rounds per sample. */
  prune_rounds: number;
  /** Per-sample predictions (tasks): [sample id, predicted, correct]. */
  predictions?: [string, string | null, boolean][];
  /**
   * `full` in tasks mode: each sample's generated tokens and peak KV bytes (allocated, live), which the other
   * cells' length caps and KV ratios are taken against; what lets a resumed run skip `full`.
   */
  per_sample?: { tokens: number[]; kv_peak: number[]; kv_live_peak: number[] };
}

/** KV bytes after each decode step of one run: [step, live bytes, allocated bytes]. */
export type KvTrace = [number, number, number][];

/** Everything one evaluation run writes to results.json. */
export interface EvalResults {
  version: 1;
  kind: "fidelity" | "tasks";
  /** Model name (directory basename) and path. */
  model: string;
  model_dir: string;
  /** Data file(s) for tasks; null for fidelity. */
  data: string[] | null;
  created: string;
  settings: Record<string, unknown>;
  budgets: number[];
  cells: CellResult[];
  /** KV size over decode steps per cell label, and Lethe's pruning rounds, for one representative run. */
  trace: {
    budget: number | null;
    sample: string;
    kv_steps: Record<string, KvTrace>;
    lethe_rounds: PruneRound[];
  };
  /** True while the run is still going (results are written after every cell). */
  partial: boolean;
  wall_s: number;
}

/** Hooks to record the trace of a run. */
interface RunHooks {
  onStep?: (step: number, kv: SequenceKv) => void;
  onPrune?: (round: PruneRound) => void;
}

/** Outcome of one teacher-forced (or free greedy) run. */
export interface ForcedRun {
  ids: number[];
  /** Next-token logits per generated position (kept only for the reference run). */
  logits: Float32Array[] | null;
  agree: number;
  klMean: number;
  klMax: number;
  kvPeak: number;
  kvLivePeak: number;
  decodeTokS: number;
  rounds: number;
}

/**
 * Greedy decoding of `tokens` tokens after `prompt` that reads back every step's logits. Without `ref` it
 * follows its own argmax and keeps the logits (the reference); with `ref` it feeds `ref.ids` instead and
 * compares: agreement = steps before the first argmax mismatch, KL(ref ‖ this) per step. The loop mirrors
 * `Engine.generate` (prefill, pruning after prefill, decode, pruning rounds after each step).
 */
export async function forcedRun(
  engine: Engine,
  prompt: number[],
  tokens: number,
  kv: KvSettings,
  ref: { ids: number[]; logits: Float32Array[] } | null = null,
  hooks: RunHooks = {},
  onToken?: () => void,
): Promise<ForcedRun> {
  if (ref && ref.ids.length < tokens) throw new Error(`reference has ${ref.ids.length} ids, need ${tokens}`);
  const seq = engine.newSequence(kv, prompt.length + Math.min(tokens, 256), prompt.length);
  const row: RunnerRow = { seq, sampling: DEFAULT_SAMPLING, step: 0, next: 0 };
  const runner = engine.createRunner();
  const ids: number[] = [];
  const logitsOut: Float32Array[] | null = ref ? null : [];
  let agree = 0;
  let klSum = 0;
  let klMax = 0;
  let rounds = 0;
  const counted = (round: PruneRound | null) => {
    if (!round) return;
    rounds++;
    hooks.onPrune?.(round);
  };
  try {
    // Each step reads its logits row back with the positions and scores of a round due after it.
    const first = await runner.prefill(row, prompt, { readLogits: true });
    let logits = first.logits!;
    counted(first.round);
    hooks.onStep?.(0, seq.kv);
    const t1 = performance.now();
    for (let step = 1; step <= tokens; step++) {
      const i = step - 1;
      const pred = argmax(logits);
      let token = pred;
      if (ref) {
        const kl = klFromLogits(ref.logits[i], logits);
        klSum += kl;
        klMax = Math.max(klMax, kl);
        if (agree === i && pred === ref.ids[i]) agree++;
        token = ref.ids[i];
      } else {
        logitsOut!.push(logits);
        agree++;
      }
      ids.push(token);
      onToken?.();
      if (step === tokens) break;
      row.next = token;
      const r = await runner.step([row], {
        readLogits: true,
        onStep: (x) => hooks.onStep?.(x.step, x.seq.kv),
      });
      logits = r.logits![0];
      counted(r.rounds[0]);
    }
    const secs = (performance.now() - t1) / 1000;
    return {
      ids,
      logits: logitsOut,
      agree,
      klMean: ref ? klSum / tokens : 0,
      klMax,
      kvPeak: seq.kv.peakAllocated,
      kvLivePeak: seq.kv.peakLive,
      decodeTokS: tokens > 1 ? (tokens - 1) / secs : 0,
      rounds,
    };
  } finally {
    runner.destroy();
    seq.kv.destroy();
  }
}

/** One prompt/answer row to evaluate. */
export interface TaskSample {
  id: string;
  family: string;
  /** Prompt text (special tokens written out, template applied) or ids. */
  prompt: string | number[];
  reference: string;
  /** "exact": the text after `</think>`, trimmed, must equal the reference; "math": extracted and normalised. */
  scoring: "exact" | "math";
}

/** The instruction R1-Distill models are evaluated with on MATH-style problems. */
export const MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}.";

/**
 * Rows of a JSONL file as samples: held-out task rows (prompt, answer, family), MATH-500 / AIME rows
 * (problem, answer) and GSM8K rows (question, answer with `####`). `wrap` turns a question into a prompt
 * (the chat template of the model); held-out prompts are used as written.
 */
export function parseSamples(
  text: string,
  source: string,
  wrap: (question: string) => string | number[],
): TaskSample[] {
  const out: TaskSample[] = [];
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  lines.forEach((line, i) => {
    const row = JSON.parse(line) as Record<string, unknown>;
    const id = String(row.unique_id ?? row.id ?? `${source}:${i}`);
    if (typeof row.prompt === "string" && row.answer !== undefined) {
      out.push({
        id,
        family: String(row.family ?? source),
        prompt: row.prompt,
        reference: String(row.answer),
        scoring: "exact",
      });
    } else if (typeof row.question === "string" && typeof row.answer === "string") {
      const ref = gsm8kReference(row.answer);
      if (ref === null) throw new Error(`${source} row ${i + 1}: no #### in the answer`);
      out.push({
        id,
        family: source,
        prompt: wrap(`${row.question}\n${MATH_INSTRUCTION}`),
        reference: ref,
        scoring: "math",
      });
    } else if (typeof row.problem === "string" && row.answer !== undefined) {
      out.push({
        id,
        family: source,
        prompt: wrap(`${row.problem}\n${MATH_INSTRUCTION}`),
        reference: String(row.answer),
        scoring: "math",
      });
    } else {throw new Error(
        `${source} row ${i + 1}: expected prompt/answer, question/answer or problem/answer`,
      );}
  });
  return out;
}

/**
 * `limit` samples of each family after skipping its first `offset` (keeps every family represented; an offset
 * gives a split to choose settings on that the reported first samples never saw).
 */
export function limitPerFamily(samples: TaskSample[], limit: number, offset = 0): TaskSample[] {
  const seen = new Map<string, number>();
  return samples.filter((s) => {
    const k = seen.get(s.family) ?? 0;
    seen.set(s.family, k + 1);
    return k >= offset && k < offset + limit;
  });
}

/** Decodes generated ids up to the first EOS, special tokens kept (so `</think>` survives). */
export function outputText(engine: Engine, ids: number[], eos: readonly number[]): string {
  if (!engine.tokenizer) return ids.join(" ");
  const cut = ids.findIndex((id) => eos.includes(id));
  return engine.tokenizer.decode(cut < 0 ? ids : ids.slice(0, cut), { skipSpecialTokens: false });
}

/** Scores a model output against a sample's reference; returns the prediction and whether it matches. */
export function scoreOutput(
  sample: TaskSample,
  text: string,
): { predicted: string | null; correct: boolean } {
  if (sample.scoring === "exact") {
    if (!text.includes("</think>")) return { predicted: null, correct: false };
    const predicted = afterThink(text).trim();
    return { predicted, correct: predicted === sample.reference.trim() };
  }
  const predicted = extractModelAnswer(text);
  return { predicted, correct: answersMatch(predicted, sample.reference) };
}

/** Options of the evaluation runs. */
export interface RunOptions {
  /** Shared KV settings (sink, recent ratio, window, Lethe segments/interval). */
  kv: KvSettings;
  cells: CellSpec[];
  /** Which budget's cells record the KV trace and Lethe's rounds (null = none). */
  traceBudget: number | null;
  /** Called after every cell with the results so far (write them out). */
  onCell?: (cells: CellResult[], trace: EvalResults["trace"]) => Promise<void> | void;
  /** Progress: called once per finished unit (a token for fidelity, a sample for tasks) with a detail text. */
  onProgress?: (detail: string) => void;
}

/** A trace with nothing recorded yet. */
export function emptyTrace(budget: number | null, sample: string): EvalResults["trace"] {
  return { budget, sample, kv_steps: {}, lethe_rounds: [] };
}

/** Fidelity to `full`: one reference run, then every cell teacher-forced over its ids. */
export async function runFidelity(
  engine: Engine,
  prompt: number[],
  tokens: number,
  o: RunOptions,
): Promise<{ cells: CellResult[]; trace: EvalResults["trace"] }> {
  const ctxLen = engine.model.config.maxPositionEmbeddings;
  if (prompt.length + tokens > ctxLen) {
    throw new Error(
      `prompt (${prompt.length}) + tokens (${tokens}) exceeds the model's context of ${ctxLen}`,
    );
  }
  const trace = emptyTrace(o.traceBudget, `prompt [${prompt.join(",")}]`);
  const results: CellResult[] = [];
  let full: ForcedRun | null = null;
  for (const cell of o.cells) {
    const label = cellLabel(cell);
    const traced = cell.budget === null || (cell.budget === o.traceBudget && !cell.ablation);
    const steps: KvTrace = [];
    const hooks: RunHooks = traced
      ? {
        onStep: (step, kv) => steps.push([step, kv.liveBytes(), kv.allocatedBytes()]),
        onPrune: cell.policy === "lethe" ? (r) => trace.lethe_rounds.push(r) : undefined,
      }
      : {};
    const kv = cellKv(cell, o.kv);
    const progress = () => o.onProgress?.(label);
    let run: ForcedRun;
    if (cell.policy === "full" && full === null) {
      run = await forcedRun(engine, prompt, tokens, kv, null, hooks, progress);
      full = run;
    } else {
      if (!full) throw new Error("the first cell must be full (the reference)");
      run = await forcedRun(
        engine,
        prompt,
        tokens,
        kv,
        { ids: full.ids, logits: full.logits! },
        hooks,
        progress,
      );
    }
    if (traced) trace.kv_steps[label] = steps;
    const ratio = run.kvPeak / full.kvPeak;
    results.push({
      ...cell,
      label,
      n: 1,
      accuracy: null,
      correct: null,
      per_family: null,
      agree_tokens: cell.policy === "full" && run === full ? tokens : run.agree,
      agree_frac: (cell.policy === "full" && run === full ? tokens : run.agree) / tokens,
      kl_mean: run === full ? 0 : run.klMean,
      kl_max: run === full ? 0 : run.klMax,
      tokens,
      kv_bytes_peak: run.kvPeak,
      kv_bytes_live_peak: run.kvLivePeak,
      kv_peak_ratio: ratio,
      kv_live_peak_ratio: run.kvLivePeak / full.kvLivePeak,
      kv_reduction: 1 - ratio,
      decode_tok_s: run.decodeTokS,
      prune_rounds: run.rounds,
    });
    await o.onCell?.(results, trace);
  }
  return { cells: results, trace };
}

/** Options of {@link runTasks}. */
export interface TaskRunOptions extends RunOptions {
  /** Most tokens generated per sample (also capped by the model's context). */
  maxTokens: number;
  /**
   * Non-full cells stop at ceil(slack × full's length) + 32 tokens for the sample (an output that runs that far
   * past `full`'s has almost surely lost the thread); 0 = no cap beyond maxTokens.
   */
  lengthSlack: number;
  /**
   * Samples decoded together (1 = one `Engine.generate` per sample, whose decode tok/s is single-stream;
   * more = a batched decode loop over the cell's samples, whose tok/s is the batch's aggregate throughput).
   */
  batch?: number;
  /** With only `full` in `cells`: the rest of the grid, planned from full's mean sequence length (prompt + output). */
  afterFull?: (meanLength: number) => CellSpec[];
  /**
   * Cells of an interrupted run of the same settings and samples (its partial results.json): a planned cell
   * found there with predictions for exactly these samples is taken as it is, not run again. Non-full cells
   * are taken only together with `full` (whose per-sample lengths and KV peaks they are measured against).
   */
  resume?: { cells: CellResult[]; trace: EvalResults["trace"] };
}

/** The resumed result of `cell`, when `resume` holds one for exactly `samples` (and, for `full`, its per-sample data). */
function resumedCell(
  resume: TaskRunOptions["resume"],
  cell: CellSpec,
  samples: TaskSample[],
  fullResumed: boolean,
): CellResult | null {
  if (!resume || (cell.budget !== null && !fullResumed)) return null;
  const label = cellLabel(cell);
  const r = resume.cells.find((x) => x.label === label && x.ablation === cell.ablation);
  const p = r?.predictions;
  if (!r || !p || p.length !== samples.length || p.some((x, i) => x[0] !== samples[i].id)) return null;
  if (cell.budget === null && r.per_sample?.tokens.length !== samples.length) return null;
  return r;
}

/** Task accuracy: every cell generates greedily on every sample (full first, which sets the length caps). */
export async function runTasks(
  engine: Engine,
  samples: TaskSample[],
  o: TaskRunOptions,
): Promise<{ cells: CellResult[]; trace: EvalResults["trace"] }> {
  const c = engine.model.config;
  const eos = c.eosTokenIds;
  const prompts = samples.map((s) =>
    typeof s.prompt === "string"
      ? engine.tokenizer ? engine.tokenizer.encode(s.prompt, { addSpecialTokens: false }) : (() => {
        throw new Error(`model ${engine.model.dir} has no tokenizer.json: text prompts need one`);
      })()
      : s.prompt
  );
  const trace = o.resume?.trace ?? emptyTrace(o.traceBudget, samples[0]?.id ?? "");
  const results: CellResult[] = [];
  let fullLens: number[] | null = null;
  let fullPeaks: number[] = [];
  let fullLive: number[] = [];
  const queue = [...o.cells];
  let fullResumed = false;
  const planRest = (lens: number[]) => {
    if (!o.afterFull) return;
    const mean = lens.reduce((a, l, i) => a + l + prompts[i].length, 0) / Math.max(1, lens.length);
    queue.push(...o.afterFull(mean));
  };
  for (let ci = 0; ci < queue.length; ci++) {
    const cell = queue[ci];
    const label = cellLabel(cell);
    const resumed = resumedCell(o.resume, cell, samples, fullResumed);
    if (resumed) {
      if (cell.budget === null) {
        fullResumed = true;
        fullLens = resumed.per_sample!.tokens;
        fullPeaks = resumed.per_sample!.kv_peak;
        fullLive = resumed.per_sample!.kv_live_peak;
        planRest(fullLens);
      }
      results.push(resumed);
      for (const s of samples) o.onProgress?.(`${label} ${s.family} (resumed)`);
      await o.onCell?.(results, trace);
      continue;
    }
    const kv = cellKv(cell, o.kv);
    const family: Record<string, FamilyScore> = {};
    const predictions: [string, string | null, boolean][] = [];
    let correct = 0;
    let tokens = 0;
    let peaks = 0;
    let live = 0;
    let fullPeakSum = 0;
    let fullLiveSum = 0;
    let decodeSteps = 0;
    let decodeSecs = 0;
    let rounds = 0;
    const lens: number[] = [];
    const peakList: number[] = [];
    const liveList: number[] = [];
    const caps = samples.map((s, i) => {
      let maxTokens = Math.min(o.maxTokens, c.maxPositionEmbeddings - prompts[i].length);
      if (fullLens && o.lengthSlack > 0) {
        maxTokens = Math.min(maxTokens, Math.ceil(fullLens[i] * o.lengthSlack) + 32);
      }
      if (maxTokens < 1) throw new Error(`sample ${s.id}: the prompt fills the model's context`);
      return maxTokens;
    });
    const tracedCell = cell.budget === null || (cell.budget === o.traceBudget && !cell.ablation);
    const steps: KvTrace = [];
    const hooks: RunHooks = {
      onStep: (step, k) => void steps.push([step, k.liveBytes(), k.allocatedBytes()]),
      onPrune: cell.policy === "lethe" ? (round) => void trace.lethe_rounds.push(round) : undefined,
    };
    const batch = Math.max(1, Math.floor(o.batch ?? 1));
    let cellDecodeSecs = 0;
    for (let i0 = 0; i0 < samples.length; i0 += batch) {
      const idx = Array.from({ length: Math.min(batch, samples.length - i0) }, (_, j) => i0 + j);
      const t0 = performance.now();
      const runs = batch === 1
        ? [await generateOne(engine, prompts[i0], caps[i0], kv, i0 === 0 && tracedCell ? hooks : {})]
        : await generateBatch(
          engine,
          idx.map((i) => prompts[i]),
          idx.map((i) => caps[i]),
          kv,
          eos,
          (j) => idx[j] === 0 && tracedCell ? hooks : {},
        );
      cellDecodeSecs += (performance.now() - t0) / 1000;
      runs.forEach((r, j) => {
        const i = idx[j];
        const s = samples[i];
        const text = outputText(engine, r.ids, eos);
        const { predicted, correct: ok } = scoreOutput(s, text);
        predictions.push([s.id, predicted, ok]);
        const f = family[s.family] ??= { n: 0, correct: 0, accuracy: 0 };
        f.n++;
        if (ok) {
          f.correct++;
          correct++;
        }
        lens.push(r.ids.length);
        peakList.push(r.kvPeak);
        liveList.push(r.kvLivePeak);
        tokens += r.ids.length;
        peaks += r.kvPeak;
        live += r.kvLivePeak;
        fullPeakSum += fullLens ? fullPeaks[i] : r.kvPeak;
        fullLiveSum += fullLens ? fullLive[i] : r.kvLivePeak;
        decodeSteps += r.decodeSteps;
        decodeSecs += r.decodeSecs;
        rounds += r.rounds;
        o.onProgress?.(`${label} ${s.family}`);
      });
    }
    if (tracedCell) trace.kv_steps[label] = steps;
    // Batched runs: aggregate throughput of the batch over the cell's wall time.
    if (batch > 1) decodeSecs = cellDecodeSecs;
    const isFull = !fullLens;
    if (!fullLens) {
      fullLens = lens;
      fullPeaks = peakList;
      fullLive = liveList;
      planRest(lens);
    }
    for (const f of Object.values(family)) f.accuracy = f.n ? f.correct / f.n : 0;
    const n = samples.length;
    const ratio = fullPeakSum > 0 ? peaks / fullPeakSum : 1;
    results.push({
      ...cell,
      label,
      n,
      accuracy: n ? correct / n : 0,
      correct,
      per_family: family,
      agree_tokens: null,
      agree_frac: null,
      kl_mean: null,
      kl_max: null,
      tokens: n ? tokens / n : 0,
      kv_bytes_peak: n ? peaks / n : 0,
      kv_bytes_live_peak: n ? live / n : 0,
      kv_peak_ratio: ratio,
      kv_live_peak_ratio: fullLiveSum > 0 ? live / fullLiveSum : 1,
      kv_reduction: 1 - ratio,
      decode_tok_s: decodeSecs > 0 ? decodeSteps / decodeSecs : 0,
      prune_rounds: n ? rounds / n : 0,
      predictions,
      ...(isFull ? { per_sample: { tokens: lens, kv_peak: peakList, kv_live_peak: liveList } } : {}),
    });
    await o.onCell?.(results, trace);
  }
  return { cells: results, trace };
}

/** One sample's generation, as the task runner needs it. */
interface SampleRun {
  ids: number[];
  kvPeak: number;
  kvLivePeak: number;
  decodeSteps: number;
  decodeSecs: number;
  rounds: number;
}

/** One sample through `Engine.generate` (greedy, the model's EOS). */
async function generateOne(
  engine: Engine,
  prompt: number[],
  maxTokens: number,
  kv: KvSettings,
  hooks: RunHooks,
): Promise<SampleRun> {
  const r = await engine.generate(prompt, { maxTokens, kv, onStep: hooks.onStep, onPrune: hooks.onPrune });
  const steps = Math.max(0, r.stats.decode_tokens - 1);
  return {
    ids: r.ids,
    kvPeak: r.stats.kv_bytes_peak,
    kvLivePeak: r.stats.kv_bytes_live_peak,
    decodeSteps: steps,
    decodeSecs: steps > 0 && r.stats.decode_tok_s > 0 ? steps / r.stats.decode_tok_s : 0,
    rounds: r.stats.prune_rounds,
  };
}

/**
 * Several samples under one KV setting, decoded as a batch (one matvec pass per step for all of them): the
 * same steps as `Engine.generate` per sequence (prefill, pruning after prefill, decode, pruning rounds), greedy,
 * stopping each sequence at EOS or its own token cap; finished sequences leave the batch.
 */
export async function generateBatch(
  engine: Engine,
  prompts: number[][],
  caps: number[],
  kv: KvSettings,
  eos: readonly number[],
  hooksOf: (j: number) => RunHooks = () => ({}),
): Promise<SampleRun[]> {
  const rows: RunnerRow[] = prompts.map((p, j) => ({
    seq: engine.newSequence(kv, p.length + Math.min(caps[j], 256), p.length),
    sampling: DEFAULT_SAMPLING,
    step: 0,
    next: 0,
  }));
  const runner = engine.createRunner();
  const hooks = prompts.map((_, j) => hooksOf(j));
  const ids: number[][] = prompts.map(() => []);
  const rounds = prompts.map(() => 0);
  const counted = (j: number, round: PruneRound | null) => {
    if (!round) return;
    rounds[j]++;
    hooks[j].onPrune?.(round);
  };
  try {
    for (let j = 0; j < rows.length; j++) {
      const first = await runner.prefill(rows[j], prompts[j]);
      rows[j].next = first.id!;
      counted(j, first.round);
    }
    const t1 = performance.now();
    let active = rows.map((_, j) => j);
    for (;;) {
      // Each sequence's last token is accepted; the finished leave (see DecodeRunner.leave).
      active = active.filter((j) => {
        ids[j].push(rows[j].next);
        const more = !eos.includes(rows[j].next) && ids[j].length < caps[j];
        if (!more) runner.leave(rows[j]);
        return more;
      });
      if (!active.length) break;
      const r = await runner.step(active.map((j) => rows[j]), {
        mayRecordAhead: () => true,
        onStep: (row) => hooks[rows.indexOf(row)].onStep?.(row.step, row.seq.kv),
      });
      active.forEach((j, a) => {
        rows[j].next = r.ids[a];
        counted(j, r.rounds[a]);
      });
    }
    const secs = (performance.now() - t1) / 1000;
    const totalSteps = ids.reduce((a, x) => a + Math.max(0, x.length - 1), 0);
    return rows.map((row, j) => ({
      ids: ids[j],
      kvPeak: row.seq.kv.peakAllocated,
      kvLivePeak: row.seq.kv.peakLive,
      decodeSteps: Math.max(0, ids[j].length - 1),
      // Shared wall time, split by each sequence's share of the steps.
      decodeSecs: totalSteps > 0 ? (secs * Math.max(0, ids[j].length - 1)) / totalSteps : 0,
      rounds: rounds[j],
    }));
  } finally {
    runner.destroy();
    for (const row of rows) row.seq.kv.destroy();
  }
}

/** Default budgets for a model: powers of two from 16 below the typical sequence length, at most five. */
export function defaultBudgets(typicalLength: number): number[] {
  const out: number[] = [];
  for (let b = 16; b < typicalLength && out.length < 5; b *= 2) out.push(b);
  return out.length ? out : [16];
}
