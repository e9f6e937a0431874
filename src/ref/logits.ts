/**
 * CPU references of wgsl/logits.wgsl: the processed row (penalties, min_p), logprobs with the top N, and the
 * token counts. Computed in f64 from the f32 inputs; the GPU's f32 results are compared with a bound.
 */
import type { LogitsProcessing } from "../ops/logits.ts";

/** The bit of a count word that marks an id of the prompt (bits 0–30 count generated occurrences). */
export const PROMPT_BIT = 0x80000000;

/** Token counts as the GPU keeps them: `prompt` ids flagged, `generated` ids counted. */
export function countsRef(vocab: number, prompt: number[], generated: number[]): Uint32Array {
  const c = new Uint32Array(vocab);
  for (const id of prompt) c[id] |= PROMPT_BIT;
  for (const id of generated) c[id] = (c[id] & PROMPT_BIT) | ((c[id] & 0x7fffffff) + 1);
  return c;
}

/** The processed row and, for min_p, which ids lie so near the threshold that f32 rounding may decide. */
export interface ProcessedRef {
  out: Float32Array;
  /** Ids within 1e-4 (in log-probability) of min_p's threshold: either outcome is correct. */
  ambiguous: Set<number>;
}

/** The row the sampler draws from: logit bias, penalties (from `counts`), then min_p masking to the lowest f32. */
export function processRef(
  logits: Float32Array,
  counts: Uint32Array | null,
  p: Partial<LogitsProcessing>,
): ProcessedRef {
  const n = logits.length;
  const out = new Float32Array(n);
  const rep = p.repetitionPenalty ?? 1;
  const bias = p.logitBias ?? {};
  const freq = p.frequencyPenalty ?? 0;
  const pres = p.presencePenalty ?? 0;
  for (let i = 0; i < n; i++) {
    let l = logits[i];
    if (bias[i] !== undefined) l = Math.fround(l + Math.fround(bias[i]));
    if (counts) {
      const c = counts[i];
      const g = c & 0x7fffffff;
      if (c !== 0 && rep !== 1) l = l > 0 ? l / rep : l * rep;
      l -= freq * g + (g > 0 ? pres : 0);
    }
    out[i] = l;
  }
  const ambiguous = new Set<number>();
  const minP = p.minP ?? 0;
  const temp = p.temperature ?? 0;
  if (minP > 0 && temp > 0) {
    let mx = -Infinity;
    for (let i = 0; i < n; i++) mx = Math.max(mx, out[i]);
    const lim = Math.log(minP);
    for (let i = 0; i < n; i++) {
      const d = (out[i] - mx) / temp;
      if (Math.abs(d - lim) < 1e-4) ambiguous.add(i);
      if (d < lim) out[i] = -3.4028234663852886e38;
    }
  }
  return { out, ambiguous };
}

/** One token's logprob and the row's top N (logit order, ties to the lower id). */
export interface LogprobsRef {
  logprob: number;
  top: { id: number; logprob: number }[];
}

/** Log-softmax of the raw row at `id`, and the top `n` ids with theirs. */
export function logprobsRef(logits: Float32Array, id: number, n: number): LogprobsRef {
  let mx = -Infinity;
  for (const x of logits) mx = Math.max(mx, x);
  let z = 0;
  for (const x of logits) z += Math.exp(x - mx);
  const lse = mx + Math.log(z);
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  return {
    logprob: logits[id] - lse,
    top: order.slice(0, n).map((i) => ({ id: i, logprob: logits[i] - lse })),
  };
}
