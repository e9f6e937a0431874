/**
 * R-KV (Cai et al., arXiv 2505.24133): decode-time compression for reasoning models that keeps tokens that are
 * both important and not redundant.
 *
 * - Importance: attention from the latest queries. The attention pass keeps S ← γ·S + attention (summed over
 *   query heads) with γ = 1 − 1/α, a decayed stand-in for the mean over the last α = 8 queries of the paper's
 *   observation window (the pass keeps one running score per token, not a window of them); at prefill the
 *   last W prompt queries score the prompt, as for SnapKV. Max-pooled along tokens (kernel 7).
 * - Redundancy: per KV head, the mean cosine similarity of a token's key to the other cached keys, computed on
 *   the GPU before the round's readback (wgsl/kv_redundancy.wgsl), where each token's newest near-duplicate
 *   (cosine > `rkvThreshold`) is spared, so repeated content keeps its newest copy; softmaxed over candidates.
 * - Selection per layer: sinks and the recent window (`recentRatio` of the budget, as Lethe's) are kept; the
 *   rest of the round's target goes to the highest λ·importance − (1 − λ)·redundancy (`rkvLambda`).
 *   One token set per layer, shared by its KV heads: redundancy is averaged over heads (the paper selects per
 *   head).
 * - Rounds: whenever the next append would pass the budget in a layer, every layer is cut to budget − B
 *   (B = min(8, budget/4): the paper's buffer of newly generated tokens, scaled to small budgets), so a layer
 *   never holds more than the budget.
 */
import {
  keepEverything,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { keepList, partitionSlots, rkvScores, topSlots } from "../select.ts";
import { letheRecent } from "./lethe.ts";
import { effectiveWindow } from "./snapkv.ts";

/** α: the observation window of decode queries that importance stands for. */
export const RKV_OBSERVATION = 8;
/** Max-pool kernel along tokens applied to importance (the paper's). */
export const RKV_POOL = 7;

/** B: tokens appended between rounds (a round cuts each layer to budget − B). */
export function rkvBuffer(options: KvPolicyOptions): number {
  return Math.max(1, Math.min(RKV_OBSERVATION, Math.floor(options.budget / 4)));
}

/**
 * The recent window R-KV protects: Lethe's share of the budget, at most what the round target leaves beside the
 * sinks (at least 1), so that a round always brings a layer back within its budget.
 */
export function rkvRecent(options: KvPolicyOptions): number {
  return Math.max(1, Math.min(letheRecent(options), options.budget - rkvBuffer(options) - options.sink));
}

/** One R-KV decision: every layer longer than `target` cut to `target` slots (protected ones first). */
export function rkvDecide(layers: LayerView[], options: KvPolicyOptions, target: number): PruneDecision {
  const recent = rkvRecent(options);
  return {
    keep: layers.map((l, i) => {
      if (l.len <= target) return null;
      if (!l.redundancy) {
        throw new Error(
          `rkv: layer ${i} reached its round without key redundancy (the round's readback computes it when ` +
            `KvPolicy.keyRedundancy is set)`,
        );
      }
      const part = partitionSlots(l.positions, l.len, options.sink, recent);
      const keepN = Math.max(0, target - part.protectedSlots.length);
      if (keepN >= part.candidates.length) return null;
      const s = rkvScores(l.scores, l.redundancy, l.len, part.candidates, options.rkvLambda, RKV_POOL);
      return keepList(part.protectedSlots, topSlots(part.candidates, s, keepN));
    }),
  };
}

/** Creates the R-KV policy. */
export function rkvPolicy(options: KvPolicyOptions): KvPolicy {
  const buffer = rkvBuffer(options);
  const recent = rkvRecent(options);
  const target = options.budget - buffer;
  return {
    ...keepEverything("rkv", options),
    decodeGamma: 1 - 1 / RKV_OBSERVATION,
    prefillQueries: effectiveWindow(options),
    keyRedundancy: options.rkvThreshold,
    roundHeadroom: buffer,
    recentWindow: () => recent,
    steadyTokens: () => options.budget,
    reserveTokens: () => options.budget + 16,
    // A prompt past the budget is cut like a decode round; one within it waits for decode to fill the budget.
    afterPrefill: (layers: LayerView[]): PruneDecision =>
      layers.some((l) => l.len > options.budget)
        ? rkvDecide(layers, options, target)
        : { keep: layers.map(() => null) },
    wantsRound: (_step: number, lens: number[]): boolean => lens.some((n) => n + 1 > options.budget),
    mayRoundEarly: (_step: number, lens: number[]): boolean => lens.some((n) => n > target),
    round: (_step: number, layers: LayerView[]): PruneDecision => rkvDecide(layers, options, target),
  };
}
