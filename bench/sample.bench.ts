/**
 * GPU token selection over one row of 151936 logits (the Qwen2.5 vocabulary): argmax, temperature-only,
 * top-k + top-p and top-p alone on LLM-shaped (peaked) logits, and top-p on flat logits (the full-row
 * fallback path). One iteration records the op `reps` times and syncs once (a lone sync costs ~12 ms on
 * lavapipe); the per-op time and achieved GB/s of logit bytes (one read of the row) print at the end.
 */
import { GpuContext } from "../src/gpu/context.ts";
import { argmaxRows, sampleRows } from "../src/ops/sample.ts";
import type { SampleParams } from "../src/ref/sample.ts";

const VOCAB = 151936;
const REPS = 10;
const ctx = await GpuContext.create();
const stats = new Map<string, { ms: number; n: number }>();

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
}
const next = lcg(1);
// Peaked: a broad bulk in [-3, 3) and a dozen logits 12–18 above it, like a trained LM's next-token logits.
const peaked = Float32Array.from({ length: VOCAB }, () => next() * 6 - 3);
for (let j = 0; j < 12; j++) peaked[Math.floor(next() * VOCAB)] = 12 + 6 * next();
const flat = Float32Array.from({ length: VOCAB }, () => next() * 6 - 3);
const peakedBuf = ctx.upload(peaked, "peaked");
const flatBuf = ctx.upload(flat, "flat");
const ids = ctx.createBuffer(4, "ids");

function bench(name: string, record: () => void): void {
  record(); // compile outside the timed loop
  Deno.bench({
    name: `${name} ×${REPS}`,
    n: 5,
    warmup: 1,
    async fn(b) {
      b.start();
      const t0 = performance.now();
      for (let i = 0; i < REPS; i++) record();
      await ctx.sync();
      const dt = performance.now() - t0;
      b.end();
      const s = stats.get(name) ?? { ms: 0, n: 0 };
      s.ms += dt / REPS;
      s.n++;
      stats.set(name, s);
    },
  });
}

globalThis.addEventListener("unload", () => {
  console.log(`\nper op (1 row × ${VOCAB} f32 logits; GB/s = logit bytes / time):`);
  for (const [name, s] of stats) {
    const ms = s.ms / s.n;
    console.log(
      `  ${name.padEnd(44)} ${ms.toFixed(3).padStart(9)} ms ${(VOCAB * 4 / (ms * 1e6)).toFixed(2)} GB/s`,
    );
  }
});

const rows = (logits: GPUBuffer) => ({ logits, rows: 1, vocab: VOCAB });
let step = 0;
const draw = (p: Omit<SampleParams, "seed" | "step">, logits: GPUBuffer) => () =>
  sampleRows(ctx, rows(logits), { ...p, seed: 1234, step: step++ }, ids);

bench("argmax", () => argmaxRows(ctx, rows(peakedBuf), ids));
bench("temperature 0.6", draw({ temperature: 0.6 }, peakedBuf));
bench("top-k 50 + top-p 0.95, peaked", draw({ temperature: 0.6, topK: 50, topP: 0.95 }, peakedBuf));
bench("top-p 0.95, peaked", draw({ temperature: 0.6, topP: 0.95 }, peakedBuf));
bench("top-p 0.9, flat (fallback path)", draw({ temperature: 1, topP: 0.9 }, flatBuf));

// Finish the compile-time records above before the first timed iteration.
await ctx.sync();
