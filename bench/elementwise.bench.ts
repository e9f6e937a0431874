/**
 * Elementwise / normalisation kernels at DeepSeek-R1-Distill-Qwen-1.5B shapes (dim 1536, 12 q / 2 kv heads of
 * 128, MLP hidden 8960, vocab 151936), decode (1 row) and prefill (512 rows).
 *
 * One bench iteration records the op `reps` times into one batch and waits for the GPU once: a lone
 * `ctx.sync()` costs ~12 ms on Deno + lavapipe (completion polling), which would otherwise swamp every
 * decode-sized op. In the forward pass these ops sit inside one large batch too, so the per-op figure
 * (iteration time / reps) is the relevant one. Achieved GB/s (minimal bytes each op must read + write, per op
 * median time) is printed when the run ends.
 */
import { GpuContext } from "../src/gpu/context.ts";
import { uploadWeight } from "../src/gpu/weights.ts";
import { ropeInvFreq } from "../src/model/rope_freq.ts";
import { embedding } from "../src/ops/embedding.ts";
import { rmsnorm } from "../src/ops/rmsnorm.ts";
import { ropeQK, uploadInvFreq } from "../src/ops/rope.ts";
import { siluMul } from "../src/ops/silu_mul.ts";
import { add } from "./dev/add.ts";
import { addRmsnorm } from "./dev/add_rmsnorm.ts";
import { softmax } from "./dev/softmax.ts";

const DIM = 1536;
const Q_HEADS = 12;
const KV_HEADS = 2;
const HEAD_DIM = 128;
const HIDDEN = 8960;
const VOCAB = 151936;
const PREFILL = 512;

const ctx = await GpuContext.create();
const buf = (floats: number, label: string) => ctx.createBuffer(floats * 4, label);
const stats = new Map<string, { bytes: number; ms: number[] }>();

/** Registers a benchmark of `record` (which records one op moving `bytes`), batched `reps` times per sync. */
function bench(name: string, group: string, bytes: number, reps: number, record: () => void, n = 10): void {
  record(); // compile the pipeline outside the timed loop
  Deno.bench({
    name: `${name} ×${reps}`,
    group,
    n,
    warmup: 2,
    async fn(b) {
      b.start();
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) record();
      await ctx.sync();
      const dt = performance.now() - t0;
      b.end();
      const s = stats.get(name) ?? { bytes, ms: [] };
      s.ms.push(dt / reps);
      stats.set(name, s);
    },
  });
}

globalThis.addEventListener("unload", () => {
  console.log("\nper op (batched; minimal bytes / median time per op, warmup included in the median):");
  for (const [name, s] of stats) {
    const median = s.ms.sort((a, b) => a - b)[s.ms.length >> 1];
    console.log(
      `  ${name.padEnd(40)} ${(s.bytes / 1e6).toFixed(3).padStart(8)} MB ${
        median.toFixed(3).padStart(9)
      } ms ${(s.bytes / (median * 1e6)).toFixed(2).padStart(7)} GB/s`,
    );
  }
});

// Buffers sized for the prefill shapes; decode uses their first rows.
const x = buf(PREFILL * DIM, "x");
const normOut = buf(PREFILL * DIM, "norm_out");
const normW = ctx.upload(new Float32Array(DIM).fill(1), "norm_w");
const q = buf(PREFILL * Q_HEADS * HEAD_DIM, "q");
const k = buf(PREFILL * KV_HEADS * HEAD_DIM, "k");
const positions = ctx.upload(Uint32Array.from({ length: PREFILL }, (_, i) => i + 1000), "pos");
const invFreq = uploadInvFreq(ctx, ropeInvFreq(HEAD_DIM, 10000));
const gate = buf(PREFILL * HIDDEN, "gate");
const up = buf(PREFILL * HIDDEN, "up");
const act = buf(PREFILL * HIDDEN, "act");
const logits = buf(VOCAB, "logits");
const probs = buf(VOCAB, "probs");
const scores = buf(Q_HEADS * PREFILL * PREFILL, "scores");
const scoreProbs = buf(Q_HEADS * PREFILL * PREFILL, "score_probs");
const ids = ctx.upload(Uint32Array.from({ length: PREFILL }, (_, i) => (i * 7919) % VOCAB), "ids");
const embedOut = buf(PREFILL * DIM, "embed_out");
// A full-size bf16 table (467 MB, 4 chunks under a 128 MiB binding limit); contents do not matter.
const table = uploadWeight(ctx, "embed", "bf16", VOCAB, DIM, new Uint8Array(VOCAB * DIM * 2));
await ctx.sync();

// Decode ops are tiny: batch many per sync. Prefill ops are large: a couple.
for (const [phase, rows, reps] of [["decode", 1, 50], ["prefill", PREFILL, 2]] as const) {
  bench(
    `rmsnorm ${rows}×${DIM}`,
    "rmsnorm",
    (2 * rows * DIM + DIM) * 4,
    reps,
    () => rmsnorm(ctx, x, normW, normOut, rows, DIM, 1e-6),
  );
  bench(
    `addRmsnorm ${rows}×${DIM}`,
    "rmsnorm",
    (4 * rows * DIM + DIM) * 4,
    reps,
    () => addRmsnorm(ctx, x, embedOut, normW, normOut, rows, DIM, 1e-6),
  );
  bench(
    `ropeQK ${rows}×(${Q_HEADS}+${KV_HEADS})×${HEAD_DIM}`,
    "rope",
    2 * rows * (Q_HEADS + KV_HEADS) * HEAD_DIM * 4 + rows * 4,
    reps,
    () => ropeQK(ctx, q, k, positions, invFreq, rows, Q_HEADS, KV_HEADS, HEAD_DIM),
  );
  bench(
    `siluMul ${rows}×${HIDDEN}`,
    "silu_mul",
    3 * rows * HIDDEN * 4,
    reps,
    () => siluMul(ctx, gate, up, act, rows, HIDDEN),
  );
  bench(
    `embedding bf16 ${rows} ids (${table.chunks.length} chunks)`,
    "embedding",
    rows * DIM * (2 + 4) + rows * 4,
    reps,
    () => embedding(ctx, table, ids, embedOut, rows),
  );
  if (phase === "decode") {
    bench(
      `softmax 1×${VOCAB} (sampling)`,
      "softmax",
      2 * VOCAB * 4,
      10,
      () => softmax(ctx, logits, probs, 1, VOCAB),
    );
  } else {
    // Prefill softmax where it occurs: attention scores, 12 heads × 512 queries × 512 keys.
    const rowsS = Q_HEADS * PREFILL;
    bench(
      `softmax ${rowsS}×${PREFILL} (attn scores)`,
      "softmax",
      2 * rowsS * PREFILL * 4,
      1,
      () => softmax(ctx, scores, scoreProbs, rowsS, PREFILL),
    );
  }
}

// Baselines on the same adapter, for scale: the template add kernel and a plain buffer copy.
bench(
  "baseline add 512×8960",
  "baseline",
  3 * PREFILL * HIDDEN * 4,
  2,
  () => add(ctx, gate, up, act, PREFILL * HIDDEN),
);
bench(
  "baseline copyBufferToBuffer 512×8960",
  "baseline",
  2 * PREFILL * HIDDEN * 4,
  2,
  () => ctx.copy(gate, 0, act, 0, PREFILL * HIDDEN * 4),
);

// The fixed cost of a lone op: one tiny dispatch, then wait for completion (submit + completion polling).
Deno.bench({
  name: "lone rmsnorm 1×1536 + sync (latency)",
  group: "overhead",
  n: 10,
  warmup: 2,
  async fn() {
    rmsnorm(ctx, x, normW, normOut, 1, DIM, 1e-6);
    await ctx.sync();
  },
});
