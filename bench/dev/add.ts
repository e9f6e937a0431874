/**
 * Elementwise add on the GPU. Not on the production path (the forward accumulates residuals in the
 * projections); kept beside the benchmarks as the baseline kernel of bench/elementwise.bench.ts and the
 * runtime test's batched-recording vehicle.
 */
import code from "./add.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../../src/gpu/context.ts";

const KERNEL = { name: "add", code };

/** Records out[i] = a[i] + b[i] for i < n. */
export function add(ctx: GpuContext, a: Binding, b: Binding, out: Binding, n: number): void {
  const [x, y] = ctx.grid(Math.ceil(n / 256));
  ctx.dispatch(KERNEL, [a, b, out], [x, y], new Uint32Array([n, x * 256, 0, 0]));
}
