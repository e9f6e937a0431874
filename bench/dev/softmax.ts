/**
 * Row softmax on the GPU. Not on the production path (attention and sampling fuse their own softmax);
 * kept beside bench/elementwise.bench.ts, which measures it.
 */
import code from "./softmax.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../../src/gpu/context.ts";

const KERNEL = { name: "softmax", code };
// In place: the input binding becomes a second name for the output buffer, so only one (read_write)
// binding remains; WebGPU forbids binding one buffer as both read-only and writable storage.
const KERNEL_INPLACE = {
  name: "softmax_inplace",
  code: code
    .replace(/^.*\/\/INPUT$/m, "")
    .replace(/^(.*)@binding\(2\)(.*)\/\/OUTPUT$/m, "$1@binding(1)$2")
    .replace(/\bx\[/g, "out["),
};

function params(rows: number, n: number, scale: number, gx: number): Uint32Array {
  const u = new Uint32Array([rows, n, 0, gx]);
  new Float32Array(u.buffer)[2] = scale;
  return u;
}

/**
 * Records out[r, :] = softmax(scale · x[r, :]) (max-subtracted; a row of all -Infinity gives zeros).
 * Shapes: x [rows, n] f32, out [rows, n] f32 (must not alias x; see {@link softmaxInPlace}). Any n ≥ 1,
 * e.g. a 151936-entry vocabulary row; one workgroup per row.
 */
export function softmax(
  ctx: GpuContext,
  x: Binding,
  out: Binding,
  rows: number,
  n: number,
  scale = 1,
): void {
  const [gx, gy] = ctx.grid(rows);
  ctx.dispatch(KERNEL, [x, out], [gx, gy], params(rows, n, scale, gx));
}

/** Records x[r, :] = softmax(scale · x[r, :]) in place. Shapes: x [rows, n] f32. */
export function softmaxInPlace(ctx: GpuContext, x: Binding, rows: number, n: number, scale = 1): void {
  const [gx, gy] = ctx.grid(rows);
  ctx.dispatch(KERNEL_INPLACE, [x], [gx, gy], params(rows, n, scale, gx));
}
