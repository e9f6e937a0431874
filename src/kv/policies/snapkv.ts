/**
 * SnapKV: compresses the prompt only. The last W prompt queries score every prompt token; the scores are
 * average-pooled along tokens (kernel 7) and the top (budget − W) plus the window are kept. Decode appends
 * without eviction.
 */
import {
  keepAll,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { avgPool1d, keepList, partitionSlots, topSlots } from "../select.ts";

/** Observation window actually used: at most half the budget, so small budgets still keep scored tokens. */
export function effectiveWindow(options: KvPolicyOptions): number {
  return Math.max(1, Math.min(options.window, Math.floor(options.budget / 2)));
}

/** Prompt compression shared by SnapKV and PyramidKV: sinks + window + top `keep(layer)` pooled scores. */
export function snapCompress(
  layers: LayerView[],
  options: KvPolicyOptions,
  capOf: (layer: number) => number,
): PruneDecision {
  const window = effectiveWindow(options);
  return {
    keep: layers.map((l, i) => {
      const cap = capOf(i);
      if (l.len <= cap) return null;
      const part = partitionSlots(l.positions, l.len, options.sink, window);
      const pooled = avgPool1d(l.scores.subarray(0, l.len), 7);
      return keepList(
        part.protectedSlots,
        topSlots(part.candidates, pooled, cap - part.protectedSlots.length),
      );
    }),
  };
}

/** Creates the SnapKV policy. */
export function snapkvPolicy(options: KvPolicyOptions): KvPolicy {
  const window = effectiveWindow(options);
  return {
    name: "snapkv",
    options,
    decodeGamma: null,
    prefillQueries: window,
    roundHeadroom: 16,
    evictBy: "score",
    decodeCap: () => null,
    recentWindow: () => window,
    afterPrefill: (layers: LayerView[]): PruneDecision => snapCompress(layers, options, () => options.budget),
    wantsRound: () => false,
    round: (_step: number, layers: LayerView[]): PruneDecision => keepAll(layers.length),
  };
}
