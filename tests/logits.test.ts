/**
 * wgsl/logits.wgsl against src/ref/logits.ts on fresh random rows: processing (penalties, min_p), logprobs with
 * the top N, and the token-count increment. Outputs are poisoned (NaN) before every run.
 */
import {
  biasBuffer,
  countToken,
  type LogitsProcessing,
  LOGPROB_SLOT_WORDS,
  logprobsRow,
  processLogits,
} from "../src/ops/logits.ts";
import { countsRef, logprobsRef, processRef, PROMPT_BIT } from "../src/ref/logits.ts";
import { freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

const seed = freshSeed();
console.log(`logits tests: LETHE_TEST_SEED=${seed}`);
const next = rng(seed);
const int = (n: number) => Math.floor(next() * n);

/** Rows with a few large logits (LLM-like), some negative, some positive. */
function row(vocab: number): Float32Array {
  const l = randomF32(vocab, next, 4);
  for (let j = 0; j < Math.min(10, vocab); j++) l[int(vocab)] = 8 + 6 * next();
  return l;
}

Deno.test("logits process: penalties and min_p match the reference", async () => {
  const ctx = await gpuContext();
  for (const vocab of [5, 300, 151936]) {
    for (let trial = 0; trial < 4; trial++) {
      const l = row(vocab);
      const prompt = Array.from({ length: int(40) + 1 }, () => int(vocab));
      const generated = Array.from({ length: int(60) }, () => int(vocab));
      const counts = countsRef(vocab, prompt, generated);
      const p: LogitsProcessing = {
        presencePenalty: trial === 0 ? 0 : next() * 4 - 2,
        frequencyPenalty: trial === 1 ? 0 : next() * 4 - 2,
        repetitionPenalty: trial === 2 ? 1 : 0.5 + next() * 1.5,
        minP: trial === 3 ? 0 : next() * 0.3,
        temperature: 0.3 + next(),
        // A few biased ids (OpenAI's range), one of them possibly the largest logit.
        logitBias: trial === 0 ? {} : Object.fromEntries(
          Array.from({ length: 3 }, () => [int(vocab), next() * 200 - 100]),
        ),
      };
      const gBias = biasBuffer(ctx, p.logitBias!, vocab);
      const offIn = int(7), offOut = int(5);
      const src = new Float32Array(offIn + vocab + 3).fill(NaN);
      src.set(l, offIn);
      const gSrc = ctx.upload(src, "logits");
      const gCounts = ctx.upload(counts, "counts");
      const out = ctx.createBuffer((offOut + vocab + 2) * 4, "processed");
      poison(ctx, out);
      processLogits(
        ctx,
        { buffer: gSrc, offset: offIn, vocab },
        { buffer: out, offset: offOut },
        gCounts,
        p,
        gBias,
      );
      const got = await ctx.readF32(out);
      const want = processRef(l, counts, p);
      for (let i = 0; i < vocab; i++) {
        const a = got[offOut + i], e = want.out[i];
        if (want.ambiguous.has(i)) continue;
        const err = Math.abs(a - e) / Math.max(1, Math.abs(e));
        if (!(err <= 1e-6)) {
          throw new Error(
            `process vocab=${vocab} trial ${trial} id ${i}: ${a} != ${e} (${
              JSON.stringify(p)
            }, seed ${seed})`,
          );
        }
      }
      if (!Number.isNaN(got[offOut + vocab])) throw new Error("process wrote past its row");
      if (offOut > 0 && !Number.isNaN(got[offOut - 1])) throw new Error("process wrote before its row");
      for (const b of [gSrc, gCounts, out, gBias]) b.destroy();
    }
  }
});

Deno.test("logits process: no penalties and min_p 0 copies the row exactly", async () => {
  const ctx = await gpuContext();
  const vocab = 1000 + int(1000);
  const l = row(vocab);
  const g = ctx.upload(l, "logits");
  const out = ctx.createBuffer(vocab * 4, "processed");
  poison(ctx, out);
  processLogits(ctx, { buffer: g, offset: 0, vocab }, { buffer: out, offset: 0 }, null, {
    minP: 0.2,
    temperature: 0, // greedy: min_p cannot change the argmax and is skipped
  });
  const got = await ctx.readF32(out);
  for (let i = 0; i < vocab; i++) {
    if (got[i] !== l[i]) throw new Error(`copy id ${i}: ${got[i]} != ${l[i]} (seed ${seed})`);
  }
  g.destroy();
  out.destroy();
});

Deno.test("logits logprobs: the chosen id and the top N match the reference", async () => {
  const ctx = await gpuContext();
  for (const vocab of [3, 257, 5000, 151936]) {
    for (const n of [0, 1, 5, 20]) {
      const l = row(vocab);
      // A tie among the largest values: the lower id must come first.
      if (vocab > 10) l[int(vocab)] = l[int(vocab)] = 30;
      const id = int(vocab);
      const off = int(9);
      const src = new Float32Array(off + vocab).fill(NaN);
      src.set(l, off);
      const g = ctx.upload(src, "logits");
      const slot = ctx.createBuffer(256, "slot");
      poison(ctx, slot);
      ctx.write(slot, Uint32Array.of(id));
      logprobsRow(ctx, { buffer: g, offset: off, vocab }, slot, n);
      const words = await ctx.readU32(slot);
      const f = new Float32Array(words.buffer);
      const want = logprobsRef(l, id, n);
      const close = (a: number, e: number) => Math.abs(a - e) <= 2e-5 * Math.max(1, Math.abs(e));
      if (words[0] !== id) throw new Error(`logprobs overwrote the id: ${words[0]} != ${id}`);
      if (!close(f[1], want.logprob)) {
        throw new Error(`logprob vocab=${vocab} id ${id}: ${f[1]} != ${want.logprob} (seed ${seed})`);
      }
      const m = Math.min(n, vocab);
      for (let j = 0; j < m; j++) {
        const gi = words[2 + 2 * j], gl = f[3 + 2 * j];
        if (gi !== want.top[j].id || !close(gl, want.top[j].logprob)) {
          throw new Error(
            `top ${j} vocab=${vocab} n=${n}: (${gi}, ${gl}) != (${want.top[j].id}, ${
              want.top[j].logprob
            }) (seed ${seed})`,
          );
        }
      }
      // Nothing past the record (slot words beyond 2 + 2m stay poisoned).
      for (let w = 2 + 2 * m; w < LOGPROB_SLOT_WORDS + 4; w++) {
        if (words[w] !== 0x7fc00000) throw new Error(`logprobs wrote word ${w} (n=${n}, vocab=${vocab})`);
      }
      g.destroy();
      slot.destroy();
    }
  }
});

Deno.test("logits count: the sampled id's generated count grows, the prompt bit stays", async () => {
  const ctx = await gpuContext();
  const vocab = 500 + int(500);
  const prompt = Array.from({ length: 30 }, () => int(vocab));
  const counts = countsRef(vocab, prompt, []);
  const g = ctx.upload(counts, "counts");
  const slots = ctx.createBuffer(256 * 3, "slots");
  poison(ctx, slots);
  const ids = [prompt[0], int(vocab), prompt[0]];
  ids.forEach((id, k) => ctx.write(slots, Uint32Array.of(id), k * 256));
  for (let k = 0; k < 3; k++) countToken(ctx, { buffer: slots, offset: k * 256, size: 256 }, g, vocab);
  const got = await ctx.readU32(g);
  const want = countsRef(vocab, prompt, ids);
  for (let i = 0; i < vocab; i++) {
    if (got[i] !== want[i]) throw new Error(`count id ${i}: ${got[i]} != ${want[i]} (seed ${seed})`);
  }
  if ((got[prompt[0]] & PROMPT_BIT) === 0 || (got[prompt[0]] & 0x7fffffff) < 2) {
    throw new Error("count lost the prompt bit or an increment");
  }
  g.destroy();
  slots.destroy();
});
