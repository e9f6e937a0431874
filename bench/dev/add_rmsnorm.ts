/**
 * Residual add fused with RMSNorm on the GPU. Not on the production path (the forward accumulates residuals
 * in the projections and runs a plain RMSNorm); kept beside bench/elementwise.bench.ts, which measures it.
 */
import code from "./add_rmsnorm.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../../src/gpu/context.ts";

const KERNEL = { name: "add_rmsnorm", code };

function params(rows: number, dim: number, eps: number, gx: number): Uint32Array {
  const u = new Uint32Array([rows, dim, 0, gx]);
  new Float32Array(u.buffer)[2] = eps;
  return u;
}

/**
 * Records the residual add fused with the following RMSNorm (one dispatch instead of two):
 * residual[r, :] += delta[r, :], then out[r, :] = rmsnorm(residual[r, :]) · weight.
 * Shapes: residual [rows, dim] f32 (updated in place), delta [rows, dim] f32, weight [dim] f32,
 * out [rows, dim] f32 (must alias neither residual nor delta).
 */
export function addRmsnorm(
  ctx: GpuContext,
  residual: Binding,
  delta: Binding,
  weight: Binding,
  out: Binding,
  rows: number,
  dim: number,
  eps: number,
): void {
  const [gx, gy] = ctx.grid(rows);
  ctx.dispatch(KERNEL, [residual, delta, weight, out], [gx, gy], params(rows, dim, eps, gx));
}
