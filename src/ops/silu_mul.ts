/** SiLU-gated multiply (the SwiGLU MLP's activation) on the GPU. */
import code from "../../wgsl/silu_mul.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";

const KERNEL = { name: "silu_mul", code };

/** Where gate and up rows live (elements). Defaults: packed [rows, hidden], offset 0. */
export interface SiluMulLayout {
  gateStride?: number;
  gateOffset?: number;
  upStride?: number;
  upOffset?: number;
}

/**
 * Records out[r, c] = silu(gate[r, c]) · up[r, c], silu(g) = g / (1 + e^-g).
 * Shapes: gate, up [rows, hidden] f32 (or strided per `layout`), out [rows, hidden] f32 packed.
 */
export function siluMul(
  ctx: GpuContext,
  gate: Binding,
  up: Binding,
  out: Binding,
  rows: number,
  hidden: number,
  layout: SiluMulLayout = {},
): void {
  const [gx, gy] = ctx.grid(Math.ceil((rows * hidden) / 256));
  const u = new Uint32Array([
    rows,
    hidden,
    layout.gateStride ?? hidden,
    layout.gateOffset ?? 0,
    layout.upStride ?? hidden,
    layout.upOffset ?? 0,
    gx * 256,
    0,
  ]);
  ctx.dispatch(KERNEL, [gate, up, out], [gx, gy], u);
}

/**
 * Records the SiLU-gated multiply on a fused projection: gateUp [rows, 2·hidden] f32 holds gate in columns
 * [0, hidden) and up in [hidden, 2·hidden) of each row. out [rows, hidden] f32.
 */
export function siluMulFused(
  ctx: GpuContext,
  gateUp: Binding,
  out: Binding,
  rows: number,
  hidden: number,
): void {
  siluMul(ctx, gateUp, gateUp, out, rows, hidden, {
    gateStride: 2 * hidden,
    upStride: 2 * hidden,
    upOffset: hidden,
  });
}
