/**
 * Paired statistics for comparing two policies on the same samples: the exact McNemar test on the samples
 * where exactly one of them is right, and a bootstrap interval of the accuracy difference. The evaluation
 * report calls a policy "ahead" only when the test says so (p < {@link SIGNIFICANCE}).
 */

import { mulberry32 } from "../util/rng.ts";

/** The p-value below which a difference counts. */
export const SIGNIFICANCE = 0.05;
/** Bootstrap resamples of the accuracy difference (a 95% interval's ends move by < 0.5 point across seeds at this count). */
export const BOOTSTRAP_RESAMPLES = 10000;
/** The bootstrap's seed: fixed, so regenerating a report reproduces its intervals exactly. */
export const BOOTSTRAP_SEED = 20250530;

/**
 * Exact two-sided McNemar test: with b samples only the first policy gets right and c only the second, under
 * the null hypothesis each discordant sample is a fair coin, so p = min(1, 2 · P[Binomial(b + c, ½) ≤ min(b, c)]).
 * No discordant samples: p = 1.
 */
export function mcnemarExact(b: number, c: number): number {
  if (!Number.isInteger(b) || !Number.isInteger(c) || b < 0 || c < 0) {
    throw new Error(`mcnemarExact: counts must be non-negative integers, got b=${b}, c=${c}`);
  }
  const n = b + c;
  if (n === 0) return 1;
  const k = Math.min(b, c);
  // Σ_{i ≤ k} C(n, i) / 2^n in log space (n may be in the thousands; 2^n overflows past 1023).
  let logTerm = -n * Math.LN2; // log(C(n, 0) / 2^n)
  let tail = Math.exp(logTerm);
  for (let i = 1; i <= k; i++) {
    logTerm += Math.log((n - i + 1) / i);
    tail += Math.exp(logTerm);
  }
  return Math.min(1, 2 * tail);
}

/**
 * Percentile bootstrap interval (95% by default) of mean(x) − mean(y) over paired samples (x[i], y[i] from the
 * same sample): `resamples` draws of n indices with replacement, seeded. Empty input: [0, 0].
 */
export function bootstrapDiffCI(
  x: ArrayLike<boolean | number>,
  y: ArrayLike<boolean | number>,
  resamples: number = BOOTSTRAP_RESAMPLES,
  seed: number = BOOTSTRAP_SEED,
  level = 0.95,
): [number, number] {
  const n = x.length;
  if (y.length !== n) throw new Error(`bootstrapDiffCI: ${n} outcomes against ${y.length}`);
  if (n === 0) return [0, 0];
  const d = Float64Array.from({ length: n }, (_, i) => Number(x[i]) - Number(y[i]));
  const next = mulberry32(seed);
  const stats = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += d[Math.floor(next() * n)];
    stats[r] = s / n;
  }
  stats.sort();
  const at = (q: number) => stats[Math.min(resamples - 1, Math.max(0, Math.round(q * (resamples - 1))))];
  const tail = (1 - level) / 2;
  return [at(tail), at(1 - tail)];
}

/** A paired comparison of policy A against policy B on their common samples. */
export interface PairedTest {
  /** Samples both were scored on. */
  n: number;
  /** Samples only A got right. */
  aOnly: number;
  /** Samples only B got right. */
  bOnly: number;
  /** Accuracy of A minus accuracy of B on the common samples. */
  diff: number;
  /** 95% bootstrap interval of `diff`. */
  ci: [number, number];
  /** Exact two-sided McNemar p-value. */
  p: number;
}

/** One sample's outcome as the harness records it: [sample id, prediction, correct]. */
export type Prediction = [string, string | null, boolean];

/**
 * The paired test of two cells' per-sample outcomes, matched by sample id (samples only one cell holds are left
 * out). Null when they share no sample.
 */
export function pairedTest(a: readonly Prediction[], b: readonly Prediction[]): PairedTest | null {
  const byId = new Map<string, boolean>(b.map(([id, , ok]) => [id, ok]));
  const x: boolean[] = [];
  const y: boolean[] = [];
  for (const [id, , ok] of a) {
    const other = byId.get(id);
    if (other === undefined) continue;
    x.push(ok);
    y.push(other);
  }
  const n = x.length;
  if (n === 0) return null;
  let aOnly = 0, bOnly = 0, diff = 0;
  for (let i = 0; i < n; i++) {
    if (x[i] && !y[i]) aOnly++;
    if (y[i] && !x[i]) bOnly++;
  }
  diff = (aOnly - bOnly) / n;
  return { n, aOnly, bOnly, diff, ci: bootstrapDiffCI(x, y), p: mcnemarExact(aOnly, bOnly) };
}

/** A's standing against B: ahead or behind only with p < {@link SIGNIFICANCE}, else tied. */
export function standing(t: PairedTest): "ahead" | "behind" | "tied" {
  if (t.p >= SIGNIFICANCE || t.aOnly === t.bOnly) return "tied";
  return t.aOnly > t.bOnly ? "ahead" : "behind";
}
