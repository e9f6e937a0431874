/**
 * SnapKV: compresses the prompt only. The last W prompt queries score every prompt token; the scores are
 * average-pooled along tokens (kernel 7) and the top (budget − W) plus the window are kept. Decode appends
 * without eviction.
 */
import {
  keepEverything,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { avgPool1d, capLayers } from "../select.ts";

/** Observation window actually used: at most half the budget, so small budgets still keep scored tokens. */
export function effectiveWindow(options: KvPolicyOptions): number {
  return Math.max(1, Math.min(options.window, Math.floor(options.budget / 2)));
}

/** Prompt compression shared by SnapKV and PyramidKV: sinks + window + top `capOf(layer)` pooled scores. */
export function snapCompress(
  layers: LayerView[],
  options: KvPolicyOptions,
  capOf: (layer: number) => number,
): PruneDecision {
  return { keep: capLayers(layers, capOf, options.sink, effectiveWindow(options), (s) => avgPool1d(s, 7)) };
}

/** Creates the SnapKV policy. */
export function snapkvPolicy(options: KvPolicyOptions): KvPolicy {
  const window = effectiveWindow(options);
  return {
    ...keepEverything("snapkv", options),
    prefillQueries: window,
    roundHeadroom: 16,
    recentWindow: () => window,
    afterPrefill: (layers: LayerView[]): PruneDecision => snapCompress(layers, options, () => options.budget),
  };
}
