/** KL divergence between next-token distributions, from probabilities or from raw logits (f64 sums). */

/** Natural-log softmax of `logits` (max-subtracted, so large logits do not overflow). */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - lse;
  return out;
}

/** KL(p ‖ q) in nats for probability vectors; terms with p = 0 contribute 0, q = 0 under p > 0 gives ∞. */
export function klDivergence(p: ArrayLike<number>, q: ArrayLike<number>): number {
  if (p.length !== q.length) throw new Error(`KL: lengths differ (${p.length} vs ${q.length})`);
  let kl = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] <= 0) continue;
    if (q[i] <= 0) return Infinity;
    kl += p[i] * (Math.log(p[i]) - Math.log(q[i]));
  }
  return Math.max(0, kl);
}

/** KL(softmax(a) ‖ softmax(b)) in nats, computed in log space. */
export function klFromLogits(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`KL: lengths differ (${a.length} vs ${b.length})`);
  const la = logSoftmax(a);
  const lb = logSoftmax(b);
  let kl = 0;
  for (let i = 0; i < la.length; i++) {
    const p = Math.exp(la[i]);
    if (p > 0) kl += p * (la[i] - lb[i]);
  }
  return Math.max(0, kl);
}

/** Index of the largest value (the first one on ties, like a greedy sampler scanning in order). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}
