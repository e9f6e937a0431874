/**
 * Decode matvec at R1-Distill-Qwen-1.5B shapes (rows × cols), bf16 weights, batch 1 (and batch 8 for one
 * shape). One iteration records enough calls to read ~60 MB of weights, cycling over ≥ 96 MiB of weight
 * copies so they stream from memory (not the 32 MiB L3), then syncs once (a sync costs ~10 ms here).
 * Achieved GB/s (weight bytes read per second, median iteration) is printed when the run ends.
 */
import { GpuContext } from "../src/gpu/context.ts";
import type { Weight } from "../src/gpu/weights.ts";
import { matvec, type MatvecOptions } from "../src/ops/matvec.ts";
import { DECODE_SHAPES, median, weightCopies } from "./roofline.ts";

const ctx = await GpuContext.create();
const stats = new Map<string, { bytes: number; ms: number[] }>();

function bench(rows: number, cols: number, opts: MatvecOptions = {}, label = ""): void {
  const name = `matvec bf16 ${rows}x${cols}${label}`;
  let ws: Weight[] | null = null;
  let x: GPUBuffer, y: GPUBuffer, k = 0, i = 0;
  const batch = opts.batch ?? 1;
  Deno.bench({
    name,
    group: "matvec",
    n: 4,
    warmup: 1,
    async fn(b) {
      if (!ws) {
        // Lazily, so only the selected benches allocate (the LM head alone is 467 MB).
        ws = weightCopies(ctx, "bf16", rows, cols);
        x = ctx.createBuffer(batch * cols * 4, "x");
        y = ctx.createBuffer(batch * rows * 4, "y");
        k = Math.max(1, Math.ceil(60e6 / ws[0].bytes));
        matvec(ctx, ws[0], x, y, opts);
        await ctx.sync();
      }
      b.start();
      const t0 = performance.now();
      for (let j = 0; j < k; j++) matvec(ctx, ws[i++ % ws.length], x, y, opts);
      await ctx.sync();
      const ms = performance.now() - t0;
      b.end();
      let s = stats.get(name);
      if (!s) stats.set(name, s = { bytes: k * ws[0].bytes, ms: [] });
      s.ms.push(ms);
    },
  });
}

for (const [rows, cols] of DECODE_SHAPES) bench(rows, cols);
bench(8960, 1536, { batch: 8 }, " batch 8");
bench(8960, 1536, { path: "buffer" }, " (storage-buffer path)");

globalThis.addEventListener("unload", () => {
  console.log("\nmatvec achieved bandwidth (weight bytes / median iteration, incl. one ~10 ms sync):");
  for (const [name, s] of stats) {
    console.log(`  ${name.padEnd(44)} ${(s.bytes / median(s.ms) / 1e6).toFixed(2)} GB/s`);
  }
});
