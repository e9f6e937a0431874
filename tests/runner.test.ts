/**
 * The decode-ahead invariants of DecodeRunner (src/engine/runner.ts), on stories260K: a batch whose rows leave
 * at different steps, recorded ahead whenever allowed, gives the same ids, rounds and KV peaks as the same batch
 * stepped synchronously; a row cannot join while a step is recorded ahead; teacher-forced logits equal what the
 * sampler chose from.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { Engine } from "../src/engine/engine.ts";
import type { RunnerRow } from "../src/engine/runner.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import type { KvSettings } from "../src/kv/options.ts";
import { gpuContext } from "./helpers.ts";
import { STORIES_DIR } from "./support/models.ts";

const PROMPTS = [[1, 400, 300], [1, 17, 33, 250, 9], [1, 88], [1, 5, 6, 7]];
const KV: KvSettings[] = [
  { policy: "lethe", budget: 16 },
  { policy: "h2o", budget: 12 },
  { policy: "full" },
  { policy: "streaming", budget: 10 },
];
/** Tokens each row generates: rows leave at different steps, some while a step is recorded ahead. */
const CAPS = [41, 17, 31, 55];

async function run(engine: Engine, ahead: boolean, sampled: boolean) {
  const runner = engine.createRunner();
  const rows: RunnerRow[] = PROMPTS.map((p, j) => ({
    seq: engine.newSequence(KV[j], p.length + 8, p.length),
    // Row 1 samples (its own seed and step numbers); the rest are greedy.
    sampling: sampled && j === 1
      ? { ...DEFAULT_SAMPLING, temperature: 0.8, topP: 0.9, seed: 11 }
      : DEFAULT_SAMPLING,
    step: 0,
    next: 0,
  }));
  const ids: number[][] = rows.map(() => []);
  const rounds = rows.map(() => 0);
  let aheadSteps = 0;
  let leftAhead = 0;
  for (const [j, row] of rows.entries()) {
    const first = await runner.prefill(row, PROMPTS[j]);
    row.next = first.id!;
    if (first.round) rounds[j]++;
  }
  let active = rows.map((_, j) => j);
  for (;;) {
    active = active.filter((j) => {
      ids[j].push(rows[j].next);
      const more = ids[j].length < CAPS[j];
      if (!more) {
        if (runner.hasAhead) leftAhead++;
        runner.leave(rows[j]);
      }
      return more;
    });
    if (active.length === 0) break;
    const r = await runner.step(active.map((j) => rows[j]), { mayRecordAhead: () => ahead });
    if (r.ahead) aheadSteps++;
    active.forEach((j, a) => {
      rows[j].next = r.ids[a];
      if (r.rounds[a]) rounds[j]++;
    });
  }
  const peaks = rows.map((r) => [r.seq.kv.peakAllocated, r.seq.kv.peakLive]);
  const lens = rows.map((r) => r.seq.kv.lens());
  runner.destroy();
  for (const r of rows) r.seq.kv.destroy();
  return { ids, rounds, peaks, lens, aheadSteps, leftAhead };
}

Deno.test("DecodeRunner: recorded ahead equals synchronous (ids, rounds, peaks) as rows leave mid-batch", async () => {
  const engine = await Engine.load(STORIES_DIR, { ctx: await gpuContext(), progress: false });
  for (const sampled of [false, true]) {
    const sync = await run(engine, false, sampled);
    const ahead = await run(engine, true, sampled);
    assertEquals(sync.aheadSteps, 0);
    assert(ahead.aheadSteps >= 20, `only ${ahead.aheadSteps} steps recorded ahead`);
    // The case the peaks are restored for: rows (the full one among them) leaving with a step recorded ahead.
    assert(ahead.leftAhead >= 2, `only ${ahead.leftAhead} rows left while a step was recorded ahead`);
    assert(sync.rounds[0] >= 3, `too few Lethe rounds: ${sync.rounds}`);
    // The capped rows evicted on the GPU: they sit at their caps.
    assertEquals([sync.lens[1][0], sync.lens[3][0]], [12, 10]);
    // Lengths are not compared: a row that left while a step was recorded ahead holds that step's row, unused.
    const { aheadSteps: _a, lens: _c, leftAhead: _e, ...want } = sync;
    const { aheadSteps: _b, lens: _d, leftAhead: _f, ...got } = ahead;
    assertEquals(got, want, sampled ? "with a sampled row" : "greedy");
  }
  engine.destroy();
});

Deno.test("DecodeRunner: teacher-forced logits are what the sampler picks from; no row joins a step recorded ahead", async () => {
  const engine = await Engine.load(STORIES_DIR, { ctx: await gpuContext(), progress: false });
  const runner = engine.createRunner();
  const mk = (): RunnerRow => ({
    seq: engine.newSequence({ policy: "full" }, 16),
    sampling: DEFAULT_SAMPLING,
    step: 0,
    next: 0,
  });
  const argmax = (l: Float32Array) => l.indexOf(Math.max(...l));
  // Two identical sequences: one sampled (greedy), one read back as logits, fed the same tokens.
  const a = mk();
  const b = mk();
  a.next = (await runner.prefill(a, [1, 400, 300])).id!;
  const first = await runner.prefill(b, [1, 400, 300], { readLogits: true });
  assertEquals(argmax(first.logits!), a.next);
  for (let k = 0; k < 6; k++) {
    b.next = a.next;
    const forced = await runner.step([b], { readLogits: true });
    const sampled = await runner.step([a]);
    assertEquals(forced.logits![0].length, engine.config.vocabSize);
    assertEquals(argmax(forced.logits![0]), sampled.ids[0], `step ${k + 1}`);
    a.next = sampled.ids[0];
  }
  await runner.step([a], { mayRecordAhead: () => true });
  assert(runner.hasAhead);
  let joined = true;
  try {
    await runner.step([a, b]);
  } catch (e) {
    joined = false;
    assert(String(e).includes("joined"), String(e));
  }
  assert(!joined, "a row joined a step recorded ahead");
  runner.destroy();
  a.seq.kv.destroy();
  b.seq.kv.destroy();
  engine.destroy();
});
