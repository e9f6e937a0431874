/** The evaluation's paired statistics against hand-computed values. */
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import {
  bootstrapDiffCI,
  mcnemarExact,
  pairedTest,
  type Prediction,
  SIGNIFICANCE,
  standing,
} from "../src/eval/stats.ts";

const near = (a: number, b: number, rel = 1e-9) =>
  assert(Math.abs(a - b) <= rel * Math.max(Math.abs(b), 1e-300), `${a} != ${b}`);

Deno.test("McNemar exact: hand-computed p-values", () => {
  // p = min(1, 2 · Σ_{i ≤ min(b,c)} C(b+c, i) / 2^(b+c)).
  assertEquals(mcnemarExact(3, 3), 1); // 2 · (1 + 6 + 15 + 20)/64 = 1.3125 → 1
  near(mcnemarExact(0, 6), 0.03125); // 2 · 1/64
  near(mcnemarExact(6, 0), 0.03125); // symmetric
  near(mcnemarExact(0, 5), 0.0625); // 2 · 1/32: five discordant samples never reach p < 0.05
  near(mcnemarExact(2, 22), (2 * (1 + 24 + 276)) / 2 ** 24); // 3.588e-5
  near(mcnemarExact(2, 10), (2 * (1 + 12 + 66)) / 2 ** 12); // 0.03857
  near(mcnemarExact(10, 20), 0.09873714670538902); // 2 · Σ_{i≤10} C(30,i) / 2^30
  assertEquals(mcnemarExact(0, 0), 1); // nothing discordant
  assertEquals(mcnemarExact(1, 0), 1);
  assertEquals(mcnemarExact(1000, 1000), 1);
  assert(mcnemarExact(0, 2000) < 1e-300); // 2^-1999: no overflow, no NaN
  assertThrows(() => mcnemarExact(-1, 2), /non-negative integers/);
  assertThrows(() => mcnemarExact(1.5, 2), /non-negative integers/);
});

Deno.test("bootstrap interval of a paired accuracy difference: degenerate, seeded, near the normal approximation", () => {
  const t = Array(50).fill(true);
  const f = Array(50).fill(false);
  assertEquals(bootstrapDiffCI(t, t), [0, 0]);
  assertEquals(bootstrapDiffCI(t, f), [1, 1]);
  assertEquals(bootstrapDiffCI(f, t), [-1, -1]);
  assertEquals(bootstrapDiffCI([], []), [0, 0]);
  // 100 samples, 10 only x gets right: diff 0.1, sd √(0.1 · 0.9 / 100) = 0.03, normal 95%: 0.1 ± 0.059.
  const x = Array.from({ length: 100 }, (_, i) => i < 10 || i >= 60);
  const y = Array.from({ length: 100 }, (_, i) => i >= 60);
  const [lo, hi] = bootstrapDiffCI(x, y);
  assert(lo >= 0.03 && lo <= 0.06, `lo ${lo}`);
  assert(hi >= 0.14 && hi <= 0.17, `hi ${hi}`);
  // Seeded: the same call gives the same interval; another seed may differ but stays close.
  assertEquals(bootstrapDiffCI(x, y), [lo, hi]);
  const [lo2, hi2] = bootstrapDiffCI(x, y, 10000, 7);
  assert(Math.abs(lo2 - lo) <= 0.011 && Math.abs(hi2 - hi) <= 0.011, `${lo2} ${hi2}`);
  assertThrows(() => bootstrapDiffCI([true], []), /1 outcomes against 0/);
});

Deno.test("paired test: matched by sample id, discordant counts, standing only with p < 0.05", () => {
  const pred = (ok: boolean[], ids = ok.map((_, i) => `s${i}`)): Prediction[] =>
    ok.map((o, i) => [ids[i], o ? "1" : "0", o]);
  // a right on 0..7, b right on 6..9 → a only: 0..5 (6), b only: 8, 9 (2); 10 samples.
  const a = pred(Array.from({ length: 10 }, (_, i) => i < 8));
  const b = pred(Array.from({ length: 10 }, (_, i) => i >= 6));
  const r = pairedTest(a, b)!;
  assertEquals([r.n, r.aOnly, r.bOnly], [10, 6, 2]);
  near(r.diff, 0.4);
  near(r.p, (2 * (1 + 8 + 28)) / 256); // 0.289
  assert(r.ci[0] <= 0.4 && 0.4 <= r.ci[1]);
  assertEquals(standing(r), "tied");
  // Samples only one side holds are left out; order does not matter.
  const shuffled = [...b].reverse().concat([["extra", "1", true]]);
  assertEquals(pairedTest(a, shuffled), r);
  assertEquals(pairedTest(a, pred([true], ["other"])), null);
  // Six discordant samples all one way: p = 0.03125 < 0.05 → ahead; reversed → behind.
  const six = pred(Array.from({ length: 20 }, (_, i) => i < 16));
  const ten = pred(Array.from({ length: 20 }, (_, i) => i < 10));
  assert(pairedTest(six, ten)!.p < SIGNIFICANCE);
  assertEquals(standing(pairedTest(six, ten)!), "ahead");
  assertEquals(standing(pairedTest(ten, six)!), "behind");
});
