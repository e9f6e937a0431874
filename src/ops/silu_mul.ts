/** SiLU-gated multiply (the SwiGLU MLP's activation) on the GPU. */
import code from "../../wgsl/silu_mul.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";

const KERNEL = { name: "silu_mul", code };

/**
 * Records out[r, c] = silu(gate[r, c]) · up[r, c], silu(g) = g / (1 + e^-g).
 * Shapes: gate, up, out [rows, hidden] f32.
 */
export function siluMul(
  ctx: GpuContext,
  gate: Binding,
  up: Binding,
  out: Binding,
  rows: number,
  hidden: number,
): void {
  const [gx, gy] = ctx.grid(Math.ceil((rows * hidden) / 256));
  // The kernel also takes row strides and offsets (gate stride, offset, up stride, offset): packed here.
  const u = new Uint32Array([rows, hidden, hidden, 0, hidden, 0, gx * 256, 0]);
  ctx.dispatch(KERNEL, [gate, up, out], [gx, gy], u);
}
