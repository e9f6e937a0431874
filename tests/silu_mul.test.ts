import { siluMul } from "../src/ops/silu_mul.ts";
import { siluMulRef } from "../src/ref/elementwise.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

// One exp, one division and one product in f32: a few ulps of each element (measured ≤ 1e-6 per element,
// ~1e-7 relative to the largest |output|, which is what assertClose measures).
const BOUND = 1e-6;

Deno.test("siluMul matches the CPU reference (separate gate/up, odd sizes)", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  for (const [rows, hidden] of [[1, 1], [1, 255], [3, 257], [2, 8960], [7, 1000]] as [number, number][]) {
    const gate = randomF32(rows * hidden, next, 12);
    const up = randomF32(rows * hidden, next, 3);
    const gg = ctx.upload(gate, "gate");
    const gu = ctx.upload(up, "up");
    const out = ctx.createBuffer(rows * hidden * 4, "out");
    poison(ctx, out);
    siluMul(ctx, gg, gu, out, rows, hidden);
    assertClose(await ctx.readF32(out), siluMulRef(gate, up), BOUND, `siluMul ${rows}×${hidden}`);
    for (const b of [gg, gu, out]) b.destroy();
  }
});

Deno.test("siluMul: extreme gates (exp overflows to inf) give -0 and the plain product, not NaN", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  for (const [rows, hidden] of [[1, 8960], [5, 333]] as [number, number][]) {
    const gate = randomF32(rows * hidden, next, 10);
    const up = randomF32(rows * hidden, next, 10);
    gate[0] = -200; // exp(200) overflows to inf: silu must give -0, not NaN
    gate[1] = 200;
    const gg = ctx.upload(gate, "gate");
    const gu = ctx.upload(up, "up");
    const out = ctx.createBuffer(rows * hidden * 4, "out");
    poison(ctx, out);
    siluMul(ctx, gg, gu, out, rows, hidden);
    assertClose(await ctx.readF32(out), siluMulRef(gate, up), BOUND, `siluMul extreme ${rows}×${hidden}`);
    for (const b of [gg, gu, out]) b.destroy();
  }
});
