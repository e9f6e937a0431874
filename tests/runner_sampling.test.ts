/**
 * DecodeRunner features around sampling, on stories260K: n > 1 forks of a prefilled sequence decode exactly as
 * independently prefilled ones (greedy and sampled, with Lethe pruning at a small budget); logprobs read with
 * the ids (decode ahead included) equal the CPU reference on teacher-forced logits; penalties applied on the
 * GPU equal the CPU reference's choice, and a zero penalty changes nothing.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { Engine } from "../src/engine/engine.ts";
import type { DecodeRunner, RunnerRow } from "../src/engine/runner.ts";
import { DEFAULT_SAMPLING, type SamplingOptions, type TokenLogprobs } from "../src/engine/sampler.ts";
import type { KvSettings } from "../src/kv/options.ts";
import { countsRef, logprobsRef, processRef } from "../src/ref/logits.ts";
import { argmaxRef } from "../src/ref/sample.ts";
import { freshSeed, gpuContext, rng } from "./helpers.ts";
import { STORIES_DIR } from "./support/models.ts";

const seed = freshSeed();
console.log(`runner sampling tests: LETHE_TEST_SEED=${seed}`);
const next = rng(seed);

const engine = await Engine.load(STORIES_DIR, { ctx: await gpuContext(), progress: false });
const vocab = engine.config.vocabSize;
const randomPrompt = (
  n: number,
) => [1, ...Array.from({ length: n - 1 }, () => 3 + Math.floor(next() * (vocab - 3)))];

const row = (kv: KvSettings, sampling: SamplingOptions, prompt: number[], logprobs?: number): RunnerRow => ({
  seq: engine.newSequence(kv, prompt.length + 8, prompt.length),
  sampling,
  step: 0,
  next: 0,
  logprobs,
});

/** Decodes `rows` together for `steps` steps (recorded ahead when `ahead`), returning each row's ids. */
async function decode(runner: DecodeRunner, rows: RunnerRow[], steps: number, ahead: boolean) {
  const ids = rows.map((r) => [r.next]);
  const lps: (TokenLogprobs | null)[][] = rows.map(() => []);
  const rounds = rows.map(() => 0);
  for (let k = 0; k < steps; k++) {
    const r = await runner.step(rows, { mayRecordAhead: () => ahead && k + 1 < steps });
    rows.forEach((x, b) => {
      x.next = r.ids[b];
      ids[b].push(r.ids[b]);
      lps[b].push(r.logprobs[b]);
      if (r.rounds[b]) rounds[b]++;
    });
  }
  return { ids, lps, rounds };
}

function free(runner: DecodeRunner, rows: RunnerRow[]) {
  for (const r of rows) {
    runner.leave(r);
    runner.release(r);
    r.seq.kv.destroy();
  }
  runner.discardAhead();
}

for (
  const [name, kv] of [["full", { policy: "full" }], ["lethe at budget 16", {
    policy: "lethe",
    budget: 16,
  }]] as [
    string,
    KvSettings,
  ][]
) {
  Deno.test(`DecodeRunner: forks of one prefill decode as independent prefills (${name})`, async () => {
    const runner = engine.createRunner();
    const prompt = randomPrompt(12);
    const greedy = DEFAULT_SAMPLING;
    const hot = (s: number): SamplingOptions => ({
      ...DEFAULT_SAMPLING,
      temperature: 0.9,
      topP: 0.95,
      seed: s,
    });
    // One prefill, three forks: greedy, and two sampled with their own seeds.
    const lead = row(kv, greedy, prompt);
    const forks = [row(kv, greedy, prompt), row(kv, hot(seed), prompt), row(kv, hot(seed + 1), prompt)];
    for (const f of forks) f.seq.kv.destroy(); // the runner gives each fork a copy of the lead's
    const first = await runner.prefill(lead, prompt, { forks });
    lead.next = first.id!;
    forks.forEach((f, i) => (f.next = first.forks[i].id));
    // The same four, each prefilled on its own.
    const solo = [
      row(kv, greedy, prompt),
      row(kv, greedy, prompt),
      row(kv, hot(seed), prompt),
      row(kv, hot(seed + 1), prompt),
    ];
    for (const s of solo) s.next = (await runner.prefill(s, prompt)).id!;
    const steps = 40;
    const a = await decode(runner, [lead, ...forks], steps, true);
    const b = await decode(runner, solo, steps, false);
    assertEquals(a.ids, b.ids);
    assertEquals(a.rounds, b.rounds);
    assertEquals([lead, ...forks].map((r) => r.seq.kv.lens()), solo.map((r) => r.seq.kv.lens()));
    if (kv.policy === "lethe") assert(b.rounds[0] >= 3, `too few rounds: ${b.rounds}`);
    // Two seeds: distinct draws (40 tokens at temperature 0.9 on a 512-token vocabulary).
    assert(a.ids[2].join() !== a.ids[3].join(), "two seeds drew the same 41 tokens");
    free(runner, [lead, ...forks, ...solo]);
    runner.destroy();
  });
}

Deno.test("DecodeRunner: logprobs (with decode ahead) equal the reference on teacher-forced logits", async () => {
  const runner = engine.createRunner();
  const prompt = randomPrompt(9);
  const n = 5;
  const sampling = { ...DEFAULT_SAMPLING, temperature: 1, seed };
  const a = row({ policy: "full" }, sampling, prompt, n);
  const b = row({ policy: "full" }, DEFAULT_SAMPLING, prompt);
  const first = await runner.prefill(a, prompt);
  a.next = first.id!;
  const forced = [(await runner.prefill(b, prompt, { readLogits: true })).logits!];
  const steps = 12;
  const got = await decode(runner, [a], steps, true);
  for (let k = 0; k < steps; k++) {
    b.next = got.ids[0][k];
    forced.push((await runner.step([b], { readLogits: true })).logits![0]);
  }
  const all = [first.logprobs, ...got.lps[0]];
  all.forEach((lp, k) => {
    const want = logprobsRef(forced[k], got.ids[0][k], n);
    assert(lp !== null, `step ${k}: no logprobs`);
    const close = (x: number, y: number) => Math.abs(x - y) <= 1e-4 * Math.max(1, Math.abs(y));
    assert(close(lp.logprob, want.logprob), `step ${k}: ${lp.logprob} != ${want.logprob}`);
    assertEquals(lp.top.map((t) => t.id), want.top.map((t) => t.id), `step ${k} top ids`);
    lp.top.forEach((t, j) => assert(close(t.logprob, want.top[j].logprob), `step ${k} top ${j}`));
  });
  free(runner, [a, b]);
  runner.destroy();
});

Deno.test("DecodeRunner: GPU penalties pick what the reference picks; a zero penalty changes nothing", async () => {
  const runner = engine.createRunner();
  const prompt = randomPrompt(10);
  const pen: SamplingOptions = {
    ...DEFAULT_SAMPLING,
    repetitionPenalty: 1.3,
    frequencyPenalty: 0.4,
    presencePenalty: 0.3,
  };
  const zero: SamplingOptions = { ...DEFAULT_SAMPLING, frequencyPenalty: 0 };
  const rows = [
    row({ policy: "full" }, pen, prompt),
    row({ policy: "full" }, zero, prompt),
    row({ policy: "full" }, DEFAULT_SAMPLING, prompt),
  ];
  for (const r of rows) r.next = (await runner.prefill(r, prompt)).id!;
  const steps = 30;
  const got = await decode(runner, rows, steps, true);
  assertEquals(got.ids[1], got.ids[2], "frequency_penalty 0 differs from no penalty");
  assert(got.ids[0].join() !== got.ids[2].join(), "penalties changed nothing in 31 greedy tokens");
  // Teacher-force the penalized ids and redo each choice on the CPU.
  const t = row({ policy: "full" }, DEFAULT_SAMPLING, prompt);
  let logits = (await runner.prefill(t, prompt, { readLogits: true })).logits!;
  let decided = 0;
  for (let k = 0; k <= steps; k++) {
    const { out } = processRef(logits, countsRef(vocab, prompt, got.ids[0].slice(0, k)), pen);
    const sorted = Array.from(out).sort((x, y) => y - x);
    // Near-ties (f32 order of operations) may go either way.
    if (sorted[0] - sorted[1] > 1e-4) {
      assertEquals(got.ids[0][k], argmaxRef(out), `token ${k}`);
      decided++;
    }
    if (k === steps) break;
    t.next = got.ids[0][k];
    logits = (await runner.step([t], { readLogits: true })).logits![0];
  }
  assert(decided >= steps - 3, `only ${decided} decidable tokens`);
  free(runner, [...rows, t]);
  runner.destroy();
});

Deno.test("DecodeRunner: min_p with a sampled row keeps only ids the reference keeps", async () => {
  const runner = engine.createRunner();
  const prompt = randomPrompt(8);
  const s: SamplingOptions = { ...DEFAULT_SAMPLING, temperature: 1.5, seed, minP: 0.3 };
  const a = row({ policy: "full" }, s, prompt);
  const t = row({ policy: "full" }, DEFAULT_SAMPLING, prompt);
  a.next = (await runner.prefill(a, prompt)).id!;
  let logits = (await runner.prefill(t, prompt, { readLogits: true })).logits!;
  const steps = 20;
  const got = await decode(runner, [a], steps, true);
  for (let k = 0; k <= steps; k++) {
    const { out, ambiguous } = processRef(logits, null, s);
    const id = got.ids[0][k];
    assert(out[id] > -1e38 || ambiguous.has(id), `token ${k}: ${id} is below min_p`);
    if (k === steps) break;
    t.next = id;
    logits = (await runner.step([t], { readLogits: true })).logits![0];
  }
  free(runner, [a, t]);
  runner.destroy();
});

Deno.test("Engine.generate: sampling options out of range throw naming the option", async () => {
  const bad: [Partial<SamplingOptions>, string][] = [
    [{ minP: 1.5 }, "sampling.minP"],
    [{ presencePenalty: 3 }, "sampling.presencePenalty"],
    [{ frequencyPenalty: -2.5 }, "sampling.frequencyPenalty"],
    [{ repetitionPenalty: 0 }, "sampling.repetitionPenalty"],
  ];
  for (const [sampling, name] of bad) {
    let msg = "";
    try {
      await engine.generate([1, 400], { maxTokens: 2, sampling });
    } catch (e) {
      msg = String(e);
    }
    assert(msg.includes(name), `${JSON.stringify(sampling)}: ${msg || "no error"}`);
  }
  // In range, through the library: penalties change a greedy continuation.
  const plain = await engine.generate([1, 400, 300], { maxTokens: 30 });
  const pen = await engine.generate([1, 400, 300], { maxTokens: 30, sampling: { repetitionPenalty: 1.4 } });
  assert(plain.ids.join() !== pen.ids.join(), "repetitionPenalty changed nothing");
});

Deno.test({
  name: "runner sampling: engine teardown",
  fn: () => engine.destroy(),
});
