import { embedding } from "../src/ops/embedding.ts";
import { embeddingRef } from "../src/ref/elementwise.ts";
import { type DType, encode } from "../src/dtype.ts";
import { createWeight, destroyWeight, uploadWeight } from "../src/gpu/weights.ts";
import { quantizeRows } from "../src/model/quantize.ts";
import { dequantizeRef } from "../src/ref/quant.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

// A gather only moves and widens values (bf16/f16 → f32 is exact), so the result must be bit-exact: bound 0.

Deno.test("embedding gathers rows from a chunked table (f32, bf16, f16; tiny chunks); bad ids give zeros", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const cases: [DType, number, number][] = [["bf16", 300, 10], ["f16", 257, 6], ["f32", 130, 7], [
    "bf16",
    64,
    1536,
  ]];
  for (const [dtype, rows, cols] of cases) {
    const bytes = encode(dtype, randomF32(rows * cols, next, 4));
    // ~13 rows per chunk (fewer than 64, so not rounded): many chunks and many chunk boundaries.
    const rowBytes = cols * (dtype === "f32" ? 4 : 2);
    const w = uploadWeight(ctx, `E_${dtype}`, dtype, rows, cols, bytes, 13 * rowBytes);
    if (w.chunks.length < 2) throw new Error("test must exercise chunking");
    const ids: number[] = [0, rows - 1, 13, 12, rows, 0xffffffff, 1_000_000_000];
    while (ids.length < 40) ids.push(Math.floor(next() * rows));
    const tokens = ids.length;
    const gids = ctx.upload(new Uint32Array(ids), "ids");
    const out = ctx.createBuffer(tokens * cols * 4, "out");
    poison(ctx, out);
    const before = ctx.stats.dispatches;
    embedding(ctx, w, gids, out, tokens);
    if (ctx.stats.dispatches - before !== w.chunks.length) throw new Error("one dispatch per chunk expected");
    const got = await ctx.readF32(out);
    assertClose(got, embeddingRef(bytes, dtype, rows, cols, ids), 0, `embedding ${dtype} [${rows}, ${cols}]`);
    for (const t of [4, 5, 6]) { // out-of-range ids: documented to give zeros
      for (let c = 0; c < cols; c++) if (got[t * cols + c] !== 0) throw new Error(`OOB id row ${t} not zero`);
    }
    destroyWeight(w);
    for (const b of [gids, out]) b.destroy();
  }
});

Deno.test("embedding from a real bf16 [60000, 1536] table over the 128 MiB binding limit", async () => {
  const ctx = await gpuContext();
  const [rows, cols] = [60000, 1536]; // 184 MB in bf16
  const bits = new Uint16Array(rows * cols);
  // A cheap pattern that identifies the row (7919 is odd, so rows differing by < 2048 differ everywhere); all
  // values are normal bf16 numbers in [2^-7, 2^-3).
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const rk = (r * 7919) & 0x7ff;
    for (let c = 0; c < cols; c++) bits[base + c] = 0x3c00 + ((rk + c * 31) & 0x7ff);
  }
  const bytes = new Uint8Array(bits.buffer);
  const w = uploadWeight(ctx, "E_big", "bf16", rows, cols, bytes);
  if (w.chunks.length < 2) {
    throw new Error(`expected several chunks under the binding limit ${ctx.maxBinding}`);
  }
  const boundary = w.chunks[1].rowStart;
  const ids = [0, 1, boundary - 1, boundary, boundary + 1, 12345, rows - 1, rows, 31337, 59000];
  const gids = ctx.upload(new Uint32Array(ids), "ids");
  const out = ctx.createBuffer(ids.length * cols * 4, "out");
  poison(ctx, out);
  embedding(ctx, w, gids, out, ids.length);
  assertClose(
    await ctx.readF32(out),
    embeddingRef(bytes, "bf16", rows, cols, ids),
    0,
    "embedding 60000×1536",
  );
  destroyWeight(w);
  for (const b of [gids, out]) b.destroy();
});

Deno.test("embedding dequantizes q8 / q4 tables (padded last group, chunks) exactly as the CPU reference", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  for (const format of ["q8", "q4"] as const) {
    for (const [rows, cols] of [[300, 72], [64, 1536]]) {
      const q = quantizeRows(format, randomF32(rows * cols, next, 2), rows, cols);
      const rowBytes = q.data.byteLength / rows;
      const writer = createWeight(ctx, `E_${format}`, format, rows, cols, 13 * rowBytes);
      writer.write(0, q.data, q.scales);
      const w = writer.weight;
      if (w.chunks.length < 2) throw new Error("test must exercise chunking");
      const ids: number[] = [0, rows - 1, 13, 12, rows];
      while (ids.length < 30) ids.push(Math.floor(next() * rows));
      const gids = ctx.upload(new Uint32Array(ids), "ids");
      const out = ctx.createBuffer(ids.length * cols * 4, "out");
      poison(ctx, out);
      embedding(ctx, w, gids, out, ids.length);
      const table = dequantizeRef(format, q.data, q.scales, rows, cols);
      const want = new Float32Array(ids.length * cols);
      ids.forEach((id, t) => id < rows && want.set(table.subarray(id * cols, (id + 1) * cols), t * cols));
      // q · scale is one f32 product of exact operands on both sides: bit-exact.
      assertClose(await ctx.readF32(out), want, 0, `embedding ${format} [${rows}, ${cols}]`);
      destroyWeight(w);
      for (const b of [gids, out]) b.destroy();
    }
  }
});
