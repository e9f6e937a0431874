/**
 * matvec against the CPU reference. Relative error bounds (max |gpu − ref| / max |ref|), per weight dtype:
 * bf16 2e-5, f16 2e-5, f32 2e-5 — the reference uses the same dtype-rounded weights, so the only difference
 * is f32 summation order (the GPU accumulates in f32, the reference in f64). q8 / q4 (2e-5 too): the reference
 * multiplies the CPU dequantization (src/ref/quant.ts) of the same stored bytes.
 */
import { matvec } from "../src/ops/matvec.ts";
import { matvecRef, matvecRowsRef } from "../src/ref/linear.ts";
import {
  attachWeightTexture,
  createWeight,
  destroyWeight,
  uploadWeight,
  type Weight,
} from "../src/gpu/weights.ts";
import { type QuantFormat, quantizeRows } from "../src/model/quantize.ts";
import { dequantizeRef } from "../src/ref/quant.ts";
import { matvecRowloop } from "../bench/dev/matvec_rowloop.ts";
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

/** Quantizes random weights on the host and uploads them as a q8 / q4 weight (with a texture copy if asked). */
function quantWeight(
  ctx: GpuContext,
  format: QuantFormat,
  rows: number,
  cols: number,
  next: () => number,
  texture: boolean,
  maxChunkBytes?: number,
): { w: Weight; values: Float32Array } {
  const q = quantizeRows(format, randomF32(rows * cols, next), rows, cols);
  const writer = createWeight(ctx, "wq", format, rows, cols, maxChunkBytes, { texture });
  writer.write(0, q.data, q.scales);
  return { w: writer.weight, values: dequantizeRef(format, q.data, q.scales, rows, cols) };
}

for (const format of ["q8", "q4"] as const) {
  Deno.test(`matvec ${format}: dequantizing kernels on both paths against the CPU dequantization (padded groups, batches, chunks)`, async () => {
    const ctx = await gpuContext();
    const seed = freshSeed();
    console.log(`seed ${seed}`);
    const next = rng(seed);
    // cols: whole groups, a padded last group (172 = 5 groups + 12), one short group; a chunked case.
    const cases: [number, number, number, boolean, boolean, number | undefined][] = [
      [37, 64, 1, true, false, undefined],
      [300, 172, 3, false, true, undefined],
      [70, 20, 8, true, true, undefined],
      [129, 2048, 11, false, false, undefined],
      [203, 96, 5, true, false, 1000],
    ];
    for (const path of ["texture", "buffer"] as const) {
      for (const [rows, cols, batch, bias, accumulate, maxChunkBytes] of cases) {
        const { w, values } = quantWeight(ctx, format, rows, cols, next, path === "texture", maxChunkBytes);
        const x = randomF32(batch * cols, next);
        const b = bias ? randomF32(rows, next) : undefined;
        const y0 = accumulate ? randomF32(batch * rows, next) : undefined;
        const gx = ctx.upload(x, "x"), gb = b ? ctx.upload(b, "bias") : undefined;
        const gy = ctx.createBuffer(batch * rows * 4, "y");
        if (y0) ctx.write(gy, y0);
        else poison(ctx, gy);
        matvec(ctx, w, gx, gy, { batch, bias: gb, accumulate, path });
        const got = await ctx.readF32(gy);
        const want = matvecRef(values, rows, cols, x, batch, { bias: b, accumulate: y0 });
        let terms = 0;
        for (let i = 0; i < batch; i++) {
          for (let r = 0; r < rows; r++) {
            let t = Math.abs(b?.[r] ?? 0) + Math.abs(y0?.[i * rows + r] ?? 0);
            for (let k = 0; k < cols; k++) t += Math.abs(values[r * cols + k] * x[i * cols + k]);
            terms = Math.max(terms, t);
          }
        }
        assertClose(got, want, 2e-5, `matvec ${format} ${path} [${rows}, ${cols}] batch ${batch}`, terms);
        destroyWeight(w);
        for (const buf of [gx, gb, gy]) buf?.destroy();
      }
    }
  });
}

Deno.test("quantizeRows: q8 / q4 round-trip within half a step of each group's scale; zero groups stay zero", () => {
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const rows = 5, cols = 70;
  const v = randomF32(rows * cols, next, 3);
  v.fill(0, 32, 64); // row 0's second group all zero
  for (const format of ["q8", "q4"] as const) {
    const q = quantizeRows(format, v, rows, cols);
    const back = dequantizeRef(format, q.data, q.scales, rows, cols);
    const qmax = format === "q8" ? 127 : 7;
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g * 32 < cols; g++) {
        let amax = 0;
        for (let c = g * 32; c < Math.min(cols, g * 32 + 32); c++) {
          amax = Math.max(amax, Math.abs(v[r * cols + c]));
        }
        // f16 rounding of the scale adds at most 2^-11 relative per step, times qmax steps.
        const step = amax / qmax;
        for (let c = g * 32; c < Math.min(cols, g * 32 + 32); c++) {
          const err = Math.abs(back[r * cols + c] - v[r * cols + c]);
          if (!(err <= step * 0.5 + amax * 2 ** -10)) {
            throw new Error(
              `${format} [${r}, ${c}]: |${back[r * cols + c]} - ${v[r * cols + c]}| > half a step ${
                step / 2
              }`,
            );
          }
        }
      }
    }
    for (let c = 32; c < 64; c++) {
      if (back[c] !== 0) throw new Error(`${format}: zero group decoded to ${back[c]}`);
    }
  }
});

Deno.test("the previous storage-buffer matvec (bench/dev/matvec_rowloop.ts) still matches the CPU reference", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  for (
    const [dtype, rows, cols, batch] of [["bf16", 300, 130, 1], ["f32", 37, 47, 5], [
      "f16",
      70,
      96,
      8,
    ]] as const
  ) {
    const wv = roundTo(dtype, randomF32(rows * cols, next));
    const w = uploadWeight(ctx, "w", dtype, rows, cols, encode(dtype, wv), undefined, { texture: false });
    const x = randomF32(batch * cols, next), bias = randomF32(rows, next);
    const gx = ctx.upload(x, "x"),
      gb = ctx.upload(bias, "bias"),
      gy = ctx.createBuffer(batch * rows * 4, "y");
    poison(ctx, gy);
    matvecRowloop(ctx, w, gx, gy, batch, { bias: gb });
    const want = matvecRef(wv, rows, cols, x, batch, { bias });
    let terms = 0;
    for (let b = 0; b < batch; b++) {
      for (let r = 0; r < rows; r++) {
        let t = Math.abs(bias[r]);
        for (let k = 0; k < cols; k++) t += Math.abs(wv[r * cols + k] * x[b * cols + k]);
        terms = Math.max(terms, t);
      }
    }
    assertClose(
      await ctx.readF32(gy),
      want,
      2e-5,
      `rowloop ${dtype} [${rows}, ${cols}] batch ${batch}`,
      terms,
    );
    destroyWeight(w);
    for (const b of [gx, gb, gy]) b.destroy();
  }
});
