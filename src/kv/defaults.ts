/**
 * A model's own KV defaults: `kv_defaults.json` beside its config.json.
 *
 * The paper leaves Lethe's hyperparameters open, and the evaluation finds that the best recent window depends
 * on the model: one that copies each step from a recent stretch of its thought needs a larger window than one
 * that looks far back. A model directory may therefore name its own defaults, which apply wherever a setting
 * is not given (CLI flags, request fields and library options still win). The keys are the request
 * extensions' names (the schema in options.ts; `kv_policy` is not one):
 *
 *   {"kv_recent_ratio": 0.7, "lethe_gamma": 0.9, "note": "why, and how it was chosen"}
 */
import { type ModelSource, readSourceText, resolveModelSource, sourcePath } from "../io/source.ts";
import type { KvPolicyOptions } from "./policy.ts";
import {
  checkKvOptions,
  checkKvValue,
  KV_SETTINGS,
  KvOptionError,
  type KvSetting,
  type KvSettings,
  resolveKvOptions,
  setKvSetting,
} from "./options.ts";

/** The file a model directory may hold its KV defaults in. */
export const KV_DEFAULTS_FILE = "kv_defaults.json";

/** The settings a file may set, by key (the schema's; the policy is not one of them). */
const BY_KEY: ReadonlyMap<string, KvSetting> = new Map(
  KV_SETTINGS.filter((s) => s.fileKey !== null).map((s) => [s.fileKey!, s]),
);

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
  const accepted = `accepted: ${[...BY_KEY.keys()].join(", ")}, note`;
  const given: KvSettings = {};
  try {
    for (const [key, value] of Object.entries(raw)) {
      if (key === "note") continue;
      const s = BY_KEY.get(key);
      if (!s) {
        const why = KV_SETTINGS.some((x) => x.field === key)
          ? " (a run chooses its policy, not the model)"
          : "";
        throw new Error(`${where}: unknown key "${key}"${why}; ${accepted}`);
      }
      setKvSetting(given, s, checkKvValue(s, value));
    }
    const out = resolveKvOptions(given);
    // The file's settings are defaults for every policy, so budget and sink must suit the pruning ones.
    checkKvOptions(out);
    return out;
  } catch (e) {
    if (!(e instanceof KvOptionError)) throw e;
    // The flag says which setting it is; the key, what to fix in the file.
    const message = e.format((s) => `"${s.fileKey ?? s.field}"`);
    throw new Error(`${where}: invalid KV option: ${e.setting.flag}: ${message}`, { cause: e });
  }
}

/** A model's KV defaults: its kv_defaults.json (a source's, or a local directory's) over the project's. */
export async function loadKvDefaults(source: string | ModelSource): Promise<KvPolicyOptions> {
  const src = resolveModelSource(source);
  const path = sourcePath(src, KV_DEFAULTS_FILE);
  const text = await readSourceText(src, KV_DEFAULTS_FILE);
  return parseKvDefaults(text ?? "{}", path);
}
