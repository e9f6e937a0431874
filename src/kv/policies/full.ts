/** FullKV: keeps every token (the reference all others are measured against). */
import {
  keepAll,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";

/** Creates the FullKV policy. */
export function fullPolicy(options: KvPolicyOptions): KvPolicy {
  return {
    name: "full",
    options,
    decodeGamma: null,
    prefillQueries: null,
    roundHeadroom: 0,
    evictBy: "score",
    decodeCap: () => null,
    recentWindow: () => 0,
    afterPrefill: (layers: LayerView[]): PruneDecision => keepAll(layers.length),
    wantsRound: () => false,
    round: (_step: number, layers: LayerView[]): PruneDecision => keepAll(layers.length),
  };
}
