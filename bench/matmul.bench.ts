/**
 * Prefill matmul at R1-Distill-Qwen-1.5B shapes: 512 tokens × (rows × cols) bf16 weights. Prints GFLOP/s
 * (2·M·rows·cols per call, median iteration) when the run ends. This adapter is slow: each case is one call.
 * Default path on a CPU adapter: the texture matvec over all 512 rows; one case runs the tiled kernel. q8 / q4
 * rows quantize the same random bf16 values.
 */
import { GpuContext } from "../src/gpu/context.ts";
import { createWeight, uploadWeight, type Weight } from "../src/gpu/weights.ts";
import { bytesToF32 } from "../src/model/safetensors.ts";
import { type QuantFormat, quantizeRows } from "../src/model/quantize.ts";
import { matmul, type MatmulOptions } from "../src/ops/matmul.ts";
import { median, randomWeightBytes } from "./roofline.ts";

const M = 512;
const ctx = await GpuContext.create();
const stats = new Map<string, { flop: number; ms: number[] }>();

/** A [rows, cols] weight of random bf16 values, quantized to `format` when given. */
function weight(rows: number, cols: number, format?: QuantFormat): Weight {
  const bytes = randomWeightBytes("bf16", rows * cols);
  if (!format) return uploadWeight(ctx, "w", "bf16", rows, cols, bytes);
  const q = quantizeRows(format, bytesToF32("bf16", bytes), rows, cols);
  const writer = createWeight(ctx, "w", format, rows, cols);
  writer.write(0, q.data, q.scales);
  return writer.weight;
}

function bench(rows: number, cols: number, opts: MatmulOptions = {}, format?: QuantFormat): void {
  const name = `matmul ${format ?? "bf16"} ${M}x${rows}x${cols}${opts.path ? ` (${opts.path})` : ""}`;
  let w: Weight | null = null;
  let x: GPUBuffer, y: GPUBuffer;
  Deno.bench({
    name,
    group: "matmul",
    n: 2,
    warmup: 1,
    async fn(b) {
      if (!w) {
        w = weight(rows, cols, format);
        x = ctx.createBuffer(M * cols * 4, "x");
        y = ctx.createBuffer(M * rows * 4, "y");
        ctx.write(x, new Float32Array(M * cols).fill(0.25));
        matmul(ctx, w, x, y, M, opts);
        await ctx.sync();
      }
      b.start();
      const t0 = performance.now();
      matmul(ctx, w, x, y, M, opts);
      await ctx.sync();
      const ms = performance.now() - t0;
      b.end();
      let s = stats.get(name);
      if (!s) stats.set(name, s = { flop: 2 * M * rows * cols, ms: [] });
      s.ms.push(ms);
    },
  });
}

// q/o and k/v projections, MLP up/gate and down. (The LM head is applied to the last token only.)
for (const [rows, cols] of [[1536, 1536], [256, 1536], [8960, 1536], [1536, 8960]]) bench(rows, cols);
// The workgroup-tiled kernel (the default where weights have no texture copy), for comparison.
bench(256, 1536, { path: "tiled" });
// Quantized weights (dequantized as the kernels read them): the MLP gate/up shape on both paths.
for (const format of ["q8", "q4"] as const) {
  bench(8960, 1536, {}, format);
  bench(256, 1536, { path: "tiled" }, format);
}

globalThis.addEventListener("unload", () => {
  console.log(`\nmatmul throughput (${M} tokens, median iteration):`);
  for (const [name, s] of stats) {
    console.log(`  ${name.padEnd(32)} ${(s.flop / median(s.ms) / 1e6).toFixed(2)} GFLOP/s`);
  }
});
