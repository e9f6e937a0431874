/**
 * H2O: accumulated attention (no decay); heavy hitters fill half the budget, the recent window the other half.
 * During decode the lowest-scoring unprotected token is evicted on the GPU whenever an append would pass the budget.
 */
import {
  cappedReserve,
  keepEverything,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { capLayers } from "../select.ts";

/** Creates the H2O policy. */
export function h2oPolicy(options: KvPolicyOptions): KvPolicy {
  const recent = Math.floor(options.budget / 2);
  return {
    ...keepEverything("h2o", options),
    decodeGamma: 1,
    prefillQueries: "all",
    decodeCap: () => options.budget,
    steadyTokens: () => options.budget,
    reserveTokens: () => cappedReserve(options.budget),
    recentWindow: () => recent,
    afterPrefill: (layers: LayerView[]): PruneDecision => ({
      keep: capLayers(layers, () => options.budget, options.sink, recent),
    }),
  };
}
