import { softmax, softmaxInPlace } from "../bench/dev/softmax.ts";
import { softmaxRef } from "../src/ref/elementwise.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

// Each output is exp(x - max) / sum in f32: the exp builtin (a few ulps; relative error grows with |x - max|,
// ~5e-6 per element at x - max ≈ -60) and an f32 sum of up to 151936 positive terms (strided partials + tree).
// Measured ~2e-7 relative to the row's largest probability; bound 2e-6.
const BOUND = 2e-6;

Deno.test("softmax matches the CPU reference (row lengths around the workgroup size, scales)", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const cases: [number, number, number][] = [[1, 1, 1], [3, 7, 1], [2, 255, 0.5], [4, 256, 1], [5, 257, 2], [
    12,
    1000,
    1 / Math.sqrt(128),
  ], [2, 4099, 1]];
  for (const [rows, n, scale] of cases) {
    const x = randomF32(rows * n, next, 8);
    const gx = ctx.upload(x, "x");
    const out = ctx.createBuffer(rows * n * 4, "out");
    poison(ctx, out);
    softmax(ctx, gx, out, rows, n, scale);
    const got = await ctx.readF32(out);
    const want = softmaxRef(x, rows, n, scale);
    for (let r = 0; r < rows; r++) {
      const sl = (a: Float32Array) => a.subarray(r * n, (r + 1) * n);
      assertClose(sl(got), sl(want), BOUND, `softmax ${rows}×${n} scale ${scale} row ${r}`);
    }
    for (const b of [gx, out]) b.destroy();
  }
});

Deno.test("softmax over a full 151936-entry vocabulary row, large logits, in place", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const n = 151936;
  const rows = 2;
  const x = randomF32(rows * n, next, 30);
  x[12345] = 90; // a dominant logit: exp without max-subtraction would overflow f32
  x[n + 5] = 1e4;
  const want = softmaxRef(x, rows, n);
  const gx = ctx.upload(x, "x");
  const out = ctx.createBuffer(rows * n * 4, "out");
  poison(ctx, out);
  softmax(ctx, gx, out, rows, n);
  const got = await ctx.readF32(out);
  assertClose(got, want, BOUND, "softmax 2×151936");
  softmaxInPlace(ctx, gx, rows, n);
  assertClose(await ctx.readF32(gx), want, BOUND, "softmax in place 2×151936");
  let sum = 0;
  for (let i = 0; i < n; i++) sum += got[i];
  if (Math.abs(sum - 1) > 1e-4) throw new Error(`row sums to ${sum}`);
  for (const b of [gx, out]) b.destroy();
});

Deno.test("softmax: -Infinity entries get probability 0; an all -Infinity row gives zeros", async () => {
  const ctx = await gpuContext();
  const n = 300;
  const rows = 2;
  const x = new Float32Array(rows * n);
  for (let i = 0; i < n; i++) x[i] = i % 3 === 0 ? -Infinity : Math.sin(i);
  for (let i = n; i < 2 * n; i++) x[i] = -Infinity;
  const gx = ctx.upload(x, "x");
  const out = ctx.createBuffer(rows * n * 4, "out");
  poison(ctx, out);
  softmax(ctx, gx, out, rows, n);
  const got = await ctx.readF32(out);
  assertClose(got, softmaxRef(x, rows, n), BOUND, "softmax masked");
  for (let i = 0; i < n; i += 3) if (got[i] !== 0) throw new Error(`masked entry ${i} got ${got[i]}`);
  for (const b of [gx, out]) b.destroy();
});
