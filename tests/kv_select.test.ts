import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import {
  adaptiveRecent,
  avgPool1d,
  hoyer,
  keepList,
  maxPool1d,
  partitionSlots,
  pyramidBudgets,
  rkvScores,
  softmax,
  splitPool,
  tauBreakpoint,
} from "../src/kv/select.ts";
import {
  DEFAULT_KV_OPTIONS,
  type KvPolicyOptions,
  type LayerView,
  type PruneDecision,
} from "../src/kv/policy.ts";
import { createPolicy } from "../src/kv/policies/mod.ts";
import { letheAdaptiveRange, letheDecide, lethePolicy } from "../src/kv/policies/lethe.ts";
import { rkvBuffer, rkvDecide, rkvPolicy, rkvRecent } from "../src/kv/policies/rkv.ts";
import { freshSeed, rng } from "./helpers.ts";

const near = (a: number, b: number, eps = 1e-4) => assert(Math.abs(a - b) <= eps, `${a} != ${b}`);

Deno.test("Hoyer sparsity: hand-computed values", () => {
  near(hoyer([1, 0, 0, 0]), 1);
  near(hoyer([1, 1, 1, 1]), 0);
  near(hoyer([3, 4]), (Math.SQRT2 - 1.4) / (Math.SQRT2 - 1)); // 0.03431
  near(hoyer([1, 1, 0, 0]), 2 - Math.SQRT2); // 0.58579
  near(hoyer([]), 0);
  near(hoyer([0, 0, 0]), 0);
});

Deno.test("τ-breakpoint: first segment boundary where attention fell by τ", () => {
  const v = [8, 6, 4, 3, 2, 1, 1, 1];
  assertEquals(tauBreakpoint(v, 4, 2), 2); // seg 2: 8/4 = 2 ≥ 2
  assertEquals(tauBreakpoint(v, 4, 3), 4); // 8/4 = 2 < 3; 8/2 = 4 ≥ 3
  assertEquals(tauBreakpoint(v, 4, 10), null); // 8/1 = 8 < 10 at every boundary: flat
  assertEquals(tauBreakpoint(v, 8, 2.5), 3); // seg 1: 8/6, 8/4 = 2 < 2.5, 8/3 = 2.67
  assertEquals(tauBreakpoint([1, 1, 1, 1], 2, 1.5), null);
});

Deno.test("PyramidKV budgets: linear from 2k̄−k̄/β down to k̄/β", () => {
  // k̄ = 132 − 32 = 100; min = 5; max = 195; step = 190/4 = 47.5
  assertEquals(pyramidBudgets(132, 32, 5, 20), [195, 147, 100, 52, 5]);
  assertEquals(pyramidBudgets(64, 32, 1), [32]);
});

Deno.test("avg pooling, partition by position and keep lists", () => {
  const p = avgPool1d([0, 0, 7, 0, 0, 0, 0, 0, 0], 7);
  near(p[0], 7 / 4); // window [0..3]
  near(p[5], 7 / 7); // window [2..8]
  near(p[6], 0);
  const pos = Uint32Array.from([0, 1, 2, 10, 11, 12, 20, 21]);
  const part = partitionSlots(pos, 8, 2, 3); // sinks 0,1; recent = positions ≥ 19
  assertEquals(part.protectedSlots, [0, 1, 6, 7]);
  assertEquals(part.candidates, [2, 3, 4, 5]);
  assertEquals([...keepList([5, 1], [1, 3])], [1, 3, 5]);
});

Deno.test("splitPool: proportional, capped, remainder redistributed", () => {
  assertEquals(splitPool(10, [1, 1], [100, 100]), [5, 5]);
  assertEquals(splitPool(10, [3, 1], [100, 100]), [8, 2]); // 7.5 / 2.5 → largest remainder to layer 0
  assertEquals(splitPool(10, [1, 1], [2, 100]), [2, 8]);
  assertEquals(splitPool(5, [1, 1], [1, 1]), [1, 1]);
});

function layer(len: number, scoreOf: (i: number) => number): LayerView {
  return {
    len,
    positions: Uint32Array.from({ length: len }, (_, i) => i),
    scores: Float32Array.from({ length: len }, (_, i) => scoreOf(i)),
  };
}

Deno.test("Lethe decision: dense layers keep more, τ caps sparse ones, flat layers raise their trigger", () => {
  const o: KvPolicyOptions = { ...DEFAULT_KV_OPTIONS, budget: 20, sink: 2, recentRatio: 0.2 }; // recent 4
  // Layer 0: sparse — one candidate far above the rest. Layer 1: flat.
  const sparse = layer(40, (i) => (i === 10 ? 100 : 1));
  const flat = layer(40, () => 1);
  const triggers = [20, 20];
  const d = letheDecide([sparse, flat], { ...o, lethe: { ...o.lethe, tau: 2, segments: 34 } }, 30, triggers);
  // Protected: 2 sinks + 4 recent per layer = 12; pool 18.
  // Sparse layer: breakpoint at the first boundary (k = 1), so it keeps 1 candidate (slot 10); flat gets the rest.
  assertEquals([...d.keep[0]!], [0, 1, 10, 36, 37, 38, 39]);
  assertEquals(d.keep[1]!.length, 6 + 17);
  assertEquals(triggers, [20, 40]); // flat layer: trigger doubled
  near(d.hoyer![0], (Math.sqrt(34) - 133 / Math.sqrt(10033)) / (Math.sqrt(34) - 1)); // 0.932
  near(d.hoyer![1], 0);
});

Deno.test("adaptive recent window: smallest window holding the share of the mass beyond the top tokens", () => {
  // 12 slots at positions 0..11, sinks 0 and 1 (their 9s never count). Non-sink scores by slot:
  // 2:5 3:0 4:1 5:0 6:0 7:2 8:0 9:1 10:0 11:1.
  const pos = Uint32Array.from({ length: 12 }, (_, i) => i);
  const sc = [9, 9, 5, 0, 1, 0, 0, 2, 0, 1, 0, 1];
  const w = (top: number, f: number, min: number, max: number) =>
    adaptiveRecent(pos, sc, 12, 2, top, f, min, max);
  // top 1 sets slot 2 aside; residual 5 at ages 0 (1), 2 (1), 4 (2), 7 (1): windows 1..8 hold 1,1,2,2,4,4,4,5.
  assertEquals(w(1, 0.5, 1, 10), 5); // 2.5 wanted: window 5 (ages 0..4) holds 4
  assertEquals(w(1, 0.2, 1, 10), 1); // 1 wanted: the newest token holds it
  assertEquals(w(1, 0.2, 3, 10), 3); // …raised to the minimum
  assertEquals(w(1, 1, 1, 10), 8); // all of it: back to age 7
  assertEquals(w(1, 1, 1, 6), 6); // …capped at the maximum
  // top 0: slot 2 (5 at age 9) is residual too, 10 in all; 5 wanted → window 8 holds 5.
  assertEquals(w(0, 0.5, 1, 10), 8);
  // top 2 sets aside slots 2 and 7: residual 3 at ages 0, 2, 7; 1.5 wanted → window 3.
  assertEquals(w(2, 0.5, 1, 10), 3);
  // No residual mass (everything set aside, or all zero): the minimum.
  assertEquals(w(10, 0.5, 2, 10), 2);
  assertEquals(adaptiveRecent(pos, new Float32Array(12), 12, 2, 0, 0.5, 4, 10), 4);
  // Ties among the top go to the lower slot (as topSlots): with equal scores, top 1 sets slot 2 aside, so the
  // residual is slots 3..11 (1 each at ages 8..0): 4.5 wanted → window 5.
  assertEquals(adaptiveRecent(pos, new Float32Array(12).fill(1), 12, 2, 1, 0.5, 1, 10), 5);
  // Windows count positions, not slots (a pruned cache has gaps): positions 0 1 5 9 20 21, scores 1 at 5, 9, 21;
  // ages 16, 12, 0; 1.5 wanted → the window must reach age 12: 13 positions.
  const gap = Uint32Array.from([0, 1, 5, 9, 20, 21]);
  assertEquals(adaptiveRecent(gap, [9, 9, 1, 1, 0, 1], 6, 2, 0, 0.5, 1, 20), 13);
  // Negative scores count as 0; a maximum below the minimum is raised to it.
  assertEquals(adaptiveRecent(gap, [9, 9, 1, 1, 0, -5], 6, 2, 0, 0.5, 1, 20), 13);
  assertEquals(adaptiveRecent(gap, [9, 9, 1, 1, 0, 1], 6, 2, 0, 1, 4, 2), 4);
});

Deno.test("Lethe adaptive recent: bounds from the budget, per-layer windows protected in a round", () => {
  // Budget 64, sink 4, ratio 0.7 (fixed window 45), interval 4: min round(6.4) = 6, max min(round(57.6), 64 −
  // 4 − 4) = 56, top 64 − 4 − 45 = 15.
  const base: KvPolicyOptions = { ...DEFAULT_KV_OPTIONS, budget: 64, sink: 4, recentRatio: 0.7 };
  const on = (o: KvPolicyOptions, f = 0.5) => ({ ...o, lethe: { ...o.lethe, adaptiveRecent: f } });
  assertEquals(letheAdaptiveRange(base), null); // off by default
  assertEquals(letheAdaptiveRange(on(base)), { min: 6, max: 56, top: 15 });
  // Budget 16: min round(1.6) = 2, max min(14, 16 − 4 − 4) = 8, top 16 − 4 − round(11.2) = 1.
  assertEquals(letheAdaptiveRange(on({ ...base, budget: 16 })), { min: 2, max: 8, top: 1 });
  // What every round guarantees is the minimum.
  assertEquals(lethePolicy(on(base)).recentWindow(0, 2), 6);
  assertEquals(lethePolicy(base).recentWindow(0, 2), 45);

  // Budget 20, sink 2, ratio 0.2 (fixed window 4), interval 4: min 2, max min(18, 14) = 14, top 14.
  const o = on({ ...DEFAULT_KV_OPTIONS, budget: 20, sink: 2, recentRatio: 0.2 });
  assertEquals(letheAdaptiveRange(o), { min: 2, max: 14, top: 14 });
  // Both layers: 14 heavy tokens (slots 2..15, score 10) are set aside. Layer 0's residual: 1 at age 0 and 3 at
  // age 9 (slot 30) → half of 4 needs the window to reach age 9: 10 positions (30..39). Layer 1's residual: 5 at
  // age 0 → 1 position, raised to the minimum 2 (38, 39).
  const heavy = (i: number) => i >= 2 && i < 16;
  const a = layer(40, (i) => (heavy(i) ? 10 : i === 39 ? 1 : i === 30 ? 3 : 0));
  const b = layer(40, (i) => (heavy(i) ? 10 : i === 39 ? 5 : 0));
  const d = letheDecide([a, b], o, 30, [1000, 1000]);
  assertEquals(d.recent, [10, 2]);
  for (const p of [0, 1, ...Array.from({ length: 10 }, (_, k) => 30 + k)]) {
    assert(d.keep[0]!.includes(p), `${p}`);
  }
  for (const p of [0, 1, 38, 39]) assert(d.keep[1]!.includes(p), `${p}`);
  assertEquals(d.keep[0]!.length + d.keep[1]!.length, 30); // the round keeps exactly its target
  // Off: the fixed window of 4 in both layers.
  assertEquals(
    letheDecide([a, b], { ...o, lethe: { ...o.lethe, adaptiveRecent: 0 } }, 30, [1000, 1000]).recent,
    [
      4,
      4,
    ],
  );
});

/** Simulates the decode loop's bookkeeping on the CPU with random scores and checks every policy's invariants. */
Deno.test("every policy keeps sinks and the recent window and respects its budget, every step", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const layers = 4;
  // "lethe+adaptive": Lethe with its adaptive recent window (share 0.5).
  for (const variant of ["streaming", "h2o", "snapkv", "pyramidkv", "lethe", "lethe+adaptive", "rkv"]) {
    const name = variant.split("+")[0];
    const adaptiveRecent = variant === "lethe+adaptive" ? 0.5 : 0;
    const options: KvPolicyOptions = {
      ...DEFAULT_KV_OPTIONS,
      budget: 24,
      window: 8,
      lethe: { ...DEFAULT_KV_OPTIONS.lethe, adaptiveRecent },
    };
    const policy = createPolicy(name, options);
    const state: { pos: number[]; score: number[] }[] = [];
    const prompt = 40;
    for (let l = 0; l < layers; l++) {
      state.push({ pos: [...Array(prompt).keys()], score: Array.from({ length: prompt }, () => next()) });
    }
    // Key redundancy (random, per KV head) where the policy asks for it, as the round's readback adds it.
    const view = () =>
      state.map((s) => ({
        len: s.pos.length,
        positions: Uint32Array.from(s.pos),
        scores: Float32Array.from(s.score),
        ...(policy.keyRedundancy === null
          ? {}
          : { redundancy: Float32Array.from({ length: 2 * s.pos.length }, () => next() * 2 - 1) }),
      }));
    const apply = (keep: (Uint32Array | null)[]) =>
      keep.forEach((k, l) => {
        if (!k) return;
        state[l] = { pos: [...k].map((i) => state[l].pos[i]), score: [...k].map((i) => state[l].score[i]) };
      });
    // Lethe's rounds say which recent window each layer protected: every position in it that the cache held
    // before the round must survive it.
    const windows = new Set<number>();
    const decide = (p: number, d: PruneDecision) => {
      const before = state.map((s) => new Set(s.pos));
      apply(d.keep);
      if (name === "lethe") assert(d.recent?.length === layers, `${variant}: no recent windows`);
      d.recent?.forEach((r, l) => {
        windows.add(r);
        for (let q = p - r + 1; q <= p; q++) {
          if (before[l].has(q)) {
            assert(state[l].pos.includes(q), `${variant}: recent ${q} (window ${r}) lost`);
          }
        }
      });
    };
    decide(prompt - 1, policy.afterPrefill(view()));
    for (let step = 1, p = prompt; step <= 200; step++, p++) {
      for (let l = 0; l < layers; l++) {
        const s = state[l];
        const cap = policy.decodeCap(l, layers);
        if (cap !== null && s.pos.length >= cap) {
          // The GPU evictor: lowest score (or oldest position) among unprotected slots.
          const recentFrom = p - policy.recentWindow(l, layers) + 1;
          let victim = -1;
          for (let i = 0; i < s.pos.length; i++) {
            if (s.pos[i] < options.sink || s.pos[i] >= recentFrom) continue;
            const key = policy.evictBy === "score" ? s.score[i] : s.pos[i];
            const best = victim < 0 ? Infinity : policy.evictBy === "score" ? s.score[victim] : s.pos[victim];
            if (key < best) victim = i;
          }
          assert(victim >= 0, `${name}: no evictable slot at layer ${l}`);
          s.pos[victim] = p;
          s.score[victim] = 0;
        } else {
          s.pos.push(p);
          s.score.push(0);
        }
        const g = policy.decodeGamma ?? 1;
        s.score = s.score.map((x) => g * x + next());
      }
      if (policy.wantsRound(step, state.map((s) => s.pos.length))) decide(p, policy.round(step, view()));
      // Invariants.
      const total = state.reduce((a, s) => a + s.pos.length, 0);
      for (let l = 0; l < layers; l++) {
        const pos = state[l].pos;
        for (let q = 0; q < options.sink; q++) {
          assert(pos.includes(q), `${name}: sink ${q} lost at layer ${l}`);
        }
        assert(pos.includes(p), `${name}: newest token lost at layer ${l}, step ${step}`);
        const cap = policy.decodeCap(l, layers);
        if (cap !== null) assert(pos.length <= cap, `${name}: layer ${l} holds ${pos.length} > cap ${cap}`);
        assertEquals(new Set(pos).size, pos.length, `${name}: duplicate positions`);
      }
      if (name === "lethe") assert(total <= options.budget * layers, `lethe: total ${total} over budget`);
      if (name === "rkv") {
        for (const st of state) assert(st.pos.length <= options.budget, `rkv: ${st.pos.length} over budget`);
      }
      if (name === "snapkv") assertEquals(state[0].pos.length, options.budget + step);
    }
    // The fixed window is one size; the adaptive one must have moved, or the check above showed nothing new.
    if (variant === "lethe") assertEquals([...windows], [7]); // round(0.3 × 24)
    if (variant === "lethe+adaptive") assert(windows.size > 3, `adaptive windows: ${[...windows]}`);
  }
});

Deno.test("max pooling and softmax: hand-computed values", () => {
  assertEquals([...maxPool1d([0, 5, 0, 0, 0, 0, 1], 3)], [5, 5, 5, 0, 0, 1, 1]);
  assertEquals([...maxPool1d([3, 1, 2], 7)], [3, 3, 3]);
  const p = softmax([0, Math.log(3)]); // e^0 : e^ln3 = 1 : 3
  near(p[0], 0.25, 1e-12);
  near(p[1], 0.75, 1e-12);
  const big = softmax([1000, 1000]); // no overflow
  near(big[0], 0.5, 1e-12);
});

Deno.test("R-KV scores: λ·importance − (1 − λ)·redundancy over the candidates, hand-computed", () => {
  // 4 slots, candidates 1 and 2; pool 1 (none) to keep the arithmetic visible.
  // Importance over candidates: 3 / (3 + 1) = 0.75 and 0.25.
  // Redundancy, 2 heads: head 0 [_, ln 3, 0, _] → softmax over candidates 0.75, 0.25; head 1 equal → 0.5, 0.5;
  // mean over heads: 0.625, 0.375.
  const scores = [9, 3, 1, 9];
  const red = [7, Math.log(3), 0, 7, /* head 1 */ 7, 2, 2, 7];
  const s = rkvScores(scores, red, 4, [1, 2], 0.1, 1);
  near(s[1], 0.1 * 0.75 - 0.9 * 0.625); // −0.4875
  near(s[2], 0.1 * 0.25 - 0.9 * 0.375); // −0.3125: the less redundant token wins at λ = 0.1
  assertEquals([s[0], s[3]], [0, 0]);
  // λ = 1: importance only, the attended token wins.
  const t = rkvScores(scores, red, 4, [1, 2], 1, 1);
  near(t[1], 0.75);
  near(t[2], 0.25);
  // Max pooling (kernel 3) lifts slot 2 to its neighbour's 9: importance 9/(9 + 9) each → 0.5, 0.5.
  const u = rkvScores(scores, red, 4, [1, 2], 1, 3);
  near(u[1], 0.5);
  near(u[2], 0.5);
  // All-zero attention: uniform importance.
  const z = rkvScores([0, 0, 0, 0], red, 4, [1, 2], 1, 1);
  near(z[1], 0.5);
  assertThrows(() => rkvScores(scores, [1, 2, 3], 4, [1], 0.1), /not a multiple of 4 slots/);
});

Deno.test("R-KV decision: sinks and recent kept, the least redundant important candidates fill the target", () => {
  // Budget 16 → buffer 4, target 12; sink 2; recent round(0.25 · 16) = 4. 20 slots, positions 0..19:
  // protected 0, 1, 16..19; 14 candidates (2..15) compete for 12 − 6 = 6 places.
  const o: KvPolicyOptions = {
    ...DEFAULT_KV_OPTIONS,
    budget: 16,
    sink: 2,
    recentRatio: 0.25,
    rkvLambda: 0.5,
  };
  assertEquals([rkvBuffer(o), rkvRecent(o)], [4, 4]);
  const len = 20;
  // Equal attention everywhere, one head: redundancy decides. Slots 2..7 are distinct (redundancy 0), 8..15
  // copies of each other (redundancy 1).
  const l: LayerView = {
    len,
    positions: Uint32Array.from({ length: len }, (_, i) => i),
    scores: new Float32Array(len).fill(1),
    redundancy: Float32Array.from({ length: len }, (_, i) => (i >= 8 && i < 16 ? 1 : 0)),
  };
  const d = rkvDecide([l, { ...l, len: 12 }], o, 12);
  assertEquals([...d.keep[0]!], [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19]);
  assertEquals(d.keep[1], null); // already at the target
  // λ = 1 with attention 5 on slots 10 and 12: max pooling (kernel 7, ±3) spreads it over slots 7..15.
  const att = new Float32Array(len).fill(1);
  att[10] = 5;
  att[12] = 5;
  const e = rkvDecide([{ ...l, scores: att }], { ...o, rkvLambda: 1 }, 12);
  // Pooled importance 5 at slots 7..15 (9 slots): top 6 by score, ties to the lower slot: 7..12.
  assertEquals([...e.keep[0]!], [0, 1, 7, 8, 9, 10, 11, 12, 16, 17, 18, 19]);
  // A round without redundancy is a wiring fault, named as such.
  let msg = "";
  try {
    rkvDecide([{ ...l, redundancy: undefined }], o, 12);
  } catch (err) {
    msg = (err as Error).message;
  }
  assert(msg.includes("key redundancy"), msg);
});

Deno.test("R-KV policy: rounds when an append would pass the budget, cut to budget − buffer, declares its kernel", () => {
  const o: KvPolicyOptions = { ...DEFAULT_KV_OPTIONS, budget: 32, rkvThreshold: 0.4 };
  const p = rkvPolicy(o);
  assertEquals([p.keyRedundancy, p.decodeGamma, p.decodeCap(0, 4), p.steadyTokens(4)], [
    0.4,
    0.875,
    null,
    32,
  ]);
  assertEquals(p.wantsRound(1, [31, 31]), false);
  assertEquals(p.wantsRound(1, [32, 32]), true);
  assertEquals(p.mayRoundEarly(1, [24, 24]), false); // at the target (32 − 8)
  assertEquals(p.mayRoundEarly(1, [25, 25]), true);
  assertEquals(createPolicy("rkv", o).name, "rkv");
});
