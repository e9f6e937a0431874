/**
 * PyramidKV: SnapKV's prompt scoring with per-layer budgets falling linearly with depth (β = 20). For a fair
 * decode-time comparison the same per-layer budgets act as caps during decode, with H2O-style accumulated
 * scores choosing the victim.
 */
import {
  cappedReserve,
  keepEverything,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { pyramidBudgets } from "../select.ts";
import { effectiveWindow, snapCompress } from "./snapkv.ts";

/** Creates the PyramidKV policy. */
export function pyramidkvPolicy(options: KvPolicyOptions): KvPolicy {
  const window = effectiveWindow(options);
  const budgets = new Map<number, number[]>();
  const capOf = (layer: number, layers: number): number => {
    let b = budgets.get(layers);
    if (!b) budgets.set(layers, b = pyramidBudgets(options.budget, window, layers));
    // Sinks and the window are always kept on top of the layer's pyramid share.
    return Math.max(b[layer] + window, options.sink + window + 1);
  };
  return {
    ...keepEverything("pyramidkv", options),
    decodeGamma: 1,
    prefillQueries: window,
    decodeCap: capOf,
    steadyTokens: (layers: number) =>
      Math.max(options.budget, ...Array.from({ length: layers }, (_, l) => capOf(l, layers))),
    reserveTokens: () => cappedReserve(options.budget),
    recentWindow: () => window,
    afterPrefill: (layers: LayerView[]): PruneDecision =>
      snapCompress(layers, options, (i) => capOf(i, layers.length)),
  };
}
