/** Residual add on the GPU. */
import code from "../../wgsl/add.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";

const KERNEL = { name: "add", code };

/** Records out[i] = a[i] + b[i] for i < n. */
export function add(ctx: GpuContext, a: Binding, b: Binding, out: Binding, n: number): void {
  const [x, y] = ctx.grid(Math.ceil(n / 256));
  ctx.dispatch(KERNEL, [a, b, out], [x, y], new Uint32Array([n, x * 256, 0, 0]));
}
