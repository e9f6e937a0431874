/**
 * Attention at DeepSeek-R1-Distill-Qwen-1.5B shapes (12 query heads, 2 KV heads, headDim 128).
 *
 * Decode: one query over len = 1k, 4k, 8k cached tokens, with and without the per-token score output (fresh
 * scores; the decayed variant costs the same plus one read). GB/s counts the K/V bytes every step must read
 * (2 · len · nKv · headDim · 4). Prefill: 512 causal queries from an empty cache, with the observation-window
 * scores (W = 32) and without; GFLOP/s counts 4 · nHeads · headDim per visible (query, key) pair.
 * One iteration records `reps` ops and syncs once (a lone sync costs ~12 ms on lavapipe); per-op figures and
 * the score overhead as a fraction print at the end. Also paired: a batch of 16 sequences' decode attention as
 * one batched call against 16 single calls (`deno bench -A --filter none bench/attention.bench.ts` prints the
 * paired figures alone, in ~30 s).
 */
import { GpuContext } from "../src/gpu/context.ts";
import {
  attentionDecodeBatch,
  attentionPrefill,
  type DecodeBatchArgs,
  type DecodeSequence,
} from "../src/ops/attention.ts";

const SHAPE = { nHeads: 12, nKvHeads: 2, headDim: 128 };
const LENS = [1024, 4096, 8192];
const PREFILL = 512;
const WINDOW = 32;

const ctx = await GpuContext.create();
const stats = new Map<string, { ms: number; n: number; work: number; unit: string }>();

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296 * 2 - 1;
}
const next = lcg(7);

/** Decode attention of one sequence: a batch of one. */
function attentionDecode(ctx: GpuContext, a: Omit<DecodeBatchArgs, "seqs"> & DecodeSequence): void {
  const { k, v, len, scores, ...rest } = a;
  attentionDecodeBatch(ctx, { ...rest, seqs: [{ k, v, len, scores }] });
}
const rand = (n: number) => Float32Array.from({ length: n }, next);

const maxLen = Math.max(...LENS);
const row = SHAPE.nKvHeads * SHAPE.headDim;
const k = ctx.upload(rand(maxLen * row), "k");
const v = ctx.upload(rand(maxLen * row), "v");
const q = ctx.upload(rand(PREFILL * SHAPE.nHeads * SHAPE.headDim), "q");
const out = ctx.createBuffer(PREFILL * SHAPE.nHeads * SHAPE.headDim * 4, "out");
const scores = ctx.createBuffer(maxLen * 4, "scores");

function bench(name: string, work: number, unit: string, reps: number, record: () => void): void {
  record(); // compile outside the timed loop
  Deno.bench({
    name: `${name} ×${reps}`,
    n: 6,
    warmup: 2,
    async fn(b) {
      b.start();
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) record();
      await ctx.sync();
      const dt = performance.now() - t0;
      b.end();
      const s = stats.get(name) ?? { ms: 0, n: 0, work, unit };
      s.ms += dt / reps;
      s.n++;
      stats.set(name, s);
    },
  });
}

globalThis.addEventListener("unload", () => {
  if (stats.size === 0) return; // every bench filtered out: only the paired figures above ran
  console.log("\nper op (batched):");
  const mean = (name: string) => {
    const s = stats.get(name);
    return s ? s.ms / s.n : NaN;
  };
  for (const [name, s] of stats) {
    const ms = s.ms / s.n;
    console.log(
      `  ${name.padEnd(40)} ${ms.toFixed(3).padStart(9)} ms ${(s.work / (ms * 1e6)).toFixed(2)} ${s.unit}`,
    );
  }
  for (const len of LENS) {
    const a = mean(`decode len=${len}`), b = mean(`decode len=${len} +scores`);
    console.log(`  score overhead at len=${len}: ${((b - a) / a * 100).toFixed(1)}%`);
  }
  const a = mean(`prefill T=${PREFILL}`), b = mean(`prefill T=${PREFILL} +window`);
  console.log(`  window-score overhead at T=${PREFILL}: ${((b - a) / a * 100).toFixed(1)}%`);
});

// Paired measurement of the score overhead: alternate the two variants and keep each one's best time, so
// the ratio is not skewed by load that drifts between separately scheduled benches.
async function timeBatch(reps: number, record: () => void): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) record();
  await ctx.sync();
  return (performance.now() - t0) / reps;
}
console.log(
  "decode, paired (best of 5 alternating rounds of 20 steps); K/V via storage buffers or texture copies:",
);
for (const len of LENS) {
  const base = { ...SHAPE, q, k, v, out, len };
  const variants: [string, () => void][] = [
    ["buffer", () => attentionDecode(ctx, { ...base, texture: false })],
    ["texture", () => attentionDecode(ctx, { ...base, texture: true })],
    ["texture+scores", () => attentionDecode(ctx, { ...base, texture: true, scores: { buffer: scores } })],
    [
      "texture+decayed",
      () => attentionDecode(ctx, { ...base, texture: true, scores: { buffer: scores, gamma: 0.9 } }),
    ],
  ];
  const best = variants.map(() => Infinity);
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < variants.length; i++) {
      best[i] = Math.min(best[i], await timeBatch(20, variants[i][1]));
    }
  }
  const gbs = (ms: number) => (2 * len * row * 4 / (ms * 1e6)).toFixed(2);
  const tex = best[1];
  console.log(
    `  len=${len}: ` + variants.map(([name], i) =>
      `${name} ${best[i].toFixed(2)} ms (${gbs(best[i])} GB/s)`
    ).join(
      " | ",
    ) +
      ` | score overhead ${((best[2] - tex) / tex * 100).toFixed(1)}% fresh, ${
        ((best[3] - tex) / tex * 100).toFixed(1)
      }% decayed`,
  );
}

{
  // A decode step's attention for a batch of 16 sequences of different lengths (each with its own K/V slice
  // and scores): one batched call against 16 single-sequence calls, paired. Per-dispatch overhead is what the
  // batched call saves (lavapipe: ~0.25 ms per dispatch), so short caches gain the most.
  for (const per of [64, 512]) {
    const B = 16;
    const seqs = Array.from({ length: B }, (_, b) => ({
      k: { buffer: k, offset: b * per * row * 4 },
      v: { buffer: v, offset: b * per * row * 4 },
      len: per - (b % 4) * (per / 8),
      scores: { buffer: scores, offset: b * per, gamma: 0.95 },
    }));
    const batched = () => attentionDecodeBatch(ctx, { ...SHAPE, q, out, seqs });
    const single = () =>
      seqs.forEach((sq, b) =>
        attentionDecode(ctx, {
          ...SHAPE,
          q,
          qOffset: b * SHAPE.nHeads * SHAPE.headDim,
          out,
          outOffset: b * SHAPE.nHeads * SHAPE.headDim,
          ...sq,
        })
      );
    let a = Infinity, c = Infinity;
    for (let round = 0; round < 5; round++) {
      a = Math.min(a, await timeBatch(4, single));
      c = Math.min(c, await timeBatch(4, batched));
    }
    console.log(
      `decode, ${B} sequences of ≤ ${per} tokens with scores, paired: ${B} calls ${a.toFixed(2)} ms | ` +
        `one batched call ${c.toFixed(2)} ms (${(a / c).toFixed(2)}×)`,
    );
  }
}

{
  // Prefill, paired: storage-buffer vs texture K/V (2 alternating rounds, best of each).
  const pre = { ...SHAPE, q, k, v, out, T: PREFILL, start: 0 };
  let a = Infinity, b = Infinity;
  for (let round = 0; round < 2; round++) {
    a = Math.min(a, await timeBatch(1, () => attentionPrefill(ctx, { ...pre, texture: false })));
    b = Math.min(b, await timeBatch(1, () => attentionPrefill(ctx, { ...pre, texture: true })));
  }
  const gf = (ms: number) =>
    (4 * SHAPE.nHeads * SHAPE.headDim * (PREFILL * (PREFILL + 1) / 2) / (ms * 1e6)).toFixed(2);
  console.log(
    `prefill T=${PREFILL}, paired: buffer ${a.toFixed(0)} ms (${gf(a)} GFLOP/s) | texture ${
      b.toFixed(0)
    } ms (${gf(b)} GFLOP/s)`,
  );
}

for (const len of LENS) {
  const bytes = 2 * len * row * 4;
  const base = { ...SHAPE, q, k, v, out, len };
  bench(`decode len=${len}`, bytes, "GB/s", 20, () => attentionDecode(ctx, base));
  bench(
    `decode len=${len} +scores`,
    bytes,
    "GB/s",
    20,
    () => attentionDecode(ctx, { ...base, scores: { buffer: scores } }),
  );
}
const flops = 4 * SHAPE.nHeads * SHAPE.headDim * (PREFILL * (PREFILL + 1) / 2);
const pre = { ...SHAPE, q, k, v, out, T: PREFILL, start: 0 };
bench(`prefill T=${PREFILL}`, flops, "GFLOP/s", 1, () => attentionPrefill(ctx, pre));
bench(
  `prefill T=${PREFILL} +window`,
  flops,
  "GFLOP/s",
  1,
  () => attentionPrefill(ctx, { ...pre, window: { buffer: scores, size: WINDOW } }),
);

// Finish the compile-time records above before the first timed iteration.
await ctx.sync();
