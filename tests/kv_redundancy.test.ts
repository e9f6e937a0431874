/**
 * R-KV's key-redundancy kernel against its CPU reference: fresh random keys with planted near-duplicates, in
 * entries spread over two K buffers (as arena shards hold several sequences' layers), output poisoned first.
 */
import { ok as assert } from "node:assert";
import { KV_DTYPES, kvLayout } from "../src/ops/kv_layout.ts";
import { kvRedundancy, type RedundancyEntry, redundancyLayout } from "../src/ops/kv_redundancy.ts";
import { decodeKvRows, encodeKvRows } from "../src/ref/kv_codec.ts";
import { keyCosine, kvRedundancyRef } from "../src/ref/kv_redundancy.ts";
import { assertClose, freshSeed, gpuContext, poison, rng } from "./helpers.ts";

// Each output is a mean of ≤ n f32 cosines (dot products of ≤ 64 terms, scaled by two inverse square roots):
// measured ~1e-7 of the largest output; the bound leaves a wide margin but catches any wrong or missing term
// (one cosine of ~0.5 among n ≤ 150 moves an output by ≥ 3e-3).
const BOUND = 2e-5;

/**
 * A threshold from 0.5 up at least 1e-3 away from every cosine of every entry's keys, so f32 and f64 agree on
 * which pairs are near-duplicates.
 */
function clearThreshold(sets: { keys: Float32Array; n: number }[], heads: number, headDim: number): number {
  const row = heads * headDim;
  const cos: number[] = [];
  for (const { keys, n } of sets) {
    for (let h = 0; h < heads; h++) {
      for (let a = 0; a < n; a++) {
        for (let b = a + 1; b < n; b++) cos.push(keyCosine(keys, row, headDim, h, a, b));
      }
    }
  }
  for (let t = 0.5;; t += 0.0037) if (cos.every((c) => Math.abs(c - t) > 1e-3)) return t;
}

Deno.test("kv redundancy matches the CPU reference (f32/f16/int8 keys, planted duplicates, two shards)", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const shapes: [number, number][] = [[2, 32], [4, 8], [1, 64], [6, 4]];
  for (const dtype of KV_DTYPES) {
    for (const [heads, headDim] of shapes) {
      const layout = kvLayout(dtype, heads, headDim);
      const row = heads * headDim;
      const slots = 400;
      const shards: Float32Array[] = [new Float32Array(slots * row), new Float32Array(slots * row)];
      for (const s of shards) for (let i = 0; i < s.length; i++) s[i] = next() * 2 - 1;
      // Entries: [shard, base, len]; lengths 1, small and past one workgroup; the 0-length one writes nothing.
      const spec: [number, number, number][] = [[0, 0, 37], [0, 64, 150], [1, 16, 1], [1, 240, 90], [
        0,
        300,
        0,
      ]];
      for (const [sh, base, len] of spec) {
        // Near-duplicates: about one token in four copies an earlier one, plus noise (cosine well above 0.5).
        for (let j = 1; j < len; j++) {
          if (next() < 0.25) {
            const src = Math.floor(next() * j);
            for (let c = 0; c < row; c++) {
              shards[sh][(base + j) * row + c] = shards[sh][(base + src) * row + c] + 0.2 * (next() - 0.5);
            }
          }
        }
        if (len > 5) shards[sh].fill(0, (base + 3) * row, (base + 4) * row); // a zero key: cosine 0, not NaN
      }
      const kb = shards.map((s, i) => ctx.upload(encodeKvRows(layout, s, slots), `k${i}`));
      // The reference sees the keys as stored (f16 rounding, int8 quantization), as attention does.
      for (let i = 0; i < shards.length; i++) {
        shards[i] = decodeKvRows(layout, encodeKvRows(layout, shards[i], slots), slots);
      }
      const { offsets, floats } = redundancyLayout(spec.map(([, , len]) => ({ len })), heads);
      // Entries given out of order: each writes at its own offset.
      const entries: RedundancyEntry[] = spec.map(([sh, base, len], i) => ({
        k: kb[sh],
        base,
        len,
        offset: offsets[i],
      }))
        .reverse();
      const threshold = clearThreshold(
        spec.map(([sh, base, len]) => ({
          keys: shards[sh].subarray(base * row, (base + len) * row),
          n: len,
        })),
        heads,
        headDim,
      );
      const out = ctx.createBuffer(Math.max(4, floats * 4), "red");
      poison(ctx, out);
      kvRedundancy(ctx, entries, layout, threshold, out);
      const got = await ctx.readF32(out, 0, floats);
      spec.forEach(([sh, base, len], i) => {
        const keys = shards[sh].subarray(base * row, (base + len) * row);
        const want = kvRedundancyRef(keys, len, heads, headDim, threshold);
        const have = got.subarray(offsets[i], offsets[i] + heads * len);
        assertClose(
          have,
          want,
          BOUND,
          `redundancy ${dtype} ${heads}×${headDim} entry ${i} (len ${len}, θ ${threshold})`,
          0.05,
        );
      });
      for (const b of [...kb, out]) {
        b.destroy();
      }
    }
  }
});

Deno.test("kv redundancy reference: hand-computed values", () => {
  // One head, 2-d keys: a = (1,0), b = (1,0) (a's duplicate), c = (0,1), n = 3.
  // cos(a,b) = 1, cos(a,c) = cos(b,c) = 0. With θ = 0.5: a's newest twin is b, b's is a; c has none.
  // red[a] = (cos(b,a) unless a is b's twin: it is → 0) + cos(c,a) = 0 → 0/3;
  // red[b] = cos(a,b) is left out (b is a's twin) + cos(c,b) 0 → 0; red[c] = 0.
  const keys = [1, 0, 1, 0, 0, 1];
  const r = kvRedundancyRef(keys, 3, 1, 2, 0.5);
  assert([...r].every((x) => x === 0), `${r}`);
  // θ = 1 (nothing is a near-duplicate): red[a] = red[b] = 1/3, red[c] = 0.
  const s = kvRedundancyRef(keys, 3, 1, 2, 1);
  assert(Math.abs(s[0] - 1 / 3) < 1e-7 && Math.abs(s[1] - 1 / 3) < 1e-7 && s[2] === 0, `${s}`);
  // Three copies a, b, b' (θ 0.5): a's and b's newest twin is b' (slot 2), b' 's is b (slot 1).
  // red[0] = cos(1,0) + cos(2,0) = 2 → 2/3; red[1] = cos(0,1) (0's twin is 2) + cos(2,1) left out → 1/3;
  // red[2] = cos(0,2) and cos(1,2) both left out → 0.
  const t = kvRedundancyRef([1, 0, 1, 0, 1, 0], 3, 1, 2, 0.5);
  assert(Math.abs(t[0] - 2 / 3) < 1e-7 && Math.abs(t[1] - 1 / 3) < 1e-7 && t[2] === 0, `${t}`);
});
