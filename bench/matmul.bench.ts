/**
 * Prefill matmul at R1-Distill-Qwen-1.5B shapes: 512 tokens × (rows × cols) bf16 weights. Prints GFLOP/s
 * (2·M·rows·cols per call, median iteration) when the run ends. This adapter is slow: each case is one call.
 * Default path on a CPU adapter: the texture matvec over all 512 rows; one case runs the tiled kernel.
 */
import { GpuContext } from "../src/gpu/context.ts";
import { uploadWeight, type Weight } from "../src/gpu/weights.ts";
import { matmul, type MatmulOptions } from "../src/ops/matmul.ts";
import { median, randomWeightBytes } from "./roofline.ts";

const M = 512;
const ctx = await GpuContext.create();
const stats = new Map<string, { flop: number; ms: number[] }>();

function bench(rows: number, cols: number, opts: MatmulOptions = {}): void {
  const name = `matmul bf16 ${M}x${rows}x${cols}${opts.path ? ` (${opts.path})` : ""}`;
  let w: Weight | null = null;
  let x: GPUBuffer, y: GPUBuffer;
  Deno.bench({
    name,
    group: "matmul",
    n: 2,
    warmup: 1,
    async fn(b) {
      if (!w) {
        w = uploadWeight(ctx, "w", "bf16", rows, cols, randomWeightBytes("bf16", rows * cols));
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

globalThis.addEventListener("unload", () => {
  console.log(`\nmatmul throughput (${M} tokens, median iteration):`);
  for (const [name, s] of stats) {
    console.log(`  ${name.padEnd(32)} ${(s.flop / median(s.ms) / 1e6).toFixed(2)} GFLOP/s`);
  }
});
