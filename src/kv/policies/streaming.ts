/** StreamingLLM: the first `sink` tokens plus the most recent ones; no scores. */
import {
  keepAll,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { keepList, partitionSlots } from "../select.ts";

/** Creates the StreamingLLM policy: per layer, sinks + (budget − sinks) most recent tokens. */
export function streamingPolicy(options: KvPolicyOptions): KvPolicy {
  const recent = options.budget - options.sink;
  return {
    name: "streaming",
    options,
    decodeGamma: null,
    prefillQueries: null,
    roundHeadroom: 0,
    evictBy: "position",
    decodeCap: () => options.budget,
    recentWindow: () => recent,
    afterPrefill(layers: LayerView[]): PruneDecision {
      return {
        keep: layers.map((l) => {
          if (l.len <= options.budget) return null;
          return keepList(partitionSlots(l.positions, l.len, options.sink, recent).protectedSlots);
        }),
      };
    },
    wantsRound: () => false,
    round: (_step: number, layers: LayerView[]): PruneDecision => keepAll(layers.length),
  };
}
