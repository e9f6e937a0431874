/**
 * matvec against the CPU reference. Relative error bounds (max |gpu − ref| / max |ref|), per weight dtype:
 * bf16 2e-5, f16 2e-5, f32 2e-5 — the reference uses the same dtype-rounded weights, so the only difference
 * is f32 summation order (the GPU accumulates in f32, the reference in f64).
 */
import { matvec } from "../src/ops/matvec.ts";
import { matvecRef, matvecRowsRef } from "../src/ref/linear.ts";
import { attachWeightTexture, destroyWeight, uploadWeight, type Weight } from "../src/gpu/weights.ts";
import { type DType, encode, roundTo } from "../src/dtype.ts";
import type { GpuContext } from "../src/gpu/context.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

const BOUND: Record<DType, number> = { bf16: 2e-5, f16: 2e-5, f32: 2e-5 };
const DTYPES: DType[] = ["bf16", "f16", "f32"];

interface Case {
  rows: number;
  cols: number;
  batch: number;
  bias: boolean;
  accumulate: boolean;
  path: "texture" | "buffer";
  maxChunkBytes?: number;
}

async function check(ctx: GpuContext, dtype: DType, c: Case, next: () => number): Promise<void> {
  const wv = roundTo(dtype, randomF32(c.rows * c.cols, next));
  const bytes = encode(dtype, wv);
  const w: Weight = uploadWeight(ctx, "w", dtype, c.rows, c.cols, bytes, c.maxChunkBytes, { texture: false });
  if (c.path === "texture" && !attachWeightTexture(ctx, w, bytes)) throw new Error("no texture");
  const x = randomF32(c.batch * c.cols, next);
  const bias = c.bias ? randomF32(c.rows, next) : undefined;
  const y0 = c.accumulate ? randomF32(c.batch * c.rows, next) : undefined;
  const gx = ctx.upload(x, "x");
  const gb = bias ? ctx.upload(bias, "bias") : undefined;
  const gy = ctx.createBuffer(c.batch * c.rows * 4, "y");
  if (y0) ctx.write(gy, y0);
  else poison(ctx, gy);
  matvec(ctx, w, gx, gy, { batch: c.batch, bias: gb, accumulate: c.accumulate, path: c.path });
  const got = await ctx.readF32(gy);
  const want = matvecRef(wv, c.rows, c.cols, x, c.batch, { bias, accumulate: y0 });
  // Error measured against the terms' magnitude Σ|w·x| + |bias| + |y|, not just |y|: with one output row the
  // terms can cancel to ~1e-4, where f32 rounding of O(1) terms is a large fraction of the result.
  let terms = 0;
  for (let b = 0; b < c.batch; b++) {
    for (let r = 0; r < c.rows; r++) {
      let t = Math.abs(bias?.[r] ?? 0) + Math.abs(y0?.[b * c.rows + r] ?? 0);
      for (let k = 0; k < c.cols; k++) t += Math.abs(wv[r * c.cols + k] * x[b * c.cols + k]);
      terms = Math.max(terms, t);
    }
  }
  assertClose(got, want, BOUND[dtype], `matvec ${dtype} ${JSON.stringify(c)}`, terms);
  destroyWeight(w);
  for (const b of [gx, gb, gy]) b?.destroy();
}

for (const dtype of DTYPES) {
  Deno.test(`matvec ${dtype}: odd shapes, batches 1, 3, 8, 11, bias, accumulate, both paths`, async () => {
    const ctx = await gpuContext();
    const seed = freshSeed();
    console.log(`seed ${seed}`);
    const next = rng(seed);
    // Rows not multiples of rows-per-invocation × workgroup; cols not multiples of a texel (8 or 4 values);
    // odd cols for f32 only (16-bit weights pack two per u32). Batch 11 spans two groups of 8.
    const o = dtype === "f32" ? 1 : 0;
    const cases: [number, number, number, boolean, boolean][] = [
      [1, 2 + o, 1, true, false],
      [37, 46 + o, 3, false, true],
      [300, 130 + o, 8, true, false],
      [70, 38 + o, 11, true, true],
      [1029, 96, 1, false, false],
    ];
    for (const path of ["texture", "buffer"] as const) {
      for (const [rows, cols, batch, bias, accumulate] of cases) {
        await check(ctx, dtype, { rows, cols, batch, bias, accumulate, path }, next);
      }
    }
  });
}

Deno.test("matvec: weights split into many chunks (tiny maxChunkBytes), buffer path", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  for (const dtype of DTYPES) {
    // 1000 bytes per chunk: a few rows each, and a chunk size that is not a multiple of 64 rows.
    for (const batch of [1, 5]) {
      await check(ctx, dtype, {
        rows: 203,
        cols: 62,
        batch,
        bias: true,
        accumulate: batch === 5,
        path: "buffer",
        maxChunkBytes: 1000,
      }, next);
    }
  }
});

Deno.test("matvec: a bf16 [50000, 1536] weight over 128 MiB (several chunks and texture pieces)", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const rows = 50_000, cols = 1536, batch = 2;
  // Cheap fill: random bf16 bit patterns with exponents kept in a sane range.
  const bits = new Uint16Array(rows * cols);
  for (let i = 0; i < bits.length; i += 2) {
    const r = (next() * 4294967296) >>> 0;
    bits[i] = 0x3c00 | (r & 0x83ff);
    bits[i + 1] = 0x3c00 | ((r >>> 16) & 0x83ff);
  }
  const bytes = new Uint8Array(bits.buffer);
  const w = uploadWeight(ctx, "big", "bf16", rows, cols, bytes, undefined, { texture: true });
  if (w.bytes <= 128 * 1024 * 1024) throw new Error("not over 128 MiB");
  if (w.chunks.length < 2) throw new Error(`expected several chunks, got ${w.chunks.length}`);
  const x = randomF32(batch * cols, next);
  const bias = randomF32(rows, next);
  const gx = ctx.upload(x, "x"), gb = ctx.upload(bias, "bias"), gy = ctx.createBuffer(batch * rows * 4, "y");
  // Sampled rows: around every chunk and texture-piece boundary, plus the ends.
  const edges = new Set<number>([0, rows]);
  for (const c of w.chunks) edges.add(c.rowStart);
  for (const t of w.textures ?? []) edges.add(t.rowStart);
  const ranges = [...edges].map((e) => [Math.max(0, e - 3), Math.min(rows, e + 3)] as const);
  const wf = new Float32Array(cols);
  for (const path of ["buffer", "texture"] as const) {
    poison(ctx, gy);
    matvec(ctx, w, gx, gy, { batch, bias: gb, path });
    const got = await ctx.readF32(gy);
    for (const [r0, r1] of ranges) {
      const wrows = new Float32Array((r1 - r0) * cols);
      for (let r = r0; r < r1; r++) {
        for (let c = 0; c < cols; c++) {
          const u = new Uint32Array(wf.buffer);
          u[c] = bits[r * cols + c] << 16;
        }
        wrows.set(wf, (r - r0) * cols);
      }
      const sub = matvecRowsRef(wrows, r1 - r0, cols, x, batch, 0, r1 - r0, { bias: bias.subarray(r0, r1) });
      const gotSub = new Float32Array(batch * (r1 - r0));
      for (let b = 0; b < batch; b++) {
        for (let r = r0; r < r1; r++) gotSub[b * (r1 - r0) + r - r0] = got[b * rows + r];
      }
      assertClose(gotSub, sub, BOUND.bf16, `big matvec ${path} rows ${r0}..${r1}`);
    }
    // Every row written (no NaN left from the poison).
    for (let i = 0; i < got.length; i++) {
      if (Number.isNaN(got[i])) throw new Error(`${path}: y[${i}] unwritten`);
    }
  }
  destroyWeight(w);
  for (const b of [gx, gb, gy]) b.destroy();
});
