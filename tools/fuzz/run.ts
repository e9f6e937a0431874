/**
 * The fuzzer's parent: spawns worker subprocesses over the case indices, times each case out, counts a
 * worker that dies as a crash of the case it was running (then starts a new worker after it), samples the
 * workers' memory, and gathers the results into a {@link FuzzReport}.
 */
import { fileURLToPath } from "node:url";
import type { Mutation } from "./mutations.ts";
import {
  type CaseResult,
  DEFECTS,
  type InjectedFault,
  type Outcome,
  OUTCOMES,
  readRss,
  readVmHwm,
  RssPeak,
  type WorkerJob,
  type WorkerMessage,
} from "./protocol.ts";

/** The bundled models a run mutates by default (the first is drawn three times as often). */
export const DEFAULT_MODELS: readonly string[] = [
  fileURLToPath(new URL("../../models/lethe-reasoner-tiny", import.meta.url)),
  fileURLToPath(new URL("../../models/stories260K", import.meta.url)),
];

/** Options of {@link runFuzz}. */
export interface FuzzOptions {
  /** The run's seed (any string or number): the same seed gives the same cases. */
  seed: string | number;
  /** Cases 0 … cases-1 (ignored when `only` is given). */
  cases?: number;
  /** Exactly these case indices (to replay a defect). */
  only?: number[];
  /** Base model directories (default {@link DEFAULT_MODELS}). */
  models?: string[];
  /** A case running longer than this is a hang (default 10 000 ms). */
  timeoutMs?: number;
  /** Worker processes run side by side (default 1). */
  jobs?: number;
  /** V8 heap limit of a worker in MiB: past it the worker aborts, which counts as a crash (default 1024). */
  heapMb?: number;
  /** A worker whose RSS passes this (MiB) is killed, which counts as a crash (default 4096). */
  maxRssMb?: number;
  /** Free the weights Engine.destroy leaves on the shared context (default true). */
  freeWeights?: boolean;
  /**
   * Faults injected in place of these cases (harness self-tests: each must come out a crash or a hang).
   * @internal
   */
  faults?: Record<number, InjectedFault>;
  /** Called with each finished case (progress). */
  onCase?: (r: CaseResult, done: number, total: number) => void;
}

/** Outcome counts. */
export type OutcomeCounts = Record<Outcome, number>;

/** A defect or anomaly signature: one message shape, how often, and the first case that shows it. */
export interface Signature {
  outcome: Outcome;
  /** The message with numbers and quoted names blanked. */
  signature: string;
  count: number;
  /** Case indices (first 20). */
  cases: number[];
  example: { index: number; base: string; mutations: Mutation[]; message: string; phase: string };
}

/** Everything a run found. */
export interface FuzzReport {
  seed: string;
  models: string[];
  timeoutMs: number;
  cases: number;
  /** Mutations applied over all cases. */
  mutations: number;
  counts: OutcomeCounts;
  /** Per mutation kind: cases containing it, by outcome. */
  byKind: Record<string, OutcomeCounts>;
  /** crash, hang and error-unnamed cases (replay each with `--seed S --only K`). */
  defects: CaseResult[];
  /** Defects and non-finite loads grouped by message shape. */
  signatures: Signature[];
  /** Loaded cases whose generation was not finite. */
  nonfinite: CaseResult[];
  gpu: {
    /** Loaded cases, and the weight objects Engine.destroy left per loaded case (freed by the fuzzer). */
    loadedCases: number;
    retainedWeightObjects: number;
    retainedWeightBytes: number;
    /** Cases that left other objects alive (e.g. partial uploads of a failed load). */
    leakingCases: number;
    leakedObjects: number;
    leakedBytes: number;
    /** Objects cases added to the context's caches (new labels: e.g. staging textures for new shapes). */
    cacheGrowthObjects: number;
    /** Examples of leaking cases. */
    leakExamples: { index: number; outcome: Outcome; leaked: number; labels: string[] }[];
    /** Cases after which the pool held more live bytes than before. */
    poolLeakCases: number;
    /** Cases with uncaptured WebGPU (validation) errors, and examples. */
    gpuErrorCases: number;
    gpuErrorExamples: { index: number; outcome: Outcome; error: string }[];
    /** Whether GpuContext.liveBuffers() existed (then: cases whose count grew). */
    liveBuffersAvailable: boolean;
    liveBuffersGrewCases: number;
  };
  memory: {
    /** How peaks were measured: "VmHWM" (/proc readable, e.g. deno run -A) or "sampled" RSS. */
    method: "VmHWM" | "sampled";
    /**
     * Peak RSS of the parent and of the largest worker: VmHWM where /proc is readable (deno run -A), else the
     * largest of RSS samples (every 50 ms inside the worker, every 250 ms from the parent with `ps`).
     */
    parentPeakRssBytes: number;
    workerPeakRssBytes: number;
    /** A worker's RSS after its first and last case (growth across cases shows a host-side leak). */
    workerRssFirstBytes: number | null;
    workerRssLastBytes: number | null;
    /** The worker's V8 heap after its first and last case. */
    workerHeapFirstBytes: number | null;
    workerHeapLastBytes: number | null;
  };
  /** Worker processes started (one per job, plus one after each crash or hang). */
  workers: number;
  wallMs: number;
  /** Milliseconds per case: mean and max. */
  caseMsMean: number;
  caseMsMax: number;
}

const WORKER = fileURLToPath(new URL("./worker.ts", import.meta.url));

function zeroCounts(): OutcomeCounts {
  return Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as OutcomeCounts;
}

/** A message with its specifics blanked, so that one defect's cases group together. */
export function signatureOf(message: string): string {
  return message
    .split("\n")[0]
    .replace(/fuzz:[\w.-]+#\d+/g, "<source>")
    .replace(/"[^"]*"/g, '"…"')
    .replace(/\[[^\]]*\]/g, "[…]")
    .replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, "N")
    .slice(0, 200);
}

/** One worker: runs `indices` until done, dies, or hangs; reports each message. */
function runWorker(
  job: WorkerJob,
  opts: Required<Pick<FuzzOptions, "timeoutMs" | "heapMb" | "maxRssMb">>,
  onMessage: (m: WorkerMessage) => void,
  onPeak: (bytes: number) => void,
): Promise<{ code: number; signal: string | null; killedFor: "hang" | "rss" | null; stderr: string }> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      `--v8-flags=--max-old-space-size=${opts.heapMb}`,
      WORKER,
      JSON.stringify(job),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  });
  const child = cmd.spawn();
  let killedFor: "hang" | "rss" | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const kill = (why: "hang" | "rss") => {
    if (killedFor) return;
    killedFor = why;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  };
  let sampling: Promise<void> | null = null;
  const sample = () => {
    sampling ??= (async () => {
      try {
        const rss = await readRss(child.pid);
        if (rss === null) return;
        onPeak(rss);
        if (rss > opts.maxRssMb * 1024 * 1024) kill("rss");
      } finally {
        sampling = null;
      }
    })();
  };
  const sampler = setInterval(sample, 250);
  let stderr = "";
  const errDone = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) {
      stderr += dec.decode(chunk, { stream: true });
      if (stderr.length > 64_000) stderr = stderr.slice(-32_000);
    }
  })();
  const outDone = (async () => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of child.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let m: WorkerMessage;
        try {
          m = JSON.parse(line);
        } catch {
          continue; // not ours (nothing else should write to stdout)
        }
        if (m.t === "start") {
          clearTimeout(timer);
          timer = setTimeout(() => kill("hang"), opts.timeoutMs);
        } else if (m.t === "result") {
          clearTimeout(timer);
          if (m.result.peakRssBytes !== undefined) onPeak(m.result.peakRssBytes);
        } else if (m.t === "done") onPeak(m.peakRssBytes);
        onMessage(m);
      }
    }
  })();
  return (async () => {
    const status = await child.status;
    await Promise.all([outDone, errDone]);
    clearTimeout(timer);
    clearInterval(sampler);
    await sampling;
    return { code: status.code, signal: status.signal, killedFor, stderr };
  })();
}

/** Runs a seeded fuzzing campaign and returns its report. */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const t0 = performance.now();
  const parentPeak = new RssPeak();
  parentPeak.start();
  const seed = String(options.seed);
  const models = options.models ?? [...DEFAULT_MODELS];
  const timeoutMs = options.timeoutMs ?? 10_000;
  const heapMb = options.heapMb ?? 1024;
  const maxRssMb = options.maxRssMb ?? 4096;
  const freeWeights = options.freeWeights ?? true;
  const indices = options.only ?? Array.from({ length: options.cases ?? 100 }, (_, i) => i);
  const jobs = Math.max(1, Math.min(options.jobs ?? 1, indices.length));
  const results = new Map<number, CaseResult>();
  let workers = 0;
  let workerPeak = 0;
  let rssFirst: number | null = null;
  let rssLast: number | null = null;
  let heapFirst: number | null = null;
  let heapLast: number | null = null;

  const lane = async (mine: number[]): Promise<void> => {
    let rest = mine;
    let deadBeforeReady = 0;
    let stalled = 0;
    while (rest.length > 0) {
      workers++;
      let ready = false;
      let current: { index: number; base: string; mutations: Mutation[]; started: number } | null = null;
      const end = await runWorker(
        { seed, models, indices: rest, freeWeights, faults: options.faults },
        { timeoutMs, heapMb, maxRssMb },
        (m) => {
          if (m.t === "ready") ready = true;
          else if (m.t === "start") current = { ...m, started: performance.now() };
          else if (m.t === "result") {
            results.set(m.result.index, m.result);
            current = null;
            if (m.result.rssBytes !== undefined) {
              rssFirst ??= m.result.rssBytes;
              rssLast = m.result.rssBytes;
              heapFirst ??= m.result.heapBytes ?? null;
              heapLast = m.result.heapBytes ?? null;
            }
            options.onCase?.(m.result, results.size, indices.length);
          }
        },
        (bytes) => workerPeak = Math.max(workerPeak, bytes),
      );
      if (!ready) {
        if (++deadBeforeReady >= 2) {
          throw new Error(
            `the fuzz worker failed before running any case (exit ${end.code}${
              end.signal ? `, ${end.signal}` : ""
            }):\n${end.stderr.slice(-4000)}`,
          );
        }
        continue;
      }
      deadBeforeReady = 0;
      const cur = current as { index: number; base: string; mutations: Mutation[]; started: number } | null;
      if (cur) {
        const tail = end.stderr.trim().split("\n").slice(-6).join(" | ").slice(-600);
        const hang = end.killedFor === "hang";
        const r: CaseResult = {
          index: cur.index,
          base: cur.base,
          mutations: cur.mutations,
          outcome: hang ? "hang" : "crash",
          phase: "process",
          ms: performance.now() - cur.started,
          message: hang
            ? `no result after ${timeoutMs} ms (worker killed)`
            : end.killedFor === "rss"
            ? `worker RSS passed ${maxRssMb} MiB (killed)`
            : `worker died (exit ${end.code}${end.signal ? `, ${end.signal}` : ""})${
              tail ? `: ${tail}` : ""
            }`,
        };
        results.set(cur.index, r);
        options.onCase?.(r, results.size, indices.length);
      }
      const before = rest.length;
      rest = rest.filter((i) => !results.has(i));
      if (rest.length === before && rest.length > 0) {
        // Died after starting up but before starting a case, three times running: blame the next case.
        if (++stalled >= 3) {
          const r: CaseResult = {
            index: rest[0],
            base: "?",
            mutations: [],
            outcome: "crash",
            phase: "process",
            ms: 0,
            message: `worker died before starting the case (exit ${end.code}): ${end.stderr.slice(-600)}`,
          };
          results.set(r.index, r);
          options.onCase?.(r, results.size, indices.length);
          rest = rest.slice(1);
          stalled = 0;
        }
      } else stalled = 0;
    }
  };
  const per = Math.ceil(indices.length / jobs);
  await Promise.all(Array.from({ length: jobs }, (_, j) => lane(indices.slice(j * per, (j + 1) * per))));

  parentPeak.stop();
  const ordered = indices.map((i) => results.get(i)!).filter((r) => r !== undefined);
  return summarize(ordered, {
    seed,
    models,
    timeoutMs,
    workers,
    wallMs: performance.now() - t0,
    workerPeak,
    parentPeak: parentPeak.sample(),
    rssFirst,
    rssLast,
    heapFirst,
    heapLast,
  });
}

function summarize(
  results: CaseResult[],
  run: {
    seed: string;
    models: string[];
    timeoutMs: number;
    workers: number;
    wallMs: number;
    workerPeak: number;
    parentPeak: number;
    rssFirst: number | null;
    rssLast: number | null;
    heapFirst: number | null;
    heapLast: number | null;
  },
): FuzzReport {
  const counts = zeroCounts();
  const byKind: Record<string, OutcomeCounts> = {};
  let mutations = 0;
  const sigs = new Map<string, Signature>();
  const gpu: FuzzReport["gpu"] = {
    loadedCases: 0,
    retainedWeightObjects: 0,
    retainedWeightBytes: 0,
    leakingCases: 0,
    leakedObjects: 0,
    leakedBytes: 0,
    leakExamples: [],
    cacheGrowthObjects: 0,
    poolLeakCases: 0,
    gpuErrorCases: 0,
    gpuErrorExamples: [],
    liveBuffersAvailable: false,
    liveBuffersGrewCases: 0,
  };
  let msSum = 0, msMax = 0;
  for (const r of results) {
    counts[r.outcome]++;
    mutations += r.mutations.length;
    msSum += r.ms;
    msMax = Math.max(msMax, r.ms);
    for (const kind of new Set(r.mutations.map((m) => m.kind))) {
      (byKind[kind] ??= zeroCounts())[r.outcome]++;
    }
    if (DEFECTS.includes(r.outcome) || r.outcome === "nonfinite") {
      const signature = signatureOf(r.message ?? "");
      const key = `${r.outcome}\u0000${r.phase}\u0000${signature}`;
      const s = sigs.get(key);
      if (s) {
        s.count++;
        if (s.cases.length < 20) s.cases.push(r.index);
      } else {
        sigs.set(key, {
          outcome: r.outcome,
          signature,
          count: 1,
          cases: [r.index],
          example: {
            index: r.index,
            base: r.base,
            mutations: r.mutations,
            message: r.message ?? "",
            phase: r.phase,
          },
        });
      }
    }
    if (r.gpu) {
      if (r.outcome === "loaded" || r.outcome === "nonfinite") {
        gpu.loadedCases++;
        gpu.retainedWeightObjects += r.gpu.retainedWeights;
        gpu.retainedWeightBytes += r.gpu.retainedWeightBytes;
      }
      if (r.gpu.leaked > 0) {
        gpu.leakingCases++;
        gpu.leakedObjects += r.gpu.leaked;
        gpu.leakedBytes += r.gpu.leakedBytes;
        if (gpu.leakExamples.length < 10) {
          gpu.leakExamples.push({
            index: r.index,
            outcome: r.outcome,
            leaked: r.gpu.leaked,
            labels: r.gpu.leakedLabels,
          });
        }
      }
      gpu.cacheGrowthObjects += r.gpu.cacheGrowth;
      if (r.gpu.poolLiveBytes > 0) gpu.poolLeakCases++;
      if (r.gpu.liveBuffersDelta !== null) {
        gpu.liveBuffersAvailable = true;
        if (r.gpu.liveBuffersDelta > 0) gpu.liveBuffersGrewCases++;
      }
    }
    if (r.gpuErrors?.length) {
      gpu.gpuErrorCases++;
      if (gpu.gpuErrorExamples.length < 10) {
        gpu.gpuErrorExamples.push({ index: r.index, outcome: r.outcome, error: r.gpuErrors[0] });
      }
    }
  }
  const order = (o: Outcome) => ["crash", "hang", "error-unnamed", "nonfinite"].indexOf(o);
  return {
    seed: run.seed,
    models: run.models,
    timeoutMs: run.timeoutMs,
    cases: results.length,
    mutations,
    counts,
    byKind: Object.fromEntries(Object.entries(byKind).sort(([a], [b]) => a.localeCompare(b))),
    defects: results.filter((r) => DEFECTS.includes(r.outcome)),
    signatures: [...sigs.values()].sort((a, b) => order(a.outcome) - order(b.outcome) || b.count - a.count),
    nonfinite: results.filter((r) => r.outcome === "nonfinite"),
    gpu,
    memory: {
      method: readVmHwm() === null ? "sampled" : "VmHWM",
      parentPeakRssBytes: run.parentPeak,
      workerPeakRssBytes: run.workerPeak,
      workerRssFirstBytes: run.rssFirst,
      workerRssLastBytes: run.rssLast,
      workerHeapFirstBytes: run.heapFirst,
      workerHeapLastBytes: run.heapLast,
    },
    workers: run.workers,
    wallMs: run.wallMs,
    caseMsMean: results.length ? msSum / results.length : 0,
    caseMsMax: msMax,
  };
}
