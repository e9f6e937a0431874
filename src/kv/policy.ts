/**
 * The KV policy interface. A policy never touches GPU memory: the cache and the attention pass produce
 * scores and positions, the policy says which slots survive. Per-step eviction (H2O, StreamingLLM, PyramidKV's
 * decode caps) runs on the GPU through `decodeCap`/`evictBy`; pruning rounds (prefill compression, Lethe's
 * periodic rounds) read the scores back once per round and return keep lists for the gather kernel.
 */

/** The policy names the CLI and library accept. */
export type PolicyName = "full" | "streaming" | "h2o" | "snapkv" | "pyramidkv" | "lethe";

/** All policy names, in the order reports list them. */
export const POLICY_NAMES: readonly PolicyName[] = [
  "full",
  "streaming",
  "h2o",
  "snapkv",
  "pyramidkv",
  "lethe",
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
  lethe: LetheOptions;
}

/** Defaults, documented in the README. */
export const DEFAULT_KV_OPTIONS: KvPolicyOptions = {
  budget: 256,
  sink: 4,
  recentRatio: 0.3,
  window: 32,
  lethe: { tau: 2, segments: 8, gamma: 0.95, interval: 4 },
};

/** What a policy sees of one layer at a pruning decision (host copies, slot order). */
export interface LayerView {
  len: number;
  positions: Uint32Array;
  scores: Float32Array;
}

/** Outcome of a pruning decision: a keep list per layer (ascending slots; null = unchanged). */
export interface PruneDecision {
  keep: (Uint32Array | null)[];
  /** Hoyer sparsity per layer, when the policy computed it. */
  hoyer?: number[];
  /** Per-layer τ-shrinking triggers after this round (Lethe). */
  trigger?: number[];
}

/** A KV cache policy (see DESIGN "KV policies"). */
export interface KvPolicy {
  readonly name: PolicyName;
  readonly options: KvPolicyOptions;
  /** Decode-time score update S ← γ·S + attention; null when the policy needs no decode scores. */
  readonly decodeGamma: number | null;
  /** Prompt queries that score the prompt at prefill: the last N, all of them, or none. */
  readonly prefillQueries: number | "all" | null;
  /** Slots to leave free after compacting an uncapped layer (the growth expected before the next round). */
  readonly roundHeadroom: number;
  /** How the per-step evictor picks its victim among unprotected slots. */
  readonly evictBy: "score" | "position";
  /** Hard per-layer cap during decode (an append at the cap evicts one slot on the GPU); null = none. */
  decodeCap(layer: number, layers: number): number | null;
  /** Recent-window size protected by the per-step evictor at `layer`. */
  recentWindow(layer: number, layers: number): number;
  /** After prefill: which prompt slots to keep. */
  afterPrefill(layers: LayerView[]): PruneDecision;
  /** After decode step `step` (1-based): does a pruning round run now? */
  wantsRound(step: number, lens: number[]): boolean;
  /**
   * Would a round now, ahead of its schedule, be worth running? A server batching many sequences runs these
   * early rounds on the step where another sequence's round is due, so that all rounds fall on the same steps
   * and the steps between them need no readback of positions and scores.
   */
  mayRoundEarly(step: number, lens: number[]): boolean;
  /** A pruning round during decode. */
  round(step: number, layers: LayerView[]): PruneDecision;
}

/** Checks option ranges; throws with the offending option named. */
export function validateKvOptions(o: KvPolicyOptions): void {
  const bad = (what: string) => {
    throw new Error(`invalid KV option: ${what}`);
  };
  if (!(o.budget >= 1) || !Number.isFinite(o.budget) || !Number.isInteger(o.budget)) {
    bad(`--kv-budget must be a positive integer, got ${o.budget}`);
  }
  if (!Number.isInteger(o.sink) || o.sink < 0) bad(`--kv-sink must be an integer ≥ 0, got ${o.sink}`);
  if (!(o.recentRatio >= 0 && o.recentRatio < 1)) {
    bad(`--kv-recent-ratio must be in [0, 1), got ${o.recentRatio}`);
  }
  if (!Number.isInteger(o.window) || o.window < 1) bad(`--kv-window must be an integer ≥ 1, got ${o.window}`);
  if (!(o.lethe.tau > 1)) bad(`--lethe-tau must be > 1, got ${o.lethe.tau}`);
  if (!Number.isInteger(o.lethe.segments) || o.lethe.segments < 1) {
    bad(`--lethe-segments must be an integer ≥ 1, got ${o.lethe.segments}`);
  }
  if (!(o.lethe.gamma > 0 && o.lethe.gamma <= 1)) {
    bad(`--lethe-gamma must be in (0, 1], got ${o.lethe.gamma}`);
  }
  if (!Number.isInteger(o.lethe.interval) || o.lethe.interval < 1) {
    bad(`--lethe-interval must be an integer ≥ 1, got ${o.lethe.interval}`);
  }
  if (o.sink + 2 > o.budget) {
    bad(`--kv-budget ${o.budget} must exceed the sink count ${o.sink} by at least 2`);
  }
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
    roundHeadroom: 0,
    evictBy: "score",
    decodeCap: () => null,
    recentWindow: () => 0,
    afterPrefill: (layers: LayerView[]): PruneDecision => keepAll(layers.length),
    wantsRound: () => false,
    mayRoundEarly: () => false,
    round: (_step: number, layers: LayerView[]): PruneDecision => keepAll(layers.length),
  };
}
