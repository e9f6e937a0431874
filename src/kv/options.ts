/**
 * KV options: what a caller may set (any subset), and how the rest is filled in from defaults (the project's,
 * or a model's kv_defaults.json).
 */
import { DEFAULT_KV_OPTIONS, type KvPolicyOptions, type LetheOptions, type PolicyName } from "./policy.ts";

/** KV policy selection for a generation. */
export interface KvOptions {
  policy: PolicyName;
  budget: number;
  sink: number;
  recentRatio: number;
  window: number;
  lethe: LetheOptions;
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
  };
}
