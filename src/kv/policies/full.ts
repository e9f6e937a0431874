/** FullKV: keeps every token (the reference all others are measured against). */
import { keepEverything, type KvPolicy, type KvPolicyOptions } from "../policy.ts";

/** Creates the FullKV policy. */
export function fullPolicy(options: KvPolicyOptions): KvPolicy {
  return { ...keepEverything("full", options), prunes: false };
}
