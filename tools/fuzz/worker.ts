/**
 * The fuzz worker: a subprocess that runs a list of cases on one GPU context and writes one JSON line per
 * event to stdout (see protocol.ts). It runs in its own process so that what no try/catch can catch — a V8
 * out-of-memory abort, a native crash, a synchronous infinite loop — ends only this process; the parent
 * counts the case it was running and starts a new worker after it.
 *
 * Usage (by the parent): deno run --allow-read --allow-env tools/fuzz/worker.ts '<WorkerJob JSON>'
 */
import { GpuContext } from "../../src/gpu/context.ts";
import { Engine } from "../../src/engine/engine.ts";
import { memorySource } from "../../src/io/source.ts";
import { POLICY_NAMES, type PolicyName } from "../../src/kv/policy.ts";
import { makeCase, readBaseModel } from "./cases.ts";
import type { BaseModel } from "./mutations.ts";
import { GpuTracker, isModelObject, liveBuffers } from "./gpu_track.ts";
import type { CaseResult, GpuLeftovers, InjectedFault, WorkerJob, WorkerMessage } from "./protocol.ts";
import { RssPeak } from "./protocol.ts";

/** The files a loader error may name (besides the case's own files and the source's name). */
export const MODEL_FILES: readonly string[] = [
  "config.json",
  "model.safetensors",
  "model.safetensors.index.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "kv_defaults.json",
];

/** The prompt of the generation when the model has a tokenizer. */
const PROMPT_TEXT = "a = 3, b = 1";
/** Tokens generated per loaded case. */
const GENERATE_TOKENS = 4;

/** The name of a case's memory source (errors may name it). */
export function sourceName(base: string, index: number): string {
  return `fuzz:${base}#${index}`;
}

/** Whether an error message names a model file (of the case or the usual set) or the source. */
export function namesAFile(message: string, files: Iterable<string>, source: string): boolean {
  if (message.includes(source)) return true;
  for (const f of MODEL_FILES) if (message.includes(f)) return true;
  for (const f of files) if (f.length > 0 && message.includes(f)) return true;
  return false;
}

function emit(m: WorkerMessage): void {
  // One write per line, so that a crash never leaves half a line.
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(m) + "\n"));
}

function describe(e: unknown): string {
  if (e instanceof Error) return e.message;
  try {
    return `${typeof e}: ${String(e)}`;
  } catch {
    return typeof e;
  }
}

/** This process's peak RSS. */
const peak = new RssPeak();

/** Faults reported outside the case's own promise chain (uncaught exceptions, unhandled rejections). */
const asyncFaults: string[] = [];
globalThis.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  asyncFaults.push(`unhandled rejection: ${describe(e.reason)}`);
});
globalThis.addEventListener("error", (e) => {
  e.preventDefault();
  asyncFaults.push(`uncaught exception: ${describe(e.error ?? e.message)}`);
});

/** The KV policy case K generates with: each in turn, so that kv_defaults.json's values reach every policy. */
export function policyOf(index: number): PolicyName {
  return POLICY_NAMES[index % POLICY_NAMES.length];
}

/**
 * Four greedy tokens under `policy` (settings from the model's kv_defaults.json), then the logits of the
 * whole text checked finite. Returns a problem or null.
 */
async function generateAndCheck(engine: Engine, policy: PolicyName): Promise<string | null> {
  const c = engine.config;
  // A chat prompt when the tokenizer has a template (its special tokens included), else plain text, else ids.
  const tok = engine.tokenizer;
  let prompt = tok
    ? tok.chatTemplate ? tok.encodeChat([{ role: "user", content: PROMPT_TEXT }]) : engine.encode(PROMPT_TEXT)
    : [c.bosTokenId ?? 1, 5, 9].map((x) => x % c.vocabSize);
  if (prompt.length === 0) prompt = [0];
  const room = c.maxPositionEmbeddings - 1;
  if (room < 1) return null; // a context of one token: nothing can be generated
  prompt = prompt.slice(0, room);
  const maxTokens = Math.min(GENERATE_TOKENS, c.maxPositionEmbeddings - prompt.length);
  const result = await engine.generate(prompt, { maxTokens, kv: { policy } });
  for (const id of result.ids) {
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
      return `generated id ${id} is outside the vocabulary [0, ${c.vocabSize})`;
    }
  }
  if (typeof result.text !== "string") return `generated text is ${typeof result.text}`;
  // The logits after the prompt and the generated tokens: all finite?
  const tokens = [...prompt, ...result.ids].slice(0, c.maxPositionEmbeddings);
  const seq = engine.newSequence({ policy: "full" }, tokens.length);
  const runner = engine.createRunner();
  try {
    const row = { seq, sampling: { temperature: 0, topK: 0, topP: 1, seed: 0 }, step: 0, next: 0 };
    const { logits } = await runner.prefill(row, tokens, { readLogits: true });
    let bad = 0;
    for (const v of logits ?? []) if (!Number.isFinite(v)) bad++;
    if (!logits) return "no logits read back";
    if (bad > 0) return `${bad} of ${logits.length} logits are not finite`;
  } finally {
    runner.destroy();
    seq.kv.destroy();
  }
  return null;
}

/** Does what a fault stands for (see {@link InjectedFault}). */
async function inject(fault: InjectedFault): Promise<void> {
  switch (fault) {
    case "hang":
      for (;;) {
        // spin: a synchronous hang only the parent's timeout can end
      }
    case "hang-async":
      await new Promise(() => {});
      return;
    case "oom": {
      const hoard: number[][] = [];
      for (;;) hoard.push(new Array(1 << 20).fill(1.5));
    }
    case "throw-string":
      throw "a string, not an Error";
    case "reject":
      Promise.reject(new Error("a rejection nobody handles"));
      await new Promise((r) => setTimeout(r, 10));
      return;
    case "exit":
      Deno.exit(70);
  }
}

/** Runs one case. */
async function runCase(
  ctx: GpuContext,
  tracker: GpuTracker,
  gpuErrors: string[],
  seed: string,
  index: number,
  bases: readonly BaseModel[],
  freeWeights: boolean,
  fault: InjectedFault | undefined,
): Promise<{ result: CaseResult; contextBroken: boolean }> {
  const fc = makeCase(seed, index, bases);
  emit({ t: "start", index, base: fc.base, mutations: fc.mutations });
  const name = sourceName(fc.base, index);
  const source = memorySource(Object.fromEntries(fc.files), name);
  const mark = tracker.mark();
  const poolBefore = ctx.pool.stats().liveBytes;
  const liveBefore = liveBuffers(ctx);
  asyncFaults.length = 0;
  gpuErrors.length = 0;
  const t0 = performance.now();
  const result: CaseResult = {
    index,
    base: fc.base,
    mutations: fc.mutations,
    outcome: "loaded",
    phase: "load",
    policy: policyOf(index),
    ms: 0,
  };
  let engine: Engine | null = null;
  try {
    if (fault) await inject(fault);
    engine = await Engine.load(source, { ctx, progress: false, warmup: true });
    result.phase = "generate";
    const problem = await generateAndCheck(engine, policyOf(index));
    if (problem !== null) {
      result.outcome = "nonfinite";
      result.message = problem;
    }
  } catch (e) {
    if (e instanceof Error) {
      result.message = e.message;
      result.errorName = e.name;
      result.outcome =
        namesAFile(e.message, [...fc.files.keys(), ...bases.flatMap((b) => [...b.files.keys()])], name)
          ? "error"
          : "error-unnamed";
    } else {
      result.outcome = "crash";
      result.message = `non-Error thrown: ${describe(e)}`;
    }
  }
  let contextBroken = false;
  try {
    engine?.destroy();
    await ctx.sync();
  } catch (e) {
    contextBroken = true;
    if (result.outcome !== "crash") {
      result.outcome = "crash";
      result.message = `the GPU context is unusable after the case: ${describe(e)} (after: ${
        result.message ?? "loaded"
      })`;
    }
  }
  // Let unhandled rejections of this case surface before judging it.
  await new Promise((r) => setTimeout(r, 0));
  if (asyncFaults.length) {
    result.message = `${asyncFaults.join("; ")}${
      result.message ? ` (the case itself: ${result.message})` : ""
    }`;
    result.outcome = "crash";
  }
  result.ms = performance.now() - t0;
  if (gpuErrors.length) result.gpuErrors = gpuErrors.slice(0, 5);

  // GPU objects the case left behind: a loaded model's weights stay by design (Engine.destroy leaves them);
  // everything else — and anything after a failed load — is a leak.
  const left = tracker.since(mark);
  const loaded = engine !== null;
  const weights = loaded ? left.filter((t) => isModelObject(t.label)) : [];
  const labelsBefore = tracker.labelsUpTo(mark);
  const leaked = left.filter((t) =>
    !weights.includes(t) && (isModelObject(t.label) || labelsBefore.has(t.label))
  );
  const liveAfter = liveBuffers(ctx);
  const gpu: GpuLeftovers = {
    retainedWeights: weights.length,
    retainedWeightBytes: weights.reduce((s, t) => s + t.bytes, 0),
    cacheGrowth: left.length - weights.length - leaked.length,
    leaked: leaked.length,
    leakedBytes: leaked.reduce((s, t) => s + t.bytes, 0),
    leakedLabels: [...new Set(leaked.map((t) => t.label))].slice(0, 8),
    poolLiveBytes: ctx.pool.stats().liveBytes - poolBefore,
    liveBuffersDelta: liveBefore !== null && liveAfter !== null ? liveAfter - liveBefore : null,
  };
  result.gpu = gpu;
  if (freeWeights) {
    // Free the model's objects (retained weights, partial uploads) so that memory stays bounded; other
    // leftovers may be caches of the context and stay.
    for (const t of left) if (isModelObject(t.label)) t.object.destroy();
  }
  const mem = Deno.memoryUsage();
  result.rssBytes = mem.rss;
  result.heapBytes = mem.heapTotal;
  result.peakRssBytes = peak.sample();
  return { result, contextBroken };
}

async function main(): Promise<void> {
  const job = JSON.parse(Deno.args[0]) as WorkerJob;
  peak.start();
  const bases = await Promise.all(job.models.map(readBaseModel));
  const ctx = await GpuContext.create();
  const tracker = new GpuTracker(ctx);
  const gpuErrors: string[] = [];
  ctx.device.addEventListener("uncapturederror", (e) => {
    gpuErrors.push((e as GPUUncapturedErrorEvent).error.message.slice(0, 300));
  });
  // Prime: load each unmutated base once, so that pipelines and the context's scratch objects exist before
  // the first case (they would otherwise count as that case's leak and time).
  const t0 = performance.now();
  for (const base of bases) {
    const engine = await Engine.load(memorySource(Object.fromEntries(base.files), base.name), {
      ctx,
      progress: false,
    });
    for (const policy of POLICY_NAMES) await generateAndCheck(engine, policy);
    engine.destroy();
    await ctx.sync();
    for (const t of tracker.since(0)) if (isModelObject(t.label)) t.object.destroy();
  }
  gpuErrors.length = 0;
  emit({ t: "ready", primeMs: performance.now() - t0 });
  // Keeps the event loop alive: a promise that never settles is then a hang the parent times out, not an
  // early exit.
  const keepAlive = setInterval(() => {}, 60_000);
  for (const index of job.indices) {
    const { result, contextBroken } = await runCase(
      ctx,
      tracker,
      gpuErrors,
      job.seed,
      index,
      bases,
      job.freeWeights,
      job.faults?.[index],
    );
    emit({ t: "result", result, contextBroken });
    if (contextBroken) {
      clearInterval(keepAlive);
      peak.stop();
      Deno.exit(3); // the parent starts a fresh worker (and context) after this case
    }
  }
  clearInterval(keepAlive);
  peak.stop();
  emit({ t: "done", peakRssBytes: peak.sample(), rssBytes: Deno.memoryUsage().rss });
  ctx.destroy();
}

if (import.meta.main) await main();
