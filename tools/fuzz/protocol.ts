/**
 * What the fuzz worker subprocess and its parent say to each other: one JSON object per stdout line.
 */
import type { Mutation } from "./mutations.ts";

/** How a case ended. */
export type Outcome =
  /** Loaded, and a 4-token greedy generation gave valid ids and finite logits. */
  | "loaded"
  /** Loaded, but the generation's logits held NaN/Inf or an id outside the vocabulary. */
  | "nonfinite"
  /** Rejected with an Error whose message names a model file or the source. */
  | "error"
  /** Rejected with an Error naming no file: a defect. */
  | "error-unnamed"
  /** A non-Error throw, an uncaught exception or rejection, or the process died (V8 OOM, abort): a defect. */
  | "crash"
  /** Past the per-case timeout: a defect. */
  | "hang";

/** Every outcome, in report order. */
export const OUTCOMES: readonly Outcome[] = [
  "loaded",
  "nonfinite",
  "error",
  "error-unnamed",
  "crash",
  "hang",
];

/** Outcomes that are defects (the suite asserts none). */
export const DEFECTS: readonly Outcome[] = ["error-unnamed", "crash", "hang"];

/** GPU objects a case left behind (counted after Engine.destroy and a sync). */
export interface GpuLeftovers {
  /** Weight buffers/textures of a loaded model that Engine.destroy leaves (the fuzzer frees them). */
  retainedWeights: number;
  /** Bytes of those. */
  retainedWeightBytes: number;
  /**
   * Objects the case created that stay alive as the context's caches (a label no live object had before the
   * case: e.g. a staging texture for a new shape). Bounded by the shapes seen; not a leak.
   */
  cacheGrowth: number;
  /**
   * Leaked objects: a model object (weights, RoPE table) still alive after Engine.destroy or a failed load,
   * or a second live object under a label that already had one before the case (a per-case object never
   * freed).
   */
  leaked: number;
  /** Bytes of those. */
  leakedBytes: number;
  /** Labels of the leaked objects (first few). */
  leakedLabels: string[];
  /** Pool bytes handed out and never released during the case. */
  poolLiveBytes: number;
  /** `GpuContext.liveBuffers()` after minus before the case, when the context has it. */
  liveBuffersDelta: number | null;
}

/** The outcome of one case. */
export interface CaseResult {
  index: number;
  base: string;
  mutations: Mutation[];
  outcome: Outcome;
  /** The KV policy of its generation (the model's kv_defaults.json supplies the settings). */
  policy?: string;
  /** Where it failed: loading (config, weights, tokenizer, KV defaults, warmup) or the generation after. */
  phase: "load" | "generate" | "process";
  /** The error's message (errors), what was not finite, or how the process died. */
  message?: string;
  /** The error's name (constructor), for errors. */
  errorName?: string;
  /** Milliseconds the case took. */
  ms: number;
  /** Uncaptured WebGPU errors during the case (validation errors the loaders let through). */
  gpuErrors?: string[];
  /** GPU objects left behind. */
  gpu?: GpuLeftovers;
  /** The worker's RSS after the case. */
  rssBytes?: number;
  /** The worker's V8 heap (total) after the case: RSS growth beyond it is native memory. */
  heapBytes?: number;
  /** The worker's peak RSS so far (sampled; VmHWM where /proc is readable). */
  peakRssBytes?: number;
}

/** Worker → parent messages. */
export type WorkerMessage =
  | { t: "ready"; primeMs: number }
  | { t: "start"; index: number; base: string; mutations: Mutation[] }
  | { t: "result"; result: CaseResult; contextBroken?: boolean }
  | { t: "done"; peakRssBytes: number; rssBytes: number };

/**
 * Faults a worker can inject in place of a case, to check that the harness catches what it must: a
 * synchronous infinite loop, a promise that never settles, a V8 heap exhaustion, a non-Error throw, an
 * unhandled rejection, an abrupt exit.
 */
export type InjectedFault = "hang" | "hang-async" | "oom" | "throw-string" | "reject" | "exit";

/** What the parent tells a worker to run (passed as one JSON argument). */
export interface WorkerJob {
  /** Faults to inject at these case indices (harness self-tests). */
  faults?: Record<number, InjectedFault>;
  seed: string;
  /** Base model directories. */
  models: string[];
  /** Case indices to run, in order. */
  indices: number[];
  /** Free the weights Engine.destroy leaves (default true; false lets them pile up, to measure). */
  freeWeights: boolean;
}

/**
 * Peak resident set size (VmHWM) of a process from /proc, or null where /proc cannot be read (Deno needs
 * --allow-all for /proc; the fuzzer then samples RSS instead).
 */
export function readVmHwm(pid: number | "self" = "self"): number | null {
  return readProcStatus(pid, "VmHWM");
}

/** Current resident set size of another process: /proc when readable, else `ps` (needs --allow-run). */
export async function readRss(pid: number): Promise<number | null> {
  const fromProc = readProcStatus(pid, "VmRSS");
  if (fromProc !== null) return fromProc;
  try {
    const out = await new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)], stderr: "null" })
      .output();
    const kb = Number(new TextDecoder().decode(out.stdout).trim());
    return out.success && Number.isFinite(kb) && kb > 0 ? kb * 1024 : null;
  } catch {
    return null;
  }
}

function readProcStatus(pid: number | "self", field: string): number | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** The largest RSS this process has been seen at (sampled every 50 ms while `start`ed, and on demand). */
export class RssPeak {
  #peak = 0;
  #timer: ReturnType<typeof setInterval> | null = null;

  /** Samples now; returns the peak so far (VmHWM when /proc is readable, which also sees spikes between samples). */
  sample(): number {
    this.#peak = Math.max(this.#peak, Deno.memoryUsage().rss, readVmHwm() ?? 0);
    return this.#peak;
  }

  start(): void {
    this.#timer ??= setInterval(() => this.sample(), 50);
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}
