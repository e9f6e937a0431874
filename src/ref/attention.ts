/**
 * Plain CPU references of the attention kernels (f64 accumulation over f32 inputs).
 *
 * Layouts (the KV-cache contract): K and V are token-major [capacity, nKvHeads, headDim] with K after RoPE;
 * queries and outputs are [nHeads, headDim] per token; query head h reads KV head floor(h / (nHeads/nKvHeads)).
 */

import type { AttentionShape } from "../ops/types.ts";

export type { AttentionShape } from "../ops/types.ts";

/** Result of {@link attentionDecodeRef}: the output and, per cached token, the probability mass over heads. */
export interface DecodeRefResult {
  out: Float32Array;
  /** score[j] = Σ_h p[h, j] for j < len. */
  score: Float64Array;
}

/** Softmax-attends `q` [nHeads, headDim] to the first `len` tokens of k/v; also returns per-token scores. */
export function attentionDecodeRef(
  shape: AttentionShape,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  len: number,
): DecodeRefResult {
  const { nHeads, nKvHeads, headDim: hd } = shape;
  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float32Array(nHeads * hd);
  const score = new Float64Array(len);
  const s = new Float64Array(len);
  for (let h = 0; h < nHeads; h++) {
    const kh = Math.floor(h / group);
    let m = -Infinity;
    for (let j = 0; j < len; j++) {
      let dot = 0;
      const kb = (j * nKvHeads + kh) * hd;
      for (let d = 0; d < hd; d++) dot += q[h * hd + d] * k[kb + d];
      s[j] = dot * scale;
      if (s[j] > m) m = s[j];
    }
    let sum = 0;
    for (let j = 0; j < len; j++) sum += s[j] = Math.exp(s[j] - m);
    for (let d = 0; d < hd; d++) {
      let acc = 0;
      for (let j = 0; j < len; j++) acc += s[j] * v[(j * nKvHeads + kh) * hd + d];
      out[h * hd + d] = acc / sum;
    }
    for (let j = 0; j < len; j++) score[j] += s[j] / sum;
  }
  return { out, score };
}

/** Result of {@link attentionPrefillRef}. */
export interface PrefillRefResult {
  /** [T, nHeads, headDim]. */
  out: Float32Array;
  /** Observation-window scores over the start + T slots: Σ over the last `window` queries and all heads of p. */
  score: Float64Array;
}

/**
 * Causal attention of T queries (absolute slots start..start+T-1) over k/v holding start + T tokens; query i
 * sees slots 0..start+i. `window` (clamped to T) selects the last queries whose probabilities are summed.
 */
export function attentionPrefillRef(
  shape: AttentionShape,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  start: number,
  window = 0,
): PrefillRefResult {
  const { nHeads, headDim: hd } = shape;
  const n = start + T;
  const out = new Float32Array(T * nHeads * hd);
  const score = new Float64Array(n);
  const W = Math.min(window, T);
  for (let i = 0; i < T; i++) {
    // Query i is a decode step over its visible prefix.
    const r = attentionDecodeRef(
      shape,
      q.subarray(i * nHeads * hd, (i + 1) * nHeads * hd),
      k,
      v,
      start + i + 1,
    );
    out.set(r.out, i * nHeads * hd);
    if (i >= T - W) { for (let j = 0; j < r.score.length; j++) score[j] += r.score[j]; }
  }
  return { out, score };
}
