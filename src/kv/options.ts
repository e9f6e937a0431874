/**
 * KV options: what a caller may set (any subset), how the rest is filled in from defaults (the project's, or a
 * model's kv_defaults.json), and the one schema of the settings that every front end derives from: the CLI
 * flags and their help, the server's request fields, kv_defaults.json keys and the library's validation.
 *
 * policy.ts imports this module (validateKvOptions), so nothing here reads policy.ts values while the module
 * is evaluated: whichever of the two loads first, the other's constants may not be initialised yet.
 */
import { KV_DTYPES, type KvDtype } from "../ops/kv_layout.ts";
import {
  DEFAULT_KV_OPTIONS,
  type KvPolicyOptions,
  type LetheOptions,
  POLICY_NAMES,
  type PolicyName,
} from "./policy.ts";

/** KV policy selection for a generation. */
export interface KvOptions {
  /** Which policy manages the cache. */
  policy: PolicyName;
  /** Tokens per layer on average; the total budget is budget × layers. */
  budget: number;
  /** Attention sinks: positions below this are always kept. */
  sink: number;
  /** Recent window as a fraction of the per-layer budget. */
  recentRatio: number;
  /** Observation window: how many last prompt queries score the prompt (SnapKV, PyramidKV, Lethe). */
  window: number;
  /** Lethe's own hyperparameters. */
  lethe: LetheOptions;
  /** R-KV's λ (importance weight). */
  rkvLambda: number;
  /** R-KV's near-duplicate cosine threshold. */
  rkvThreshold: number;
  /** How K and V are stored: f16 (default), f32 or int8 with per-token, per-head scales. */
  dtype: KvDtype;
}

/** KV settings as callers give them: any subset, Lethe's too; the rest come from the defaults. */
export type KvSettings = Partial<Omit<KvOptions, "lethe">> & { lethe?: Partial<LetheOptions> };

/** Partial KV options over `defaults` (the documented ones, or a model's `kv_defaults.json`). */
export function resolveKvOptions(
  kv: KvSettings = {},
  defaults: KvPolicyOptions = DEFAULT_KV_OPTIONS,
): KvPolicyOptions {
  return {
    budget: kv.budget ?? defaults.budget,
    sink: kv.sink ?? defaults.sink,
    recentRatio: kv.recentRatio ?? defaults.recentRatio,
    window: kv.window ?? defaults.window,
    lethe: { ...defaults.lethe, ...kv.lethe },
    rkvLambda: kv.rkvLambda ?? defaults.rkvLambda,
    rkvThreshold: kv.rkvThreshold ?? defaults.rkvThreshold,
    dtype: kv.dtype ?? defaults.dtype,
  };
}

/** A KV setting's library path: a key of {@link KvOptions}, or `lethe.` and a key of {@link LetheOptions}. */
export type KvSettingName =
  | "policy"
  | "dtype"
  | "budget"
  | "sink"
  | "recentRatio"
  | "window"
  | "lethe.tau"
  | "lethe.segments"
  | "lethe.gamma"
  | "lethe.interval"
  | "lethe.adaptiveRecent"
  | "rkvLambda"
  | "rkvThreshold";

/** The KV flags as `node:util` parseArgs names them (no leading dashes). */
export type KvFlagName =
  | "kv"
  | "kv-dtype"
  | "kv-budget"
  | "kv-sink"
  | "kv-recent-ratio"
  | "kv-window"
  | "lethe-tau"
  | "lethe-segments"
  | "lethe-gamma"
  | "lethe-interval"
  | "lethe-adaptive-recent"
  | "rkv-lambda"
  | "rkv-threshold";

/** What a setting takes: an integer, any finite number, a policy name or a KV storage format. */
export type KvSettingType = "integer" | "number" | "policy" | "dtype";

/** A setting's value: a number, a policy name or a KV storage format. */
export type KvSettingValue = number | PolicyName | KvDtype;

/** One end of a numeric setting's range. */
export interface KvBound {
  /** The bound itself. */
  readonly value: number;
  /** Whether `value` itself is allowed. */
  readonly inclusive: boolean;
}

/** One KV setting, as every front end names it. */
export interface KvSetting {
  /** Library path (`budget`, `lethe.tau`); library errors call it `kv.<name>`. */
  readonly name: KvSettingName;
  /** CLI flag of `deno task generate` and `deno task serve`. */
  readonly flag: `--${KvFlagName}`;
  /** Request field of the server's OpenAI extensions. */
  readonly field: string;
  /** kv_defaults.json key (the request field), or null where a model's file may not set it. */
  readonly fileKey: string | null;
  /** What values it takes. */
  readonly type: KvSettingType;
  /** Lower bound (numeric settings; null for the policy). */
  readonly min: KvBound | null;
  /** Upper bound (numeric settings; null for the policy). */
  readonly max: KvBound | null;
  /** The documented default ({@link DEFAULT_KV_OPTIONS}; `full` for the policy). */
  readonly default: KvSettingValue;
  /** Placeholder of the flag's value in help text. */
  readonly metavar: string;
  /** One line for help text. */
  readonly doc: string;
}

/** The policy when none is given. */
export const DEFAULT_POLICY: PolicyName = "full";

/** Non-full policies keep the sinks plus at least this many slots (createPolicy has always required it). */
export const KV_SINK_MARGIN = 2;

// Integers stay well inside exact float range and any real allocation; the same cap the server always had.
const INT_MAX: KvBound = { value: 1e9, inclusive: true };
const at = (value: number, inclusive = true): KvBound => ({ value, inclusive });

type Numeric = Exclude<KvSettingName, "policy" | "dtype">;

/** The choices of a setting that takes a name (null for numeric settings). */
function choicesOf(s: KvSetting): readonly string[] | null {
  return s.type === "policy" ? POLICY_NAMES : s.type === "dtype" ? KV_DTYPES : null;
}

/** How each numeric setting is read from full options and written into partial settings. */
const ACCESS: Record<
  Numeric,
  { get: (o: KvPolicyOptions) => number; put: (k: KvSettings, x: number) => void }
> = {
  budget: { get: (o) => o.budget, put: (k, x) => (k.budget = x) },
  sink: { get: (o) => o.sink, put: (k, x) => (k.sink = x) },
  recentRatio: { get: (o) => o.recentRatio, put: (k, x) => (k.recentRatio = x) },
  window: { get: (o) => o.window, put: (k, x) => (k.window = x) },
  "lethe.tau": { get: (o) => o.lethe.tau, put: (k, x) => (k.lethe = { ...k.lethe, tau: x }) },
  "lethe.segments": { get: (o) => o.lethe.segments, put: (k, x) => (k.lethe = { ...k.lethe, segments: x }) },
  "lethe.gamma": { get: (o) => o.lethe.gamma, put: (k, x) => (k.lethe = { ...k.lethe, gamma: x }) },
  "lethe.interval": { get: (o) => o.lethe.interval, put: (k, x) => (k.lethe = { ...k.lethe, interval: x }) },
  "lethe.adaptiveRecent": {
    get: (o) => o.lethe.adaptiveRecent,
    put: (k, x) => (k.lethe = { ...k.lethe, adaptiveRecent: x }),
  },
  rkvLambda: { get: (o) => o.rkvLambda, put: (k, x) => (k.rkvLambda = x) },
  rkvThreshold: { get: (o) => o.rkvThreshold, put: (k, x) => (k.rkvThreshold = x) },
};

/** A schema entry whose default is read when asked for (see the module doc on the import cycle). */
function setting(spec: Omit<KvSetting, "default">): KvSetting {
  return {
    ...spec,
    get default(): KvSettingValue {
      if (spec.name === "policy") return DEFAULT_POLICY;
      if (spec.name === "dtype") return DEFAULT_KV_OPTIONS.dtype;
      return ACCESS[spec.name].get(DEFAULT_KV_OPTIONS);
    },
  };
}

/** Every KV setting, once, in help order. */
export const KV_SETTINGS: readonly KvSetting[] = [
  setting({
    name: "policy",
    flag: "--kv",
    field: "kv_policy",
    // A model's defaults tune a policy's settings; which policy runs is each run's choice.
    fileKey: null,
    type: "policy",
    min: null,
    max: null,
    metavar: "POLICY",
    doc: "KV cache policy",
  }),
  setting({
    name: "dtype",
    flag: "--kv-dtype",
    field: "kv_dtype",
    fileKey: "kv_dtype",
    type: "dtype",
    min: null,
    max: null,
    metavar: "DTYPE",
    doc: "how K/V are stored (int8: per-token, per-head scales)",
  }),
  setting({
    name: "budget",
    flag: "--kv-budget",
    field: "kv_budget",
    fileKey: "kv_budget",
    type: "integer",
    min: at(1),
    max: INT_MAX,
    metavar: "N",
    doc: "tokens per layer on average; total budget N × layers",
  }),
  setting({
    name: "sink",
    flag: "--kv-sink",
    field: "kv_sink",
    fileKey: "kv_sink",
    type: "integer",
    min: at(0),
    max: INT_MAX,
    metavar: "N",
    doc: "attention-sink tokens always kept",
  }),
  setting({
    name: "recentRatio",
    flag: "--kv-recent-ratio",
    field: "kv_recent_ratio",
    fileKey: "kv_recent_ratio",
    type: "number",
    min: at(0),
    max: at(1, false),
    metavar: "R",
    doc: "recent window as a fraction of the budget, Lethe",
  }),
  setting({
    name: "window",
    flag: "--kv-window",
    field: "kv_window",
    fileKey: "kv_window",
    type: "integer",
    min: at(1),
    max: INT_MAX,
    metavar: "W",
    doc: "observation window of prompt queries, SnapKV/PyramidKV/Lethe",
  }),
  setting({
    name: "lethe.tau",
    flag: "--lethe-tau",
    field: "lethe_tau",
    fileKey: "lethe_tau",
    type: "number",
    // τ ≤ 1 would call every segment boundary a breakpoint; a factor past 1e6 is never reached by attention.
    min: at(1, false),
    max: at(1e6),
    metavar: "T",
    doc: "attention drop factor of the breakpoint",
  }),
  setting({
    name: "lethe.segments",
    flag: "--lethe-segments",
    field: "lethe_segments",
    fileKey: "lethe_segments",
    type: "integer",
    min: at(1),
    max: INT_MAX,
    metavar: "D",
    doc: "segments the sorted scores are cut into",
  }),
  setting({
    name: "lethe.gamma",
    flag: "--lethe-gamma",
    field: "lethe_gamma",
    fileKey: "lethe_gamma",
    type: "number",
    min: at(0, false),
    max: at(1),
    metavar: "G",
    doc: "RASR score decay per step",
  }),
  setting({
    name: "lethe.interval",
    flag: "--lethe-interval",
    field: "lethe_interval",
    fileKey: "lethe_interval",
    type: "integer",
    min: at(1),
    max: INT_MAX,
    metavar: "P",
    doc: "decode steps between pruning rounds",
  }),
  setting({
    name: "lethe.adaptiveRecent",
    flag: "--lethe-adaptive-recent",
    field: "lethe_adaptive_recent",
    fileKey: "lethe_adaptive_recent",
    type: "number",
    // A share of attention mass: 0 turns it off (the fixed --kv-recent-ratio window).
    min: at(0),
    max: at(1),
    metavar: "F",
    doc: "recent window per layer holding share F of the non-top attention (0 = off)",
  }),
  setting({
    name: "rkvLambda",
    flag: "--rkv-lambda",
    field: "rkv_lambda",
    fileKey: "rkv_lambda",
    type: "number",
    min: at(0),
    max: at(1),
    metavar: "L",
    doc: "R-KV: weight of importance against redundancy",
  }),
  setting({
    name: "rkvThreshold",
    flag: "--rkv-threshold",
    field: "rkv_threshold",
    fileKey: "rkv_threshold",
    type: "number",
    // A cosine: above 1 nothing is a near-duplicate, at −1 everything is.
    min: at(-1),
    max: at(1),
    metavar: "C",
    doc: "R-KV: key cosine above which tokens are near-duplicates",
  }),
];

/** The schema entry of a setting. */
export function kvSetting(name: KvSettingName): KvSetting {
  return KV_SETTINGS.find((s) => s.name === name)!;
}

/** What a setting accepts, as error messages say it: `an integer in [1, 1000000000]`, `one of full, …`. */
export function describeKvSetting(s: KvSetting): string {
  const choices = choicesOf(s);
  if (choices) return `one of ${choices.join(", ")}`;
  const lo = s.min!, hi = s.max!;
  const range = `${lo.inclusive ? "[" : "("}${lo.value}, ${hi.value}${hi.inclusive ? "]" : ")"}`;
  return `${s.type === "integer" ? "an integer" : "a number"} in ${range}`;
}

/**
 * What is wrong: `type` (not a number, not an integer, not a policy name), `range` (outside the bounds or
 * not a known policy), `relation` (budget and sink together).
 */
export type KvProblem = "type" | "range" | "relation";

/** How a front end names a setting in its messages: its flag, request field, file key or library path. */
export type KvNamer = (s: KvSetting) => string;

/** The library's name of a setting: `kv.budget`, `kv.lethe.tau`. */
export const kvLibraryName: KvNamer = (s) => `kv.${s.name}`;

function show(v: unknown): string {
  const text = typeof v === "number" ? String(v) : JSON.stringify(v) ?? String(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/**
 * A KV setting that is wrong. It carries the setting, so each front end words it its own way with
 * {@link KvOptionError.format}: the CLI names the flag, the server the request field (and sets `param`), a
 * kv_defaults.json error the key. The message itself is the library's (`invalid KV option: kv.budget …`).
 */
export class KvOptionError extends Error {
  /** The setting to blame (for a relation: the budget). */
  readonly setting: KvSetting;
  /** The value as given: a CLI argument's text, a JSON value, a library number. */
  readonly value: unknown;
  /** What is wrong with it. */
  readonly problem: KvProblem;
  /** For a relation: the other setting and its value. */
  readonly other: { readonly setting: KvSetting; readonly value: number } | null;

  /** The message is the library's wording; `other` only for a relation between two settings. */
  constructor(
    setting: KvSetting,
    value: unknown,
    problem: KvProblem,
    other: { readonly setting: KvSetting; readonly value: number } | null = null,
  ) {
    super();
    this.name = "KvOptionError";
    this.setting = setting;
    this.value = value;
    this.problem = problem;
    this.other = other;
    this.message = `invalid KV option: ${this.format(kvLibraryName)}`;
  }

  /** The problem with every setting named by `name` (no prefix). */
  format(name: KvNamer): string {
    const s = name(this.setting);
    if (this.other) {
      const o = name(this.other.setting);
      return `${s} must exceed ${o} by at least ${KV_SINK_MARGIN}, got ${show(this.value)} with ${o} ${
        show(this.other.value)
      }`;
    }
    return `${s} must be ${describeKvSetting(this.setting)}, got ${show(this.value)}`;
  }
}

/** Checks `x`; errors report `given` (what the caller wrote, e.g. a CLI argument's text). */
function verify(s: KvSetting, x: unknown, given: unknown): KvSettingValue {
  const choices = choicesOf(s);
  if (choices) {
    if (typeof x !== "string") throw new KvOptionError(s, given, "type");
    if (!choices.includes(x)) throw new KvOptionError(s, given, "range");
    return x as PolicyName | KvDtype;
  }
  if (typeof x !== "number" || !Number.isFinite(x) || (s.type === "integer" && !Number.isInteger(x))) {
    throw new KvOptionError(s, given, "type");
  }
  const lo = s.min!, hi = s.max!;
  if (
    x < lo.value || (x === lo.value && !lo.inclusive) || x > hi.value || (x === hi.value && !hi.inclusive)
  ) {
    throw new KvOptionError(s, given, "range");
  }
  return x;
}

/** Checks one value (a JSON value, a library option) against its setting; throws {@link KvOptionError}. */
export function checkKvValue(s: KvSetting, value: unknown): KvSettingValue {
  return verify(s, value, value);
}

/** Parses a setting from text (a CLI argument); errors quote the text. */
export function parseKvText(s: KvSetting, text: string): KvSettingValue {
  if (choicesOf(s)) return verify(s, text, text);
  return verify(s, text.trim() === "" ? NaN : Number(text), text);
}

/** Writes a checked value into partial settings (Lethe's go into a copy of `kv.lethe`). */
export function setKvSetting(kv: KvSettings, s: KvSetting, value: KvSettingValue): void {
  if (s.name === "policy") kv.policy = value as PolicyName;
  else if (s.name === "dtype") kv.dtype = value as KvDtype;
  else ACCESS[s.name].put(kv, value as number);
}

/**
 * Checks full options: every setting's range and, unless the policy is `full` (which keeps everything), that
 * the budget exceeds the sinks by {@link KV_SINK_MARGIN}. Throws {@link KvOptionError}.
 */
export function checkKvOptions(o: KvPolicyOptions, policy?: PolicyName): void {
  for (const s of KV_SETTINGS) {
    if (s.name === "dtype") checkKvValue(s, o.dtype);
    else if (s.name !== "policy") checkKvValue(s, ACCESS[s.name].get(o));
  }
  if (policy !== "full" && o.sink + KV_SINK_MARGIN > o.budget) {
    throw new KvOptionError(kvSetting("budget"), o.budget, "relation", {
      setting: kvSetting("sink"),
      value: o.sink,
    });
  }
}

/** parseArgs options of every KV flag: each takes a string. */
export const KV_FLAG_OPTIONS: { readonly [K in KvFlagName]: { readonly type: "string" } } = Object
  .fromEntries(
    KV_SETTINGS.map((s) => [s.flag.slice(2), { type: "string" }]),
  ) as { [K in KvFlagName]: { type: "string" } };

/** The KV flags' values as parseArgs returns them (absent when not given); other flags may be there too. */
export type KvFlagValues = { readonly [K in KvFlagName]?: string };

/**
 * The KV settings given as flags (parseArgs values; the rest stay unset, for kv_defaults.json and the
 * defaults to fill). Throws {@link KvOptionError}; the budget/sink relation is left to the caller, which
 * knows the model's defaults.
 */
export function kvSettingsFromFlags(values: KvFlagValues): KvSettings {
  const kv: KvSettings = {};
  for (const s of KV_SETTINGS) {
    const text = values[s.flag.slice(2) as KvFlagName];
    if (text !== undefined) setKvSetting(kv, s, parseKvText(s, text));
  }
  return kv;
}

/** Help lines of the KV flags: two spaces, flag and metavar padded to `width`, the doc and the default. */
export function kvHelpLines(width: number): string[] {
  return KV_SETTINGS.map((s) => {
    const choices = choicesOf(s);
    const doc = choices ? `${s.doc}: ${choices.join(" | ")}` : s.doc;
    return `  ${`${s.flag} ${s.metavar}`.padEnd(width - 1)} ${doc} (default ${s.default})`;
  });
}
