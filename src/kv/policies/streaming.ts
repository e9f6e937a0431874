/** StreamingLLM: the first `sink` tokens plus the most recent ones; no scores. */
import {
  cappedReserve,
  keepEverything,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { capLayers } from "../select.ts";

/** Creates the StreamingLLM policy: per layer, sinks + (budget − sinks) most recent tokens. */
export function streamingPolicy(options: KvPolicyOptions): KvPolicy {
  const recent = options.budget - options.sink;
  return {
    ...keepEverything("streaming", options),
    evictBy: "position",
    decodeCap: () => options.budget,
    steadyTokens: () => options.budget,
    reserveTokens: () => cappedReserve(options.budget),
    recentWindow: () => recent,
    // Sinks + recent fill the whole budget, so no scores are consulted.
    afterPrefill: (layers: LayerView[]): PruneDecision => ({
      keep: capLayers(layers, () => options.budget, options.sink, recent),
    }),
  };
}
