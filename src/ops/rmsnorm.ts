/** RMSNorm on the GPU. */
import code from "../../wgsl/rmsnorm.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";

const KERNEL = { name: "rmsnorm", code };

function params(rows: number, dim: number, eps: number, gx: number): Uint32Array {
  const u = new Uint32Array([rows, dim, 0, gx]);
  new Float32Array(u.buffer)[2] = eps;
  return u;
}

/**
 * Records RMSNorm over a batch of rows: out[r, i] = x[r, i] / sqrt(mean(x[r, :]²) + eps) · weight[i].
 * Shapes: x [rows, dim] f32, weight [dim] f32, out [rows, dim] f32 (must not alias x). Any dim ≥ 1.
 */
export function rmsnorm(
  ctx: GpuContext,
  x: Binding,
  weight: Binding,
  out: Binding,
  rows: number,
  dim: number,
  eps: number,
): void {
  const [gx, gy] = ctx.grid(rows);
  ctx.dispatch(KERNEL, [x, weight, out], [gx, gy], params(rows, dim, eps, gx));
}
