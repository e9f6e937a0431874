import { addRmsnorm } from "../bench/dev/add_rmsnorm.ts";
import { rmsnorm } from "../src/ops/rmsnorm.ts";
import { addRef, rmsnormRef } from "../src/ref/elementwise.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

// f32 accumulation of ≤ 8192 squares (strided partial sums + tree) and one inverseSqrt: measured ~1.5e-7
// relative to the row maximum; the bound leaves >10× margin.
const BOUND = 2e-6;

Deno.test("rmsnorm matches the CPU reference (dims 64…8192, incl. non-powers of two, several row counts)", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const cases: [number, number][] = [[1, 64], [3, 1000], [5, 1536], [2, 8192], [17, 257], [1, 1], [4, 300]];
  for (const [rows, dim] of cases) {
    const x = randomF32(rows * dim, next, 3);
    const w = randomF32(dim, next, 2);
    const eps = next() < 0.5 ? 1e-6 : 1e-5;
    const gx = ctx.upload(x, "x");
    const gw = ctx.upload(w, "w");
    const out = ctx.createBuffer(rows * dim * 4, "out");
    poison(ctx, out);
    rmsnorm(ctx, gx, gw, out, rows, dim, eps);
    assertClose(await ctx.readF32(out), rmsnormRef(x, w, rows, dim, eps), BOUND, `rmsnorm ${rows}×${dim}`);
    for (const b of [gx, gw, out]) b.destroy();
  }
});

Deno.test("rmsnorm: eps matters for tiny rows, zero rows stay finite", async () => {
  const ctx = await gpuContext();
  const rows = 2;
  const dim = 100;
  const x = new Float32Array(rows * dim);
  for (let i = 0; i < dim; i++) x[i] = 1e-4 * ((i % 7) - 3); // row 0 tiny: eps dominates
  const w = new Float32Array(dim).fill(1); // row 1 all zero: must give 0, not NaN
  const gx = ctx.upload(x, "x");
  const gw = ctx.upload(w, "w");
  const out = ctx.createBuffer(rows * dim * 4, "out");
  poison(ctx, out);
  rmsnorm(ctx, gx, gw, out, rows, dim, 1e-6);
  assertClose(await ctx.readF32(out), rmsnormRef(x, w, rows, dim, 1e-6), BOUND, "rmsnorm tiny/zero rows");
  for (const b of [gx, gw, out]) b.destroy();
});

Deno.test("rmsnorm: many rows (prefill batch of 512 × 1536)", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const rows = 512;
  const dim = 1536;
  const x = randomF32(rows * dim, next, 10);
  const w = randomF32(dim, next);
  const gx = ctx.upload(x, "x");
  const gw = ctx.upload(w, "w");
  const out = ctx.createBuffer(rows * dim * 4, "out");
  poison(ctx, out);
  rmsnorm(ctx, gx, gw, out, rows, dim, 1e-6);
  assertClose(await ctx.readF32(out), rmsnormRef(x, w, rows, dim, 1e-6), BOUND, "rmsnorm 512×1536");
  for (const b of [gx, gw, out]) b.destroy();
});

Deno.test("addRmsnorm: residual += delta in place, then RMSNorm of the sum", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  for (const [rows, dim] of [[1, 1536], [7, 1000], [3, 64]] as [number, number][]) {
    const h = randomF32(rows * dim, next, 4);
    const d = randomF32(rows * dim, next, 2);
    const w = randomF32(dim, next);
    const gh = ctx.upload(h, "h");
    const gd = ctx.upload(d, "d");
    const gw = ctx.upload(w, "w");
    const out = ctx.createBuffer(rows * dim * 4, "out");
    poison(ctx, out);
    addRmsnorm(ctx, gh, gd, gw, out, rows, dim, 1e-6);
    const sum = addRef(h, d);
    assertClose(await ctx.readF32(gh), sum, 0, `addRmsnorm residual ${rows}×${dim}`);
    assertClose(
      await ctx.readF32(out),
      rmsnormRef(sum, w, rows, dim, 1e-6),
      BOUND,
      `addRmsnorm ${rows}×${dim}`,
    );
    for (const b of [gh, gd, gw, out]) b.destroy();
  }
});
