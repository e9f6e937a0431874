/**
 * The storage-buffer matvec before issue 22 (bench/dev/matvec_rowloop.wgsl): each invocation owns R whole rows
 * and loops over every column of them — no coalescing across invocations, no workgroup reduction. Superseded by
 * wgsl/matvec.wgsl (a workgroup per block of rows, coalesced 16-byte loads); kept beside
 * bench/matvec.bench.ts, which times both, and tested against the CPU reference in tests/matvec.test.ts.
 * Float weights only (bf16, f16, f32), up to 8 vectors per call.
 */
import code from "./matvec_rowloop.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../../src/gpu/context.ts";
import type { KernelSource } from "../../src/gpu/pipelines.ts";
import type { Weight } from "../../src/gpu/weights.ts";
import { dummyBinding } from "../../src/ops/matvec.ts";

const WLOAD: Record<"bf16" | "f16" | "f32", string> = {
  bf16: `alias WTYPE = u32;
fn wpair(i: u32) -> vec2<f32> {
  let u = w[i >> 1u];
  return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
}
fn wone(i: u32) -> f32 { return wpair(i & ~1u)[i & 1u]; }`,
  f16: `alias WTYPE = u32;
fn wpair(i: u32) -> vec2<f32> { return unpack2x16float(w[i >> 1u]); }
fn wone(i: u32) -> f32 { return wpair(i & ~1u)[i & 1u]; }`,
  f32: `alias WTYPE = f32;
fn wpair(i: u32) -> vec2<f32> { return vec2<f32>(w[i], w[i + 1u]); }
fn wone(i: u32) -> f32 { return w[i]; }`,
};

const kernels = new Map<string, KernelSource>();

/** Records y = W x (+ bias) (+ y) for `batch` ≤ 8 vectors with the old row-loop kernel (float weights). */
export function matvecRowloop(
  ctx: GpuContext,
  w: Weight,
  x: Binding,
  y: Binding,
  batch = 1,
  opts: { bias?: Binding; accumulate?: boolean } = {},
): void {
  if (w.dtype !== "bf16" && w.dtype !== "f16" && w.dtype !== "f32") {
    throw new Error(`matvecRowloop: float weights only, got ${w.dtype}`);
  }
  if (!(batch >= 1 && batch <= 8)) throw new Error(`matvecRowloop: batch must be 1..8, got ${batch}`);
  const bb = batch <= 1 ? 1 : batch <= 2 ? 2 : batch <= 4 ? 4 : 8;
  const r = Math.max(1, 8 / bb);
  const accumulate = opts.accumulate ?? false, hasBias = opts.bias !== undefined, odd = w.cols % 2 === 1;
  for (const c of w.chunks) {
    const inv = Math.ceil(c.rows / r);
    const wg = inv >= 256 ? 64 : 16;
    const name = `matvec_rowloop_${w.dtype}_b${bb}_wg${wg}_${+accumulate}${+hasBias}${+odd}`;
    let k = kernels.get(name);
    if (!k) {
      const consts = `const R: u32 = ${r}u;\nconst BB: u32 = ${bb}u;\nconst WG: u32 = ${wg}u;\n` +
        `const ACCUMULATE = ${accumulate};\nconst HAS_BIAS = ${hasBias};\nconst ODD_TAIL = ${odd};\n`;
      k = { name, code: consts + WLOAD[w.dtype] + "\n" + code };
      kernels.set(name, k);
    }
    const [gx, gy] = ctx.grid(Math.ceil(inv / wg));
    const u = new Uint32Array([c.rows, w.cols, c.rowStart, w.rows, batch, gx * wg, 0, 0]);
    ctx.dispatch(k, [c.buffer, x, y, opts.bias ?? dummyBinding(ctx)], [gx, gy], u);
  }
}
