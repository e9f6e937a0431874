/**
 * CPU reference of GPU token selection (wgsl/sample.wgsl), with the same semantics:
 *
 * - argmax: the largest logit; ties go to the lowest id.
 * - sample: w_i = exp((l_i − max) · invTemp) with invTemp = fround(1 / temperature).
 *   top-k (k > 0 and k < vocab) keeps every logit ≥ the k-th largest logit (boundary ties kept).
 *   top-p (p < 1) then keeps every logit ≥ the largest logit value t with Σ{w_i : l_i ≥ t, kept} ≥ p · Z_k
 *   (Z_k the mass after top-k): the smallest prefix of the sorted distribution whose mass reaches p, ties
 *   kept together; at least the top group survives (p ≤ 0 keeps the maxima).
 *   The draw: target = u · Z over the kept set; the chosen id is the smallest id (in id order) whose running
 *   kept mass exceeds target (the last kept id if rounding leaves none).
 *   u = (hash(seed, step, row) >> 8) / 2^24 — a counter-based hash, identical on CPU and GPU.
 *
 * The reference sums in f64; the GPU in f32 (in another order, with its own exp), so a draw whose target
 * lies within float error of a boundary can differ. {@link sampleRef} reports those margins.
 */

import type { SampleParams } from "../ops/types.ts";

export type { SampleParams } from "../ops/types.ts";

function mix32(v: number): number {
  let x = v >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/** The uniform in [0, 1) for (seed, step, row): 24 random bits, exact in f32. */
export function sampleUniform(seed: number, step: number, row: number): number {
  const h = mix32((seed ^ mix32((step ^ mix32((row + 0x9e3779b9) >>> 0)) >>> 0)) >>> 0);
  return (h >>> 8) / 16777216;
}

/** The lowest id of the largest value. */
export function argmaxRef(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** The kept set and its normalised probabilities (id order) for one row, plus decision margins. */
export interface SampleDistribution {
  /** probs[i] = w_i / Z for kept ids, 0 elsewhere. */
  probs: Float64Array;
  /** The logit threshold: ids with logit ≥ threshold are kept. */
  threshold: number;
  /**
   * Relative distance of the top-p decision from a tie: min over the two neighbouring candidate thresholds of
   * |mass − p·Z_k| / Z_k (Infinity when top-p is off or forced).
   */
  topPMargin: number;
}

/** The distribution the sampler draws from for one row (temperature > 0). */
export function sampleDistribution(logits: Float32Array, params: SampleParams): SampleDistribution {
  const n = logits.length;
  const invTemp = Math.fround(1 / params.temperature);
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, logits[i]);
  const w = new Float64Array(n);
  for (let i = 0; i < n; i++) w[i] = Math.exp((logits[i] - mx) * invTemp);
  // Distinct values descending, with the mass of each value group.
  const sorted = Array.from(logits).sort((a, b) => b - a);
  let threshold = -Infinity;
  const k = params.topK ?? 0;
  if (k > 0 && k < n) threshold = sorted[k - 1];
  const topP = params.topP ?? 1;
  let topPMargin = Infinity;
  if (topP < 1) {
    const groups: { value: number; mass: number }[] = [];
    for (const x of sorted) {
      if (x < threshold) break;
      const m = Math.exp((x - mx) * invTemp);
      if (groups.length && groups[groups.length - 1].value === x) groups[groups.length - 1].mass += m;
      else groups.push({ value: x, mass: m });
    }
    let zk = 0;
    for (const g of groups) zk += g.mass;
    const goal = topP * zk;
    let cum = 0;
    let idx = groups.length - 1;
    for (let gi = 0; gi < groups.length; gi++) {
      cum += groups[gi].mass;
      if (cum >= goal) {
        idx = gi;
        break;
      }
    }
    threshold = groups[idx].value;
    const before = cum - groups[idx].mass;
    topPMargin = Math.min(Math.abs(cum - goal), idx > 0 ? Math.abs(goal - before) : Infinity) / zk;
  }
  let z = 0;
  for (let i = 0; i < n; i++) if (logits[i] >= threshold) z += w[i];
  const probs = new Float64Array(n);
  for (let i = 0; i < n; i++) if (logits[i] >= threshold) probs[i] = w[i] / z;
  return { probs, threshold, topPMargin };
}

/** One sampled id and how close the decision was to a float tie (relative to the kept mass). */
export interface SampleRefResult {
  id: number;
  /** min(distance of the target from either edge of the chosen id's interval, the top-p margin). */
  margin: number;
}

/** Samples one row (row index `row` feeds the hash). Greedy when temperature ≤ 0. */
export function sampleRef(logits: Float32Array, params: SampleParams, row: number): SampleRefResult {
  if (!(params.temperature > 0)) return { id: argmaxRef(logits), margin: Infinity };
  const d = sampleDistribution(logits, params);
  const target = sampleUniform(params.seed, params.step, row);
  let cum = 0;
  let last = -1;
  for (let i = 0; i < logits.length; i++) {
    if (d.probs[i] === 0 && !(logits[i] >= d.threshold)) continue;
    last = i;
    const next = cum + d.probs[i];
    if (next > target) {
      return { id: i, margin: Math.min(target - cum, next - target, d.topPMargin) };
    }
    cum = next;
  }
  return { id: last, margin: 0 };
}
