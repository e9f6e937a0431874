/**
 * RoPE inverse frequencies: model setup on the host. Every RoPE kernel reads them (uploaded once per model by
 * `uploadInvFreq` in src/ops/rope.ts); the CPU reference forward (src/ref/forward.ts) uses the same ones.
 *
 * Pairing is Hugging Face's "rotate_half" layout: inside each head of size d, element i pairs with element
 * i + d/2 and both use frequency index i (not the interleaved (2i, 2i+1) layout of the original paper).
 */
import type { ModelConfig } from "./config.ts";

/** The `rope_scaling` block of a Hugging Face config.json (only the kinds Lethe supports). */
export interface RopeScaling {
  /** "llama3" (newer configs) — older configs spell the key `type`. "default" means no scaling. */
  rope_type?: string;
  type?: string;
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

/**
 * Inverse frequencies invFreq[i] = theta^(-2i/headDim), i < headDim/2, optionally rescaled as Llama 3.1 does
 * (Hugging Face `_compute_llama3_parameters`): with wavelength λ = 2π/invFreq, L = original context length,
 * λ_hi = L/high_freq_factor, λ_lo = L/low_freq_factor:
 *   λ < λ_hi (high frequencies)  → unchanged;
 *   λ > λ_lo (low frequencies)   → invFreq / factor;
 *   otherwise (medium)           → (1 − s)·invFreq/factor + s·invFreq, s = (L/λ − low_freq_factor) /
 *                                   (high_freq_factor − low_freq_factor).
 * Computed in f64 (Hugging Face computes in f32; the results agree to about one f32 ulp once rounded).
 * `scaling` null/undefined or rope_type "default" means unscaled; other kinds (linear, dynamic, yarn…) throw
 * rather than silently giving wrong positions.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling?: RopeScaling | null): Float64Array {
  if (headDim % 2 !== 0) throw new Error(`RoPE needs an even head dimension, got ${headDim}`);
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  const kind = scaling ? (scaling.rope_type ?? scaling.type ?? "default") : "default";
  if (kind === "default") return inv;
  if (kind !== "llama3") {
    throw new Error(`unsupported rope_scaling type "${kind}" (supported: default, llama3)`);
  }

  const { factor, low_freq_factor: lowF, high_freq_factor: highF, original_max_position_embeddings: oldLen } =
    scaling!;
  if (factor === undefined || lowF === undefined || highF === undefined || oldLen === undefined) {
    throw new Error(
      "llama3 rope_scaling needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings",
    );
  }
  const lowWavelen = oldLen / lowF;
  const highWavelen = oldLen / highF;
  for (let i = 0; i < half; i++) {
    const f = inv[i];
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) continue; // high frequency: keep
    if (wavelen > lowWavelen) {
      inv[i] = f / factor; // low frequency: slow down by the full factor
    } else {
      const smooth = (oldLen / wavelen - lowF) / (highF - lowF);
      inv[i] = (1 - smooth) * (f / factor) + smooth * f;
    }
  }
  return inv;
}

/** The inverse frequencies of a model's config (its Llama-3 scaling applied when configured). */
export function modelInvFreq(config: ModelConfig): Float64Array {
  const s = config.ropeScaling;
  return ropeInvFreq(
    config.headDim,
    config.ropeTheta,
    s
      ? {
        rope_type: "llama3",
        factor: s.factor,
        low_freq_factor: s.lowFreqFactor,
        high_freq_factor: s.highFreqFactor,
        original_max_position_embeddings: s.originalMaxPositionEmbeddings,
      }
      : null,
  );
}
