/// <reference lib="dom" />
/**
 * The page's query parameters. With `prompt` given the page runs one generation on load and reports it for
 * scripts (tests, benchmarks): `chat` (1 = render the prompt with the model's chat template), `prompt`,
 * `max_tokens`, `temperature`, `top_p`, `top_k`, `seed`, `model` (a base URL; default the served `./model/`)
 * and every KV flag of `deno task generate` with `_` for `-` (`kv`, `kv_budget`, `kv_sink`, `lethe_gamma`, …).
 */
import type { SamplingOptions } from "../mod.ts";
import { type KvFlagValues, KvOptionError, type KvSettings, kvSettingsFromFlags } from "../src/kv/options.ts";

/** One scripted generation. */
export interface RunParams {
  /** Render `prompt` as one user message with the model's chat template. */
  chat: boolean;
  prompt: string;
  maxTokens: number;
  sampling: Partial<SamplingOptions>;
  kv: KvSettings;
  /** Base URL of the model's files (resolved against the page). */
  model: string | null;
}

const KV_PARAMS = [
  "kv",
  "kv_budget",
  "kv_sink",
  "kv_recent_ratio",
  "kv_window",
  "lethe_tau",
  "lethe_segments",
  "lethe_gamma",
  "lethe_interval",
];

function num(q: URLSearchParams, name: string, integer: boolean, min: number): number | undefined {
  const text = q.get(name);
  if (text === null) return undefined;
  const x = text.trim() === "" ? NaN : Number(text);
  if (!Number.isFinite(x) || (integer && !Number.isInteger(x)) || x < min) {
    throw new Error(
      `query parameter ${name} must be ${integer ? "an integer" : "a number"} ≥ ${min}, got "${text}"`,
    );
  }
  return x;
}

/** The scripted run the query asks for, or null when it gives no `prompt`; bad values throw, naming them. */
export function readParams(search: string): RunParams | null {
  const q = new URLSearchParams(search);
  const prompt = q.get("prompt");
  if (prompt === null) return null;
  const sampling: Partial<SamplingOptions> = {};
  const put = (k: "temperature" | "topP" | "topK" | "seed", v: number | undefined) => {
    if (v !== undefined) sampling[k] = v;
  };
  put("temperature", num(q, "temperature", false, 0));
  put("topP", num(q, "top_p", false, 0));
  put("topK", num(q, "top_k", true, 0));
  put("seed", num(q, "seed", true, 0));
  const flags: Record<string, string> = {};
  for (const p of KV_PARAMS) {
    const v = q.get(p);
    if (v !== null) flags[p.replaceAll("_", "-")] = v;
  }
  let kv: KvSettings;
  try {
    kv = kvSettingsFromFlags(flags as KvFlagValues);
  } catch (e) {
    if (e instanceof KvOptionError) {
      throw new Error(`query parameter ${e.format((s) => s.flag.slice(2).replaceAll("-", "_"))}`);
    }
    throw e;
  }
  return {
    chat: q.get("chat") === "1" || q.get("chat") === "true",
    prompt,
    maxTokens: num(q, "max_tokens", true, 1) ?? 256,
    sampling,
    kv,
    model: q.get("model"),
  };
}
