/**
 * Tiled matmul against the CPU reference. Relative error bounds (max |gpu − ref| / max |ref|), per weight
 * dtype: bf16 2e-5, f16 2e-5, f32 2e-5 — weights in the reference are the same dtype-rounded values, so only
 * the f32 summation order differs; q8 / q4 (2e-5) against the CPU dequantization of the same bytes. Shapes
 * whose rows are whole 16-byte units run the coalesced kernel (wgsl/matmul_vec4.wgsl), the others the
 * element-wise one (wgsl/matmul.wgsl); both are covered.
 */
import { matmul } from "../src/ops/matmul.ts";
import { matmulRef } from "../src/ref/linear.ts";
import { createWeight, destroyWeight, uploadWeight } from "../src/gpu/weights.ts";
import { quantizeRows } from "../src/model/quantize.ts";
import { dequantizeRef } from "../src/ref/quant.ts";
import { type DType, encode, roundTo } from "../src/dtype.ts";
import type { GpuContext } from "../src/gpu/context.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

const BOUND: Record<DType, number> = { bf16: 2e-5, f16: 2e-5, f32: 2e-5 };

async function check(
  ctx: GpuContext,
  dtype: DType,
  m: number,
  rows: number,
  cols: number,
  bias: boolean,
  accumulate: boolean,
  next: () => number,
  maxChunkBytes?: number,
  path: "tiled" | "texture" = "tiled",
): Promise<void> {
  const wv = roundTo(dtype, randomF32(rows * cols, next));
  const w = uploadWeight(ctx, "w", dtype, rows, cols, encode(dtype, wv), maxChunkBytes, {
    texture: path === "texture",
  });
  const x = randomF32(m * cols, next);
  const b = bias ? randomF32(rows, next) : undefined;
  const y0 = accumulate ? randomF32(m * rows, next) : undefined;
  const gx = ctx.upload(x, "x"), gb = b ? ctx.upload(b, "bias") : undefined;
  const gy = ctx.createBuffer(m * rows * 4, "y");
  if (y0) ctx.write(gy, y0);
  else poison(ctx, gy);
  matmul(ctx, w, gx, gy, m, { bias: gb, accumulate, path });
  const what =
    `matmul ${path} ${dtype} m=${m} ${rows}x${cols} bias=${bias} acc=${accumulate} chunk=${maxChunkBytes}`;
  assertClose(
    await ctx.readF32(gy),
    matmulRef(x, m, wv, rows, cols, { bias: b, accumulate: y0 }),
    BOUND[dtype],
    what,
  );
  destroyWeight(w);
  for (const buf of [gx, gb, gy]) buf?.destroy();
}

for (const dtype of ["bf16", "f16", "f32"] as DType[]) {
  Deno.test(`matmul ${dtype}: shapes off the 32×32×16 tile, bias, accumulate`, async () => {
    const ctx = await gpuContext();
    const seed = freshSeed();
    console.log(`seed ${seed}`);
    const next = rng(seed);
    const odd = dtype === "f32" ? 1 : 0;
    await check(ctx, dtype, 1, 5, 8 + odd, false, false, next);
    await check(ctx, dtype, 33, 70, 50 + odd, true, false, next);
    await check(ctx, dtype, 64, 64, 64, false, true, next);
    await check(ctx, dtype, 100, 45, 130 + odd, true, true, next);
    // Many chunks (a few rows each).
    await check(ctx, dtype, 40, 97, 36, true, false, next, 1000);
    // The texture path (CPU adapters' default): token groups of 8 in grid z, partial last group.
    await check(ctx, dtype, 1, 5, 8 + odd, false, false, next, undefined, "texture");
    await check(ctx, dtype, 45, 70, 50 + odd, true, false, next, undefined, "texture");
    await check(ctx, dtype, 100, 45, 130 + odd, true, true, next, undefined, "texture");
  });
}

Deno.test("matmul bf16: a prefill-sized case (512 tokens × 256 rows × 1536 cols)", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  await check(ctx, "bf16", 512, 256, 1536, true, false, next);
  await check(ctx, "bf16", 512, 256, 1536, true, true, next, undefined, "texture");
});

for (const format of ["q8", "q4"] as const) {
  Deno.test(`matmul ${format}: tiled (dequantized as staged) and texture paths against the CPU dequantization`, async () => {
    const ctx = await gpuContext();
    const seed = freshSeed();
    console.log(`seed ${seed}`);
    const next = rng(seed);
    // cols: a padded last group (50, 172), whole groups (64); many chunks; m off the tile.
    const cases: [number, number, number, boolean, boolean, number | undefined][] = [
      [1, 5, 64, false, false, undefined],
      [33, 70, 50, true, false, undefined],
      [100, 45, 172, true, true, undefined],
      [40, 97, 64, true, false, 1000],
    ];
    for (const path of ["tiled", "texture"] as const) {
      for (const [m, rows, cols, bias, accumulate, maxChunkBytes] of cases) {
        const q = quantizeRows(format, randomF32(rows * cols, next), rows, cols);
        const writer = createWeight(ctx, "wq", format, rows, cols, maxChunkBytes, {
          texture: path === "texture",
        });
        writer.write(0, q.data, q.scales);
        const w = writer.weight;
        const wv = dequantizeRef(format, q.data, q.scales, rows, cols);
        const x = randomF32(m * cols, next);
        const b = bias ? randomF32(rows, next) : undefined;
        const y0 = accumulate ? randomF32(m * rows, next) : undefined;
        const gx = ctx.upload(x, "x"), gb = b ? ctx.upload(b, "bias") : undefined;
        const gy = ctx.createBuffer(m * rows * 4, "y");
        if (y0) ctx.write(gy, y0);
        else poison(ctx, gy);
        matmul(ctx, w, gx, gy, m, { bias: gb, accumulate, path });
        assertClose(
          await ctx.readF32(gy),
          matmulRef(x, m, wv, rows, cols, { bias: b, accumulate: y0 }),
          2e-5,
          `matmul ${path} ${format} m=${m} ${rows}x${cols}`,
        );
        destroyWeight(w);
        for (const buf of [gx, gb, gy]) buf?.destroy();
      }
    }
  });
}
