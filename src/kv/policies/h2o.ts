/**
 * H2O: accumulated attention (no decay); heavy hitters fill half the budget, the recent window the other half.
 * During decode the lowest-scoring unprotected token is evicted on the GPU whenever an append would pass the budget.
 */
import {
  keepAll,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { keepList, partitionSlots, topSlots } from "../select.ts";

/** Creates the H2O policy. */
export function h2oPolicy(options: KvPolicyOptions): KvPolicy {
  const recent = Math.floor(options.budget / 2);
  return {
    name: "h2o",
    options,
    decodeGamma: 1,
    prefillQueries: "all",
    roundHeadroom: 0,
    evictBy: "score",
    decodeCap: () => options.budget,
    recentWindow: () => recent,
    afterPrefill(layers: LayerView[]): PruneDecision {
      return {
        keep: layers.map((l) => {
          if (l.len <= options.budget) return null;
          const part = partitionSlots(l.positions, l.len, options.sink, recent);
          const heavy = options.budget - part.protectedSlots.length;
          return keepList(part.protectedSlots, topSlots(part.candidates, l.scores, heavy));
        }),
      };
    },
    wantsRound: () => false,
    round: (_step: number, layers: LayerView[]): PruneDecision => keepAll(layers.length),
  };
}
