/**
 * Decode matvec at R1-Distill-Qwen-1.5B shapes (rows × cols), bf16 weights, batch 1 (and batch 8 for one
 * shape), and q8 / q4 weights at the MLP and LM-head shapes. One iteration records enough calls to read ~60 MB of weights, cycling over ≥ 96 MiB of weight
 * copies so they stream from memory (not the 32 MiB L3), then syncs once (a sync costs ~10 ms here).
 * Achieved GB/s (weight bytes read per second, median iteration) is printed when the run ends.
 */
import { GpuContext } from "../src/gpu/context.ts";
import { createWeight, type Weight } from "../src/gpu/weights.ts";
import { bytesToF32 } from "../src/model/safetensors.ts";
import { type QuantFormat, quantizeRows } from "../src/model/quantize.ts";
import { matvec, type MatvecOptions } from "../src/ops/matvec.ts";
import { matvecRowloop } from "./dev/matvec_rowloop.ts";
import { DECODE_SHAPES, median, randomWeightBytes, weightCopies } from "./roofline.ts";

const ctx = await GpuContext.create();
const stats = new Map<string, { bytes: number; ms: number[] }>();

/** Copies of a q8 / q4 weight (random bf16 values, quantized), ≥ 96 MiB in all so that they stream from DRAM. */
function quantCopies(format: QuantFormat, rows: number, cols: number, buffer: boolean): Weight[] {
  const q = quantizeRows(format, bytesToF32("bf16", randomWeightBytes("bf16", rows * cols)), rows, cols);
  const k = Math.max(1, Math.ceil((96 << 20) / q.data.byteLength));
  return Array.from({ length: k }, (_, i) => {
    const writer = createWeight(ctx, `w${i}`, format, rows, cols, undefined, { keepBuffer: buffer });
    writer.write(0, q.data, q.scales);
    return writer.weight;
  });
}

function bench(
  rows: number,
  cols: number,
  opts: MatvecOptions = {},
  label = "",
  format?: QuantFormat,
  kernel: typeof matvec = matvec,
): void {
  const name = `matvec ${format ?? "bf16"} ${rows}x${cols}${label}`;
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
        ws = format
          ? quantCopies(format, rows, cols, opts.path === "buffer")
          : weightCopies(ctx, "bf16", rows, cols);
        x = ctx.createBuffer(batch * cols * 4, "x");
        y = ctx.createBuffer(batch * rows * 4, "y");
        k = Math.max(1, Math.ceil(60e6 / ws[0].bytes));
        kernel(ctx, ws[0], x, y, opts);
        await ctx.sync();
      }
      b.start();
      const t0 = performance.now();
      for (let j = 0; j < k; j++) kernel(ctx, ws[i++ % ws.length], x, y, opts);
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
// The storage-buffer kernel it replaced (one invocation per 8 whole rows), for comparison.
bench(
  8960,
  1536,
  { path: "buffer" },
  " (storage path, previous row-loop kernel)",
  undefined,
  (c, w, x, y) => matvecRowloop(c, w, x, y),
);
// Quantized weights: 8- and 4-bit values in groups of 32 with f16 scales (GB/s counts the bytes they hold).
for (const format of ["q8", "q4"] as const) {
  for (const [rows, cols] of [[8960, 1536], [1536, 8960], [151936, 1536]]) bench(rows, cols, {}, "", format);
}
bench(8960, 1536, { path: "buffer" }, " (storage-buffer path)", "q4");

globalThis.addEventListener("unload", () => {
  console.log("\nmatvec achieved bandwidth (weight bytes / median iteration, incl. one ~10 ms sync):");
  for (const [name, s] of stats) {
    console.log(`  ${name.padEnd(44)} ${(s.bytes / median(s.ms) / 1e6).toFixed(2)} GB/s`);
  }
});
