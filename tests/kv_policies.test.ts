/**
 * KV policies on the real engine (stories260K, a trained model with real attention patterns):
 * - with a budget at least the sequence length every policy gives logits identical to `full`;
 * - at small budgets the invariants hold after every decode step, read from the GPU cache itself:
 *   sinks and the recent window kept, budgets respected, positions of kept tokens unchanged (each kept slot's
 *   K row is still the row that token got when it was appended).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { Engine } from "../src/engine/engine.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import { POLICY_NAMES, type PruneDecision } from "../src/kv/policy.ts";
import type { SequenceKv } from "../src/kv/cache.ts";
import type { SequenceState } from "../src/model/forward.ts";
import { gpuContext } from "./helpers.ts";
import { STORIES_DIR } from "./support/models.ts";
import { maybePrune, pruneBatch, sampleIds } from "./support/steps.ts";

async function stories(): Promise<Engine> {
  return await Engine.load(STORIES_DIR, { ctx: await gpuContext(), progress: false });
}

Deno.test("every policy with budget ≥ sequence length gives logits identical to full", async () => {
  const engine = await stories();
  const vocab = engine.model.config.vocabSize;
  const prompt = [1, 400, 300, 200, 17, 33];
  const steps = 40;
  // PyramidKV's deepest layer gets k̄/β + W of an average budget, so for it "budget ≥ length" must hold for that
  // layer: (budget − 8)/20 + 8 ≥ 46 needs budget ≥ 768.
  const run = async (policy: string) => {
    const budget = policy === "pyramidkv" ? 800 : 128;
    const seq = engine.newSequence({ policy: policy as never, budget, window: 8 });
    const out: Float32Array[] = [];
    let logits = await engine.ctx.readF32(engine.forward.prefill(seq, prompt), 0, vocab);
    await maybePrune(engine, seq, 0, true);
    for (let step = 1; step <= steps; step++) {
      out.push(logits);
      const next = logits.indexOf(Math.max(...logits));
      logits = await engine.ctx.readF32(engine.forward.decode([seq], [next]), 0, vocab);
      await maybePrune(engine, seq, step, false);
    }
    assertEquals(
      seq.kv.lens(),
      new Array(engine.model.config.numLayers).fill(prompt.length + steps),
      `${policy} lens`,
    );
    seq.kv.destroy();
    return out;
  };
  const full = await run("full");
  for (const p of POLICY_NAMES.filter((p) => p !== "full")) {
    const got = await run(p);
    got.forEach((l, i) => assertEquals([...l], [...full[i]], `${p} step ${i} logits differ from full`));
  }
});

/** Reads the cache's positions and checks the policy invariants. */
async function checkInvariants(
  policy: string,
  kv: SequenceKv,
  nextPos: number,
  caps: (number | null)[],
  sink: number,
  recent: number[],
  totalBudget: number | null,
): Promise<void> {
  const views = await kv.views();
  let total = 0;
  views.forEach((v, l) => {
    const pos = [...v.positions];
    total += pos.length;
    const seen = new Set(pos);
    assertEquals(seen.size, pos.length, `${policy} layer ${l}: duplicate positions`);
    for (const p of pos) assert(p < nextPos, `${policy} layer ${l}: position ${p} from the future`);
    for (let s = 0; s < Math.min(sink, nextPos); s++) {
      assert(seen.has(s), `${policy} layer ${l}: sink ${s} evicted`);
    }
    for (let p = Math.max(0, nextPos - recent[l]); p < nextPos; p++) {
      assert(seen.has(p), `${policy} layer ${l}: recent position ${p} evicted (next ${nextPos})`);
    }
    if (caps[l] !== null) {
      assert(pos.length <= caps[l]!, `${policy} layer ${l}: ${pos.length} > cap ${caps[l]}`);
    }
  });
  if (totalBudget !== null) assert(total <= totalBudget, `${policy}: total ${total} > budget ${totalBudget}`);
}

Deno.test("policies at budget 32: sinks, recent window, budgets and kept positions hold after every step", async () => {
  const engine = await stories();
  const L = engine.model.config.numLayers;
  const prompt = [1, 400, 300, 200];
  for (const policy of ["streaming", "h2o", "pyramidkv", "lethe", "rkv"] as const) {
    const budget = 32;
    const seq = engine.newSequence({ policy, budget, window: 8 });
    const p = seq.policy;
    // R-KV caps every layer at the budget through its rounds, not on the GPU.
    const caps = Array.from({ length: L }, (_, l) => p.decodeCap(l, L) ?? (policy === "rkv" ? budget : null));
    // The recent window a policy guarantees: the evictor protects recentWindow(l) positions; Lethe protects its
    // recent window at rounds.
    const recent = Array.from({ length: L }, (_, l) => Math.min(p.recentWindow(l, L), caps[l] ?? Infinity));
    // Every token's K row as first written (layer 0), to check that compaction moves rows with their positions.
    const firstRow = new Map<number, Uint32Array>();
    const row = seq.kv.layout.words;
    let logits = await engine.ctx.readF32(engine.forward.prefill(seq, prompt), 0, 512);
    await maybePrune(engine, seq, 0, true);
    // 72 steps: every policy is at its cap, and Lethe has run rounds, from step ~30 on.
    for (let step = 1; step <= 72; step++) {
      const next = logits.indexOf(Math.max(...logits));
      logits = await engine.ctx.readF32(engine.forward.decode([seq], [next]), 0, 512);
      await maybePrune(engine, seq, step, false);
      await checkInvariants(
        policy,
        seq.kv,
        seq.pos,
        caps,
        p.options.sink,
        recent,
        policy === "lethe" ? budget * L : null,
      );
      const L0 = seq.kv.layers[0];
      const [views] = await seq.kv.views();
      // Stored words (any KV dtype): moves copy them bit for bit.
      const k = await engine.ctx.readU32(L0.k.buffer, L0.k.offset, L0.len * row);
      for (let s = 0; s < L0.len; s++) {
        const pos = views.positions[s];
        const r = k.slice(s * row, (s + 1) * row);
        const first = firstRow.get(pos);
        if (first) assertEquals([...r], [...first], `${policy}: K row of position ${pos} changed`);
        else firstRow.set(pos, r);
      }
    }
    seq.kv.destroy();
  }
});

Deno.test("Lethe with the adaptive recent window at budget 32: sinks, total budget and each round's windows hold", async () => {
  const engine = await stories();
  const L = engine.model.config.numLayers;
  const prompt = [1, 400, 300, 200];
  const budget = 32;
  const seq = engine.newSequence({ policy: "lethe", budget, window: 8, lethe: { adaptiveRecent: 0.5 } });
  const p = seq.policy;
  // Every round's decision, to check the windows it chose against the cache the GPU kept.
  let last: PruneDecision | null = null;
  const round = p.round.bind(p);
  p.round = (step, layers) => (last = round(step, layers));
  const minimum = p.recentWindow(0, L);
  assertEquals(minimum, 3); // round(0.1 × 32): what every round guarantees
  let logits = await engine.ctx.readF32(engine.forward.prefill(seq, prompt), 0, 512);
  await maybePrune(engine, seq, 0, true);
  const windows = new Set<number>();
  for (let step = 1; step <= 72; step++) {
    const next = logits.indexOf(Math.max(...logits));
    logits = await engine.ctx.readF32(engine.forward.decode([seq], [next]), 0, 512);
    const before = (await seq.kv.views()).map((v) => new Set(v.positions));
    last = null;
    const ran = await maybePrune(engine, seq, step, false);
    await checkInvariants(
      "lethe adaptive",
      seq.kv,
      seq.pos,
      new Array(L).fill(null),
      p.options.sink,
      new Array(L).fill(minimum),
      budget * L,
    );
    if (!ran) continue;
    // The round's own windows: every position in a layer's window that the cache held before survives it.
    const d = last as PruneDecision | null;
    assert(d?.recent?.length === L, `step ${step}: the round reported no windows`);
    const views = await seq.kv.views();
    d.recent.forEach((r, l) => {
      windows.add(r);
      const kept = new Set(views[l].positions);
      for (let q = seq.pos - r; q < seq.pos; q++) {
        if (before[l].has(q)) assert(kept.has(q), `layer ${l}: position ${q} in its window of ${r} evicted`);
      }
    });
  }
  // The windows moved (between layers or rounds), and past the minimum: else this showed nothing new.
  assert(windows.size > 1 && Math.max(...windows) > minimum, `windows ${[...windows]}`);
  seq.kv.destroy();
});

/** Prefills each sequence alone, runs its after-prefill round; returns each one's first greedy id. */
async function prefillEach(engine: Engine, seqs: SequenceState[], prompts: number[][]): Promise<number[]> {
  const next: number[] = [];
  for (let i = 0; i < seqs.length; i++) {
    next.push(
      (await sampleIds(engine, engine.forward.prefill(seqs[i], prompts[i]), 1, DEFAULT_SAMPLING, 0))[0],
    );
    await maybePrune(engine, seqs[i], 0, true);
  }
  return next;
}

/** One batched greedy decode step; `next` becomes the sampled ids. */
async function decodeAll(engine: Engine, seqs: SequenceState[], next: number[], step: number): Promise<void> {
  const out = await sampleIds(engine, engine.forward.decode(seqs, next), seqs.length, DEFAULT_SAMPLING, step);
  out.forEach((id, i) => (next[i] = id));
}

Deno.test("one readback for a batch's due rounds equals each sequence's round on its own", async () => {
  const engine = await stories();
  const prompts = [[1, 400, 300], [1, 17, 33, 250, 9], [1, 88]];
  const steps = 48;
  // R-KV too: its key redundancy is computed for every due sequence of the batch in the same readback.
  for (const policy of ["lethe", "rkv"] as const) await sameRounds(engine, prompts, steps, policy);
});

async function sameRounds(engine: Engine, prompts: number[][], steps: number, policy: "lethe" | "rkv") {
  const run = async (batched: boolean) => {
    // Different budgets, so rounds fall due at different steps for different sequences.
    const seqs = prompts.map((_, i) => engine.newSequence({ policy, budget: 8 + 4 * i }));
    const next = await prefillEach(engine, seqs, prompts);
    const ids: number[][] = prompts.map(() => []);
    let rounds = 0;
    for (let step = 1; step <= steps; step++) {
      next.forEach((id, i) => ids[i].push(id));
      await decodeAll(engine, seqs, next, step);
      if (batched) rounds += (await pruneBatch(engine, seqs, step)).filter((r) => r !== null).length;
      else {
        for (const s of seqs) if (await maybePrune(engine, s, step, false)) rounds++;
      }
    }
    const views = await Promise.all(seqs.map((s) => s.kv.views()));
    for (const s of seqs) s.kv.destroy();
    return { ids, rounds, positions: views.map((v) => v.map((l) => [...l.positions])) };
  };
  const one = await run(false);
  const many = await run(true);
  assert(one.rounds >= 10, `${policy}: only ${one.rounds} rounds`);
  assertEquals(many, one, policy);
}

Deno.test("aligned rounds: a batch's Lethe rounds fall on the same steps once all have filled, within budget", async () => {
  const engine = await stories();
  // Prompts of different lengths fill a budget-16 cache at different steps, so unaligned rounds are out of phase.
  const prompts = [[1, 400, 300], [1, 17, 33, 250, 9, 61], [1, 88, 12, 5]];
  const budget = 16;
  const steps = 60;
  const run = async (align: boolean) => {
    const seqs = prompts.map(() => engine.newSequence({ policy: "lethe", budget }));
    const next = await prefillEach(engine, seqs, prompts);
    const roundSteps: number[][] = prompts.map(() => []);
    for (let step = 1; step <= steps; step++) {
      await decodeAll(engine, seqs, next, step);
      const rounds = await pruneBatch(engine, seqs, step, align);
      rounds.forEach((r, i) => r && roundSteps[i].push(step));
      for (const s of seqs) {
        const total = s.kv.lens().reduce((a, b) => a + b, 0);
        assert(total <= budget * s.kv.lens().length, `step ${step}: ${total} tokens over the budget`);
      }
    }
    for (const s of seqs) s.kv.destroy();
    return roundSteps;
  };
  // The last 20 steps: every sequence has long since filled.
  const late = (r: number[][]) => r.map((s) => s.filter((x) => x > steps - 20));
  const aligned = late(await run(true));
  const own = late(await run(false));
  assert(aligned[0].length >= 3, `only ${aligned[0].length} late rounds`);
  assertEquals(aligned[1], aligned[0]);
  assertEquals(aligned[2], aligned[0]);
  assert(
    own.some((s) => JSON.stringify(s) !== JSON.stringify(own[0])),
    "without alignment the rounds were already in phase: the test shows nothing",
  );
});

Deno.test("Engine.generate (next step recorded before the id is read) equals one synchronous step at a time", async () => {
  const engine = await stories();
  const prompt = [1, 400, 300, 200, 17, 33];
  // The synchronous loop Engine.generate replaced: sample, read back, prune, decode.
  const reference = async (kv: Record<string, unknown>, maxTokens: number, eos: number[]) => {
    const seq = engine.newSequence(kv as never, prompt.length + Math.min(maxTokens, 256), prompt.length);
    const greedy = { ...DEFAULT_SAMPLING, temperature: 0 };
    let [next] = await sampleIds(engine, engine.forward.prefill(seq, prompt), 1, greedy, 0);
    let rounds = (await maybePrune(engine, seq, 0, true)) ? 1 : 0;
    const ids: number[] = [];
    for (let step = 1; step <= maxTokens; step++) {
      ids.push(next);
      if (eos.includes(next) || step === maxTokens) break;
      [next] = await sampleIds(engine, engine.forward.decode([seq], [next]), 1, greedy, step);
      if (await maybePrune(engine, seq, step, false)) rounds++;
    }
    const out = { ids, rounds, peak: seq.kv.peakAllocated, live: seq.kv.peakLive };
    seq.kv.destroy();
    return out;
  };
  const free = await engine.generate(prompt, { maxTokens: 120, sampling: { temperature: 0 } });
  // An "EOS" that greedy decoding reaches mid-way (the 60th token), so that a speculative step is discarded.
  const stopAt = [free.ids[59]];
  for (const kv of [{ policy: "full" }, { policy: "lethe", budget: 32 }, { policy: "h2o", budget: 24 }]) {
    for (const [maxTokens, eos] of [[1, []], [2, []], [37, []], [120, stopAt]] as [number, number[]][]) {
      const what = `${kv.policy} maxTokens=${maxTokens} eos=${eos}`;
      const want = await reference(kv, maxTokens, eos);
      const got = await engine.generate(prompt, {
        maxTokens,
        eos,
        kv: kv as never,
        sampling: { temperature: 0 },
      });
      assertEquals(got.ids, want.ids, `${what}: ids`);
      assertEquals(got.stats.prune_rounds, want.rounds, `${what}: rounds`);
      assertEquals(
        [got.stats.kv_bytes_peak, got.stats.kv_bytes_live_peak],
        [want.peak, want.live],
        `${what}: peaks`,
      );
    }
  }
});

Deno.test("Lethe at budget 32 decodes the same on the texture and the storage-buffer paths (ids, rounds, KV bytes)", async () => {
  const prompt = [1, 400, 300, 200, 17, 33];
  const results = [];
  for (const path of ["texture", "storage"] as const) {
    const engine = await Engine.load(STORIES_DIR, { ctx: await gpuContext(path), progress: false });
    assertEquals(engine.ctx.gpu.useTextures, path === "texture");
    const r = await engine.generate(prompt, {
      maxTokens: 80,
      kv: { policy: "lethe", budget: 32 },
      sampling: { temperature: 0 },
    });
    engine.destroy();
    results.push(r);
  }
  const [tex, buf] = results;
  assert(tex.stats.prune_rounds > 0, "no pruning round ran: the test shows nothing");
  assertEquals(buf.ids, tex.ids, "greedy ids");
  assertEquals(buf.stats.prune_rounds, tex.stats.prune_rounds, "rounds");
  assertEquals(
    [buf.stats.kv_bytes_peak, buf.stats.kv_bytes_live_peak],
    [tex.stats.kv_bytes_peak, tex.stats.kv_bytes_live_peak],
    "KV peaks",
  );
});
