/**
 * The arithmetic of the KV policies, as plain functions over host arrays: Hoyer sparsity, the τ-breakpoint,
 * PyramidKV's per-layer budgets, 1-D pooling and top-k selection of cache slots. The GPU produces the scores;
 * these functions decide which slots survive a pruning round (see DESIGN "KV policies").
 */

/**
 * Hoyer sparsity of a non-negative vector: (√n − ‖a‖₁/‖a‖₂) / (√n − 1), in [0, 1].
 * 0 for a perfectly flat vector, 1 for a one-hot one. Empty, single-entry or all-zero vectors are
 * defined as 0 (nothing to tell apart).
 */
export function hoyer(a: ArrayLike<number>): number {
  const n = a.length;
  if (n < 2) return 0;
  let l1 = 0;
  let l2 = 0;
  for (let i = 0; i < n; i++) {
    const x = Math.abs(a[i]);
    l1 += x;
    l2 += x * x;
  }
  if (l2 === 0) return 0;
  const sq = Math.sqrt(n);
  const h = (sq - l1 / Math.sqrt(l2)) / (sq - 1);
  return Math.min(1, Math.max(0, h));
}

/**
 * The τ-breakpoint of scores sorted in descending order: cut `v` into `segments` segments of
 * ceil(n / segments) entries and return the first boundary index k (a multiple of the segment length,
 * 0 < k < n) where v[0] / v[k] ≥ τ — attention has fallen by a factor τ, so the top k are the salient tokens.
 * Returns null for a flat vector (no such boundary).
 */
export function tauBreakpoint(sortedDesc: ArrayLike<number>, segments: number, tau: number): number | null {
  const n = sortedDesc.length;
  if (n < 2 || segments < 1) return null;
  const seg = Math.max(1, Math.ceil(n / segments));
  const top = sortedDesc[0];
  if (!(top > 0)) return null;
  for (let k = seg; k < n; k += seg) {
    const v = sortedDesc[k];
    if (v <= 0 || top / v >= tau) return k;
  }
  return null;
}

/**
 * PyramidKV's per-layer token budgets (excluding the observation window): with k̄ = budget − window,
 * min = k̄/β, max = 2k̄ − min, k_l = max − l·(max − min)/(L − 1). Rounded down, at least 0.
 * The mean over layers is k̄ (up to rounding).
 */
export function pyramidBudgets(budget: number, window: number, layers: number, beta = 20): number[] {
  const kBar = Math.max(0, budget - window);
  const min = kBar / beta;
  const max = 2 * kBar - min;
  const out: number[] = [];
  for (let l = 0; l < layers; l++) {
    const k = layers === 1 ? kBar : max - (l * (max - min)) / (layers - 1);
    out.push(Math.max(0, Math.floor(k + 1e-9)));
  }
  return out;
}

/** Average pooling along the token axis with an odd kernel, same length, zero-padded window counted as missing. */
export function avgPool1d(x: ArrayLike<number>, kernel: number): Float32Array {
  const n = x.length;
  const half = Math.floor(kernel / 2);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    let c = 0;
    for (let j = Math.max(0, i - half); j <= Math.min(n - 1, i + half); j++) {
      s += x[j];
      c++;
    }
    out[i] = s / c;
  }
  return out;
}

/** Slots split into those a policy must keep (sinks, recent window) and those it may evict. */
export interface SlotPartition {
  /** Slot indices that are always kept. */
  protectedSlots: number[];
  /** Slot indices that compete on score. */
  candidates: number[];
}

/**
 * Protection by original position: positions < `sink` are attention sinks; the `recent` highest positions
 * form the recent window. Everything else is a candidate for eviction.
 */
export function partitionSlots(
  positions: ArrayLike<number>,
  len: number,
  sink: number,
  recent: number,
): SlotPartition {
  let maxPos = -1;
  for (let i = 0; i < len; i++) maxPos = Math.max(maxPos, positions[i]);
  const recentFrom = maxPos - recent + 1;
  const protectedSlots: number[] = [];
  const candidates: number[] = [];
  for (let i = 0; i < len; i++) {
    const p = positions[i];
    if (p < sink || (recent > 0 && p >= recentFrom)) protectedSlots.push(i);
    else candidates.push(i);
  }
  return { protectedSlots, candidates };
}

/** The `k` candidate slots with the highest scores (ties → lower slot first). */
export function topSlots(candidates: number[], scores: ArrayLike<number>, k: number): number[] {
  if (k >= candidates.length) return candidates.slice();
  if (k <= 0) return [];
  const sorted = candidates.slice().sort((a, b) => scores[b] - scores[a] || a - b);
  return sorted.slice(0, k);
}

/** Merges slot lists into the ascending, duplicate-free keep list the gather kernel consumes. */
export function keepList(...parts: number[][]): Uint32Array {
  const set = new Set<number>();
  for (const p of parts) for (const s of p) set.add(s);
  return Uint32Array.from([...set].sort((a, b) => a - b));
}

/** Candidate scores sorted descending (for the τ-breakpoint). */
export function sortedScores(candidates: number[], scores: ArrayLike<number>): Float32Array {
  const v = Float32Array.from(candidates, (s) => scores[s]);
  return v.sort().reverse();
}

/**
 * Splits a token pool across layers in proportion to `weights` (largest-remainder rounding), never giving a
 * layer more than its `caps` entry; what a capped layer cannot use goes to the others.
 */
export function splitPool(pool: number, weights: number[], caps: number[]): number[] {
  const n = weights.length;
  const out = new Array<number>(n).fill(0);
  let remaining = Math.max(0, Math.floor(pool));
  let open = weights.map((_, i) => i).filter((i) => caps[i] > 0);
  while (remaining > 0 && open.length > 0) {
    const wsum = open.reduce((s, i) => s + Math.max(weights[i], 0), 0);
    const shares = open.map((
      i,
    ) => (wsum > 0 ? (remaining * Math.max(weights[i], 0)) / wsum : remaining / open.length));
    let given = 0;
    const fracs: { i: number; f: number }[] = [];
    open.forEach((i, j) => {
      const room = caps[i] - out[i];
      const take = Math.min(room, Math.floor(shares[j]));
      out[i] += take;
      given += take;
      fracs.push({ i, f: shares[j] - Math.floor(shares[j]) });
    });
    let left = remaining - given;
    fracs.sort((a, b) => b.f - a.f || a.i - b.i);
    for (const { i } of fracs) {
      if (left <= 0) break;
      if (out[i] < caps[i]) {
        out[i]++;
        left--;
      }
    }
    const progressed = remaining - left > 0;
    remaining = left;
    open = open.filter((i) => out[i] < caps[i]);
    if (!progressed) break;
  }
  return out;
}

/**
 * Compresses every layer longer than its cap to the cap: sinks and the `recent` newest positions, then the
 * highest `scoreOf(layer)` among the rest. Returns a keep list per layer (null = untouched).
 */
export function capLayers(
  layers: { len: number; positions: Uint32Array; scores: Float32Array }[],
  capOf: (layer: number) => number,
  sink: number,
  recent: number,
  scoreOf: (scores: Float32Array) => ArrayLike<number> = (s) => s,
): (Uint32Array | null)[] {
  return layers.map((l, i) => {
    const cap = capOf(i);
    if (l.len <= cap) return null;
    const part = partitionSlots(l.positions, l.len, sink, recent);
    const scores = scoreOf(l.scores.subarray(0, l.len));
    return keepList(part.protectedSlots, topSlots(part.candidates, scores, cap - part.protectedSlots.length));
  });
}

/** Max pooling along the token axis with an odd kernel, same length (the window clipped at the ends). */
export function maxPool1d(x: ArrayLike<number>, kernel: number): Float32Array {
  const n = x.length;
  const half = Math.floor(kernel / 2);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let j = Math.max(0, i - half); j <= Math.min(n - 1, i + half); j++) m = Math.max(m, x[j]);
    out[i] = m;
  }
  return out;
}

/** Softmax of `x` (max-subtracted, so large entries do not overflow); empty in, empty out. */
export function softmax(x: ArrayLike<number>): Float64Array {
  const n = x.length;
  const out = new Float64Array(n);
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, x[i]);
  let s = 0;
  for (let i = 0; i < n; i++) s += out[i] = Math.exp(x[i] - m);
  for (let i = 0; i < n; i++) out[i] /= s;
  return out;
}

/**
 * R-KV's selection score of each candidate slot: λ·importance − (1 − λ)·redundancy, both distributions over the
 * candidates. Importance: the layer's attention scores max-pooled along tokens (kernel `pool`, over every slot,
 * so a candidate next to an attended token counts as attended too), normalised to sum 1 over the candidates
 * (uniform when all are 0). Redundancy: per KV head, a softmax over the candidates of `redundancy` (f32
 * [heads, len], see `LayerView.redundancy`), then the mean over heads: the layer keeps one token set for all its
 * heads. Returns scores indexed by slot (non-candidates 0), for {@link topSlots}.
 */
export function rkvScores(
  scores: ArrayLike<number>,
  redundancy: ArrayLike<number>,
  len: number,
  candidates: number[],
  lambda: number,
  pool = 7,
): Float32Array {
  const heads = redundancy.length / len;
  if (!Number.isInteger(heads) || heads < 1) {
    throw new Error(
      `rkvScores: redundancy holds ${redundancy.length} values, not a multiple of ${len} slots`,
    );
  }
  const out = new Float32Array(len);
  if (candidates.length === 0) return out;
  const pooled = maxPool1d(Array.from({ length: len }, (_, i) => scores[i]), pool);
  let sum = 0;
  for (const s of candidates) sum += pooled[s];
  const red = new Float64Array(candidates.length);
  for (let h = 0; h < heads; h++) {
    const p = softmax(candidates.map((s) => redundancy[h * len + s]));
    for (let i = 0; i < p.length; i++) red[i] += p[i] / heads;
  }
  candidates.forEach((s, i) => {
    const imp = sum > 0 ? pooled[s] / sum : 1 / candidates.length;
    out[s] = lambda * imp - (1 - lambda) * red[i];
  });
  return out;
}

/**
 * Lethe's adaptive recent window of one layer, in positions: where the layer's attention mass lies by token age.
 * Among the non-sink slots (position ≥ `sink`), the `top` highest scores (ties → lower slot first, as
 * {@link topSlots}) are set aside — score selection keeps those anyway. Of the rest (the residual mass, negative
 * scores counted as 0), the window is the smallest r in [`min`, `max`] whose r newest positions (position ≥
 * newest − r + 1, as {@link partitionSlots} counts them) hold at least `fraction` of it; `max` when none does,
 * `min` when the residual mass is 0. `max` below `min` is raised to `min`.
 */
export function adaptiveRecent(
  positions: ArrayLike<number>,
  scores: ArrayLike<number>,
  len: number,
  sink: number,
  top: number,
  fraction: number,
  min: number,
  max: number,
): number {
  const hi = Math.max(min, max);
  const cand: number[] = [];
  let newest = -1;
  for (let i = 0; i < len; i++) {
    newest = Math.max(newest, positions[i]);
    if (positions[i] >= sink) cand.push(i);
  }
  const covered = new Set(topSlots(cand, scores, top));
  // Residual mass per age (newest − position), for ages below the largest window considered.
  const byAge = new Float64Array(hi);
  let residual = 0;
  for (const s of cand) {
    if (covered.has(s)) continue;
    const m = Math.max(0, scores[s]);
    residual += m;
    const age = newest - positions[s];
    if (age < hi) byAge[age] += m;
  }
  if (!(residual > 0)) return min;
  const want = fraction * residual;
  let held = 0;
  for (let r = 1; r <= hi; r++) {
    held += byAge[r - 1];
    // A relative slack: the two sums add the same values in different orders.
    if (r >= min && held >= want * (1 - 1e-12)) return r;
  }
  return hi;
}
