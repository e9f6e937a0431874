/// <reference lib="dom" />
/**
 * Loading a model into the page: the chosen source (the served model, a URL, or a picked folder), model files
 * cached across reloads, the adapter's limits checked against the checkpoint's largest tensor, and a message
 * that names the file when something fails.
 */
import { Engine, filesSource, type LoadProgress, type ModelSource, urlSource } from "../mod.ts";
import { type CacheCounters, cachingFetch } from "./cache.ts";
import { checkLimits, GpuProblem, type GpuSummary } from "./gpu_check.ts";
import { largestTensor } from "./tensors.ts";

/** Where the model comes from. */
export type ModelChoice = { kind: "url"; url: string } | { kind: "files"; files: File[] };

/** A loaded model. */
export interface LoadedModel {
  engine: Engine;
  /** What to call it on the page. */
  label: string;
  /** Wall time of the load: headers, weights, tokenizer and kernel warm-up. */
  loadMs: number;
  /** Of which: until every weight was on the GPU (the rest is the tokenizer and compiling the kernels). */
  weightsMs: number;
  /** A remark on the adapter's limits (a matrix split into chunks), or null. */
  warning: string | null;
}

/** Options of {@link loadModel}. */
export interface LoadOptions {
  gpu: GpuSummary;
  /** Keep Range responses in the Cache API (URL sources). */
  cache: boolean;
  counters: CacheCounters;
  onPhase: (text: string) => void;
  onProgress: (p: LoadProgress) => void;
}

/** A model load that failed; the message says what and where. */
export class LoadError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LoadError";
  }
}

function sourceOf(choice: ModelChoice, options: LoadOptions): { source: ModelSource; label: string } {
  if (choice.kind === "files") {
    if (choice.files.length === 0) throw new LoadError("no files picked: choose a model folder first");
    const top = (choice.files[0] as File & { webkitRelativePath?: string }).webkitRelativePath?.split("/")[0];
    return { source: filesSource(choice.files), label: top || `${choice.files.length} files` };
  }
  let url: URL;
  try {
    url = new URL(choice.url, location.href);
  } catch {
    throw new LoadError(`not a URL: ${choice.url}`);
  }
  const fetch = options.cache ? cachingFetch(options.counters) : undefined;
  return { source: urlSource(url.href, { fetch }), label: url.href };
}

/** Loads a model; throws {@link GpuProblem} for limits and {@link LoadError} for everything else. */
export async function loadModel(choice: ModelChoice, options: LoadOptions): Promise<LoadedModel> {
  const { source, label } = sourceOf(choice, options);
  const t0 = performance.now();
  options.onPhase(`reading ${label}…`);
  if ((await source.size("config.json").catch(() => null)) === null) {
    throw new LoadError(
      `${label}: no config.json there — a model directory holds config.json, model.safetensors (or a sharded ` +
        "index) and tokenizer.json",
    );
  }
  let warning: string | null = null;
  try {
    const extent = await largestTensor(source);
    if (extent) warning = checkLimits(options.gpu, extent);
  } catch (e) {
    if (e instanceof GpuProblem) throw e;
    throw new LoadError((e as Error).message, { cause: e });
  }
  let engine: Engine;
  let weightsMs = NaN;
  try {
    engine = await Engine.load(source, {
      progress: (p) => {
        if (p.done) weightsMs = performance.now() - t0;
        options.onProgress(p);
      },
    });
  } catch (e) {
    throw new LoadError((e as Error).message, { cause: e });
  }
  return { engine, label, loadMs: performance.now() - t0, weightsMs, warning };
}
