/**
 * Lethe: layer- and time-adaptive pruning.
 *
 * Temporal (RASR): the attention pass keeps decayed scores S ← γ·S + attention (summed over query heads).
 * Spatial (layerwise sparsity-aware shrinking): at each pruning round every layer's candidate scores (all but
 * sinks and the recent window) get a Hoyer sparsity H; the shared pool of the total budget is split across
 * layers in proportion to (1 − H) + ε, so dense layers keep more. Inside a layer eligible for shrinking
 * (length ≥ its trigger) the sorted scores are cut into D segments and the first boundary where attention
 * has fallen by τ caps the layer's first share; a flat layer (no breakpoint) is not shrunk this round and
 * its trigger doubles, delaying its next shrink. Pool left over by the caps is then shared by weight among
 * all layers, so each round keeps exactly its target.
 *
 * Rounds: whenever the next step's appends would pass the total budget (budget × layers), and — once the
 * cache has been full — every `interval` steps while it holds more than the round target. Each round prunes the
 * total to budget × layers − interval × layers (at least the protected tokens), so the total budget is never
 * exceeded, and nothing is pruned before the cache first fills.
 *
 * Recent window: by default every layer protects the `round(recentRatio × budget)` newest positions. With
 * `lethe.adaptiveRecent` F > 0 each layer's window is chosen at every round (and after prefill) from where its
 * attention mass lies by token age ({@link adaptiveRecent} in select.ts): set aside the layer's
 * `budget − sink − round(recentRatio × budget)` highest-scoring non-sink tokens (what the fixed split would keep
 * by score); the window is the smallest r whose r newest positions hold share F of the remaining score mass,
 * clamped to [min, max] with min = max(1, round(0.1 × budget)) and max = round(0.9 × budget), the latter at most
 * budget − P′ − sink (P′ the effective interval, {@link letheInterval}: the round's per-layer target less the
 * sinks) and at least min. A layer whose attention beyond its top tokens sits on the newest tokens gets a
 * short window and leaves its slots to scores; one reading a lap back gets a long one. The min is what every
 * round guarantees (`recentWindow`).
 */
import {
  keepEverything,
  type KvPolicy,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../policy.ts";
import { effectiveWindow } from "./snapkv.ts";
import {
  adaptiveRecent,
  hoyer,
  keepList,
  partitionSlots,
  sortedScores,
  splitPool,
  tauBreakpoint,
  topSlots,
} from "../select.ts";

/** A small floor on every layer's weight so that a perfectly sparse layer still gets a share. */
const WEIGHT_FLOOR = 0.05;

/** Effective round interval: at most a quarter of the budget, so rounds leave room to absorb the next steps. */
export function letheInterval(options: KvPolicyOptions): number {
  return Math.max(1, Math.min(options.lethe.interval, Math.floor(options.budget / 4)));
}

/** The recent window Lethe protects per layer. */
export function letheRecent(options: KvPolicyOptions): number {
  return Math.max(1, Math.round(options.recentRatio * options.budget));
}

/** Shares of the budget that bound the adaptive recent window (see the module doc). */
export const ADAPTIVE_RECENT_SHARES: { readonly min: number; readonly max: number } = { min: 0.1, max: 0.9 };

/**
 * The adaptive recent window's bounds and the number of top tokens it sets aside (see the module doc);
 * null when `lethe.adaptiveRecent` is 0 (the fixed window).
 */
export function letheAdaptiveRange(
  options: KvPolicyOptions,
): { min: number; max: number; top: number } | null {
  if (!(options.lethe.adaptiveRecent > 0)) return null;
  const { budget, sink } = options;
  const min = Math.max(1, Math.round(ADAPTIVE_RECENT_SHARES.min * budget));
  const max = Math.max(
    min,
    Math.min(Math.round(ADAPTIVE_RECENT_SHARES.max * budget), budget - letheInterval(options) - sink),
  );
  return { min, max, top: Math.max(0, budget - sink - letheRecent(options)) };
}

/** Each layer's recent window at this round: the fixed one, or the adaptive one from its scores. */
export function letheRecents(layers: LayerView[], options: KvPolicyOptions): number[] {
  const range = letheAdaptiveRange(options);
  if (!range) return layers.map(() => letheRecent(options));
  return layers.map((l) =>
    adaptiveRecent(
      l.positions,
      l.scores,
      l.len,
      options.sink,
      range.top,
      options.lethe.adaptiveRecent,
      range.min,
      range.max,
    )
  );
}

/**
 * One Lethe pruning decision over all layers, to a total of `targetTotal` tokens.
 * `triggers` (per-layer shrink triggers) is updated in place.
 */
export function letheDecide(
  layers: LayerView[],
  options: KvPolicyOptions,
  targetTotal: number,
  triggers: number[],
): PruneDecision {
  const { sink } = options;
  const { tau, segments } = options.lethe;
  const recents = letheRecents(layers, options);
  const parts = layers.map((l, i) => partitionSlots(l.positions, l.len, sink, recents[i]));
  const protectedTotal = parts.reduce((s, p) => s + p.protectedSlots.length, 0);
  const hoyers: number[] = [];
  const caps: number[] = [];
  const weights: number[] = [];
  layers.forEach((l, i) => {
    const cand = parts[i].candidates;
    const candScores = Float32Array.from(cand, (s) => l.scores[s]);
    const h = hoyer(candScores);
    hoyers.push(h);
    weights.push(1 - h + WEIGHT_FLOOR);
    let cap = cand.length;
    if (l.len >= triggers[i] && cand.length > 1) {
      const k = tauBreakpoint(sortedScores(cand, l.scores), segments, tau);
      if (k === null) triggers[i] *= 2;
      else cap = k;
    }
    caps.push(cap);
  });
  const pool = Math.max(0, targetTotal - protectedTotal);
  const alloc = splitPool(pool, weights, caps);
  // The τ caps set priorities, not a ceiling on the total: what they leave unused goes back to every layer by
  // weight, so a round never keeps less than the target. (Pruning below the budget bought no peak memory and
  // cost fidelity: on stories260K mean KL against full at budget 128 fell from 2.18 to 1.46 with this.)
  const used = alloc.reduce((a, b) => a + b, 0);
  const room = layers.map((_, i) => parts[i].candidates.length - alloc[i]);
  splitPool(pool - used, weights, room).forEach((x, i) => alloc[i] += x);
  return {
    keep: layers.map((l, i) => {
      const keepN = alloc[i];
      if (keepN >= parts[i].candidates.length) return null;
      return keepList(parts[i].protectedSlots, topSlots(parts[i].candidates, l.scores, keepN));
    }),
    hoyer: hoyers,
    trigger: triggers.slice(),
    recent: recents,
  };
}

/** Creates the Lethe policy. */
export function lethePolicy(
  options: KvPolicyOptions,
  from: { triggers: number[]; lastRound: number; filled: boolean } = {
    triggers: [],
    lastRound: 0,
    filled: false,
  },
): KvPolicy {
  const interval = letheInterval(options);
  // What every round protects: the fixed window, or the adaptive one's minimum.
  const recent = letheAdaptiveRange(options)?.min ?? letheRecent(options);
  let triggers: number[] = from.triggers.slice();
  let lastRound = from.lastRound;
  let filled = from.filled;
  const ensureTriggers = (n: number) => {
    if (triggers.length !== n) triggers = new Array<number>(n).fill(options.budget);
  };
  const target = (n: number) => options.budget * n - interval * n;
  return {
    ...keepEverything("lethe", options),
    decodeGamma: options.lethe.gamma,
    prefillQueries: effectiveWindow(options),
    roundHeadroom: interval,
    recentWindow: () => recent,
    steadyTokens: () => options.budget + interval,
    // Rounds compact to below budget − interval per layer on average and leave `interval` slots of headroom,
    // so a layer rarely grows past budget + interval.
    reserveTokens: () => options.budget + interval + 16,
    afterPrefill(layers: LayerView[]): PruneDecision {
      ensureTriggers(layers.length);
      lastRound = 0;
      const total = layers.reduce((s, l) => s + l.len, 0);
      filled = total + layers.length > options.budget * layers.length;
      if (!filled) return { keep: layers.map(() => null) };
      return letheDecide(layers, options, target(layers.length), triggers);
    },
    wantsRound(step: number, lens: number[]): boolean {
      const n = lens.length;
      const total = lens.reduce((s, x) => s + x, 0);
      if (total + n > options.budget * n) return true; // the next appends would pass the budget
      return filled && step - lastRound >= interval && total > target(n);
    },
    // Once the cache has filled, any step with more than the round target may prune: the next forced round
    // then comes `interval` steps later for every sequence pruned together.
    mayRoundEarly(_step: number, lens: number[]): boolean {
      return filled && lens.reduce((s, x) => s + x, 0) > target(lens.length);
    },
    round(step: number, layers: LayerView[]): PruneDecision {
      ensureTriggers(layers.length);
      lastRound = step;
      // A round runs only once the cache has filled (wantsRound's budget check, or an early round after it).
      filled = true;
      return letheDecide(layers, options, target(layers.length), triggers);
    },
    // Its round schedule and τ triggers are state: a fork continues from a copy of them.
    clone: (): KvPolicy => lethePolicy(options, { triggers, lastRound, filled }),
  };
}
