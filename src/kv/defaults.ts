/**
 * A model's own KV defaults: `kv_defaults.json` beside its config.json.
 *
 * The paper leaves Lethe's hyperparameters open, and the evaluation finds that the best recent window depends
 * on the model: one that copies each step from a recent stretch of its thought needs a larger window than one
 * that looks far back. A model directory may therefore name its own defaults, which apply wherever a setting
 * is not given (CLI flags, request fields and library options still win). The keys are the request
 * extensions' names:
 *
 *   {"kv_recent_ratio": 0.7, "lethe_gamma": 0.9, "note": "why, and how it was chosen"}
 */
import { DEFAULT_KV_OPTIONS, type KvPolicyOptions, validateKvOptions } from "./policy.ts";

/** The file a model directory may hold its KV defaults in. */
export const KV_DEFAULTS_FILE = "kv_defaults.json";

type Setter = (o: KvPolicyOptions, x: number) => void;

/** Each accepted key, how it sets the options, and whether it must be an integer. */
const KEYS: Record<string, { set: Setter; integer: boolean }> = {
  kv_budget: { set: (o, x) => (o.budget = x), integer: true },
  kv_sink: { set: (o, x) => (o.sink = x), integer: true },
  kv_recent_ratio: { set: (o, x) => (o.recentRatio = x), integer: false },
  kv_window: { set: (o, x) => (o.window = x), integer: true },
  lethe_tau: { set: (o, x) => (o.lethe.tau = x), integer: false },
  lethe_segments: { set: (o, x) => (o.lethe.segments = x), integer: true },
  lethe_gamma: { set: (o, x) => (o.lethe.gamma = x), integer: false },
  lethe_interval: { set: (o, x) => (o.lethe.interval = x), integer: true },
};

/** Parses a kv_defaults.json text over the project's defaults; `where` names the file in errors. */
export function parseKvDefaults(text: string, where: string): KvPolicyOptions {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${where}: not JSON (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error(`${where}: not an object`);
  }
  const out: KvPolicyOptions = { ...DEFAULT_KV_OPTIONS, lethe: { ...DEFAULT_KV_OPTIONS.lethe } };
  for (const [key, value] of Object.entries(raw)) {
    if (key === "note") continue;
    const k = KEYS[key];
    if (!k) {
      throw new Error(`${where}: unknown key "${key}"; accepted: ${Object.keys(KEYS).join(", ")}, note`);
    }
    if (typeof value !== "number" || !Number.isFinite(value) || (k.integer && !Number.isInteger(value))) {
      throw new Error(`${where}: "${key}" must be ${k.integer ? "an integer" : "a number"}, got ${value}`);
    }
    k.set(out, value);
  }
  try {
    validateKvOptions(out);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
  return out;
}

/** A model directory's KV defaults: its kv_defaults.json over the project's, or the project's alone. */
export async function loadKvDefaults(dir: string): Promise<KvPolicyOptions> {
  const path = `${dir}/${KV_DEFAULTS_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return parseKvDefaults("{}", path);
    throw e;
  }
  return parseKvDefaults(text, path);
}
