/**
 * The KV policy interface. A policy never touches GPU memory: the cache and the attention pass produce
 * scores and positions, the policy says which slots survive. Per-step eviction (H2O, StreamingLLM, PyramidKV's
 * decode caps) runs on the GPU through `decodeCap`/`evictBy`; pruning rounds (prefill compression, Lethe's
 * periodic rounds) read the scores back once per round and return keep lists for the gather kernel.
 */
import { DEFAULT_KV_DTYPE, type KvDtype } from "../ops/kv_layout.ts";
import { checkKvOptions } from "./options.ts";

/** The policy names the CLI and library accept. */
export type PolicyName = "full" | "streaming" | "h2o" | "snapkv" | "pyramidkv" | "lethe" | "rkv";

/** All policy names, in the order reports list them. */
export const POLICY_NAMES: readonly PolicyName[] = [
  "full",
  "streaming",
  "h2o",
  "snapkv",
  "pyramidkv",
  "lethe",
  "rkv",
];

/** Lethe's own hyperparameters (the paper leaves them open; defaults chosen by the evaluation). */
export interface LetheOptions {
  /** τ: attention must fall by this factor for a segment boundary to be a breakpoint. */
  tau: number;
  /** D: number of segments the sorted scores are cut into. */
  segments: number;
  /** γ: RASR decay, S ← γ·S + attention each decode step. */
  gamma: number;
  /** P: decode steps between periodic pruning rounds. */
  interval: number;
  /**
   * Adaptive recent window: 0 = off (every layer protects `recentRatio` × budget); otherwise the share of each
   * layer's attention mass outside its top tokens that its recent window must hold, chosen per round (lethe.ts).
   */
  adaptiveRecent: number;
}

/** Options shared by every policy. */
export interface KvPolicyOptions {
  /** Tokens per layer on average; the total budget is budget × layers. */
  budget: number;
  /** Attention sinks: positions below this are always kept. */
  sink: number;
  /** Recent window as a fraction of the per-layer budget. */
  recentRatio: number;
  /** Observation window: how many last prompt queries score the prompt (SnapKV, PyramidKV, Lethe). */
  window: number;
  /** Lethe's own hyperparameters. */
  lethe: LetheOptions;
  /** R-KV's λ: score = λ·importance − (1 − λ)·redundancy. */
  rkvLambda: number;
  /** R-KV's near-duplicate threshold: keys with cosine above it are copies (the newest one is spared). */
  rkvThreshold: number;
  /** How K and V are stored (the cache's concern; policies decide only which tokens stay). */
  dtype: KvDtype;
}

/** Defaults, documented in the README. */
export const DEFAULT_KV_OPTIONS: KvPolicyOptions = {
  budget: 256,
  sink: 4,
  recentRatio: 0.3,
  window: 32,
  lethe: { tau: 2, segments: 8, gamma: 0.95, interval: 4, adaptiveRecent: 0 },
  rkvLambda: 0.1,
  rkvThreshold: 0.5,
  dtype: DEFAULT_KV_DTYPE,
};

/**
 * Pool reservation per layer for a policy capped at `budget` tokens per layer: a capped layer may overshoot its
 * cap by the arena's 1.5× growth step, plus the alignment slack.
 */
export function cappedReserve(budget: number): number {
  return Math.ceil(budget * 1.5) + 16;
}

/** What a policy sees of one layer at a pruning decision (host copies, slot order). */
export interface LayerView {
  len: number;
  positions: Uint32Array;
  scores: Float32Array;
  /**
   * Key redundancy per KV head and slot, f32 [heads, len] (head h's slot j at h·len + j), for a policy that
   * asks for it ({@link KvPolicy.keyRedundancy}); absent otherwise.
   */
  redundancy?: Float32Array;
}

/** Outcome of a pruning decision: a keep list per layer (ascending slots; null = unchanged). */
export interface PruneDecision {
  keep: (Uint32Array | null)[];
  /** Hoyer sparsity per layer, when the policy computed it. */
  hoyer?: number[];
  /** Per-layer τ-shrinking triggers after this round (Lethe). */
  trigger?: number[];
  /** Per-layer recent window (in positions) this round protected (Lethe). */
  recent?: number[];
}

/** A KV cache policy (see DESIGN "KV policies"). */
export interface KvPolicy {
  readonly name: PolicyName;
  readonly options: KvPolicyOptions;
  /** Decode-time score update S ← γ·S + attention; null when the policy needs no decode scores. */
  readonly decodeGamma: number | null;
  /** Prompt queries that score the prompt at prefill: the last N, all of them, or none. */
  readonly prefillQueries: number | "all" | null;
  /** Whether the policy ever removes tokens (false for FullKV: no round after prefill, nothing to read back). */
  readonly prunes: boolean;
  /** Slots to leave free after compacting an uncapped layer (the growth expected before the next round). */
  readonly roundHeadroom: number;
  /**
   * Near-duplicate cosine threshold when the policy wants key redundancy computed on the GPU before each round's
   * readback (`LayerView.redundancy`); null = not needed.
   */
  readonly keyRedundancy: number | null;
  /** How the per-step evictor picks its victim among unprotected slots. */
  readonly evictBy: "score" | "position";
  /** Hard per-layer cap during decode (an append at the cap evicts one slot on the GPU); null = none. */
  decodeCap(layer: number, layers: number): number | null;
  /** Recent-window size protected by the per-step evictor at `layer`. */
  recentWindow(layer: number, layers: number): number;
  /**
   * Tokens per layer a cache under this policy settles at once pruned, headroom included (null: it keeps
   * growing with every token). A new cache never starts larger than this (or its prompt).
   */
  steadyTokens(layers: number): number | null;
  /**
   * Tokens per layer a byte pool should reserve for a sequence in steady state, growth overshoot included
   * (null: the whole generation, prompt + max tokens).
   */
  reserveTokens(layers: number): number | null;
  /** After prefill: which prompt slots to keep. */
  afterPrefill(layers: LayerView[]): PruneDecision;
  /**
   * After decode step `step` (1-based): does a pruning round run now? Decided from the per-layer lengths alone,
   * without side effects (a batch asks before it reads anything back, and may ask more than once).
   */
  wantsRound(step: number, lens: number[]): boolean;
  /**
   * Would a round now, ahead of its schedule, be worth running? A server batching many sequences runs these
   * early rounds on the step where another sequence's round is due, so that all rounds fall on the same steps
   * and the steps between them need no readback of positions and scores.
   */
  mayRoundEarly(step: number, lens: number[]): boolean;
  /** A pruning round during decode. */
  round(step: number, layers: LayerView[]): PruneDecision;
  /**
   * An independent policy in the same state (n > 1 choices fork a prefilled sequence; each choice's rounds then
   * follow its own cache). A stateless policy may return itself.
   */
  clone(): KvPolicy;
}

/**
 * Checks option ranges and that the budget exceeds the sinks (the schema in options.ts); throws a
 * `KvOptionError` naming the library option (`invalid KV option: kv.budget must be …`).
 */
export function validateKvOptions(o: KvPolicyOptions): void {
  checkKvOptions(o);
}

/** Keep everything (no decision). */
export function keepAll(layers: number): PruneDecision {
  return { keep: new Array<Uint32Array | null>(layers).fill(null) };
}

/**
 * A policy that keeps everything: no scores, no caps, no rounds. Each policy overrides what it changes, so
 * its file reads as the list of its differences from FullKV.
 */
export function keepEverything(name: PolicyName, options: KvPolicyOptions): KvPolicy {
  return {
    name,
    options,
    decodeGamma: null,
    prefillQueries: null,
    prunes: true,
    roundHeadroom: 0,
    keyRedundancy: null,
    evictBy: "score",
    decodeCap: () => null,
    recentWindow: () => 0,
    steadyTokens: () => null,
    reserveTokens: () => null,
    afterPrefill: (layers: LayerView[]): PruneDecision => keepAll(layers.length),
    wantsRound: () => false,
    mayRoundEarly: () => false,
    round: (_step: number, layers: LayerView[]): PruneDecision => keepAll(layers.length),
    // Stateless: the policy that spreads this (a method, so `this` is that policy).
    clone(): KvPolicy {
      return this;
    },
  };
}
