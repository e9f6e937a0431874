/** Rotary position embedding (Hugging Face rotate_half pairing) on the GPU, in place. */
import code from "../../wgsl/rope.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";

const KERNEL_QK = { name: "rope_qk", code, entryPoint: "main_qk" };

/**
 * Uploads inverse frequencies (from `ropeInvFreq` in src/model/rope_freq.ts) as the f32 [headDim/2] buffer
 * the RoPE kernel reads. Done once per model.
 */
export function uploadInvFreq(
  ctx: GpuContext,
  invFreq: ArrayLike<number>,
  label = "rope_inv_freq",
): GPUBuffer {
  return ctx.upload(Float32Array.from(invFreq), label);
}

/**
 * Records RoPE in place on q [tokens, qHeads, headDim] and k [tokens, kHeads, headDim] (f32) in one dispatch:
 * token t's head h (elements from offset + t·stride + h·headDim) is rotated by angle
 * f32(positions[t]) · invFreq[i] for pair (i, i + headDim/2). positions [tokens] u32 (each token its own
 * position, so batched sequences work); invFreq [headDim/2] f32. Strides default to heads·headDim (packed);
 * q and k may be the same buffer (the q and k heads inside a fused [tokens, q|k|v] row).
 *
 * Accuracy: the angle is formed in f32, as Hugging Face does, so versus an exact f64 rotation each output
 * carries an error up to (|x_i| + |x_{i+d/2}|)·(|angle|·2⁻²³ + 2e-6) — the first term is the f32 angle's
 * rounding (≤ 0.012·|x| at angle 1e5; measured 3e-3 relative at position 100000), the second the kernel's
 * range reduction + cos/sin + products. Against the same f32 angle the kernel measures ~1e-7 relative for
 * angles up to ~2e5 (every position ≤ 131072 of a 128k-context model); both bounds are tested.
 */
export function ropeQK(
  ctx: GpuContext,
  q: Binding,
  k: Binding,
  positions: Binding,
  invFreq: Binding,
  tokens: number,
  qHeads: number,
  kHeads: number,
  headDim: number,
  layout: { qStride?: number; qOffset?: number; kStride?: number; kOffset?: number } = {},
): void {
  if (headDim % 2 !== 0) throw new Error(`RoPE needs an even head dimension, got ${headDim}`);
  const total = tokens * (qHeads + kHeads) * (headDim / 2);
  const [gx, gy] = ctx.grid(Math.ceil(total / 256));
  const u = new Uint32Array([
    tokens,
    headDim,
    gx * 256,
    total,
    qHeads,
    layout.qStride ?? qHeads * headDim,
    layout.qOffset ?? 0,
    kHeads,
    layout.kStride ?? kHeads * headDim,
    layout.kOffset ?? 0,
    0,
    0,
  ]);
  ctx.dispatch(KERNEL_QK, [q, positions, invFreq, k], [gx, gy], u);
}
