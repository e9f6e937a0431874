/**
 * The OpenAI fields beyond plain generation, over real HTTP on a tiny random Qwen2 with the Qwen tokenizer:
 * logprobs (chat and completions, streamed and not, in OpenAI's shapes), n > 1 choices (greedy choices equal
 * n = 1; seeded choices distinct and reproducible; streamed chunks carry their index; usage counts the prompt
 * once), penalties and min_p (equal Engine.generate with the same options; a zero penalty is no penalty), and
 * the 400s naming each field.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import "../src/io/deno_fs.ts"; // local model paths
import { Engine } from "../src/engine/engine.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import type { KvSettings } from "../src/kv/options.ts";
import { type JobEvent, Scheduler } from "../src/server/scheduler.ts";
import { startServer } from "../src/server/server.ts";
import { dirname } from "node:path";
import { STORIES_DIR, tinyChatModel } from "./support/models.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

async function post(url: string, body: unknown): Promise<Response> {
  return await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function json(url: string, body: unknown): Promise<Json> {
  const res = await post(url, body);
  const j = await res.json();
  assertEquals(res.status, 200, JSON.stringify(j));
  return j;
}

/** The JSON events of an SSE response (it must end with [DONE]). */
async function sse(url: string, body: unknown): Promise<Json[]> {
  const res = await post(url, { ...body as Json, stream: true });
  assertEquals(res.status, 200);
  const events: Json[] = [];
  let done = false;
  for (const block of (await res.text()).split("\n\n")) {
    const line = block.trim();
    if (!line) continue;
    if (line === "data: [DONE]") {
      done = true;
      continue;
    }
    events.push(JSON.parse(line.slice(6)));
  }
  assert(done, "no [DONE]");
  return events;
}

/** Checks one chat logprobs entry's shape; returns it. */
function chatEntry(e: Json, top: number): Json {
  assertEquals(typeof e.token, "string");
  assert(typeof e.logprob === "number" && e.logprob <= 1e-6, `logprob ${e.logprob}`);
  assert(Array.isArray(e.bytes) && e.bytes.every((b: number) => Number.isInteger(b) && b >= 0 && b < 256));
  assertEquals(e.top_logprobs.length, top);
  for (let j = 0; j < top; j++) {
    const t = e.top_logprobs[j];
    assertEquals(Object.keys(t).sort(), ["bytes", "logprob", "token"]);
    if (j > 0) assert(t.logprob <= e.top_logprobs[j - 1].logprob, "top_logprobs not descending");
  }
  return e;
}

Deno.test("server: logprobs, n > 1, penalties and min_p in OpenAI's shapes", opts, async (t) => {
  const model = await tinyChatModel("lethe-openai-", 7);
  const engine = await Engine.load(model, { progress: false });
  const prompt = "The quick brown fox jumps over";
  // Library references first: the server then owns the engine.
  const penalties = { repetitionPenalty: 1.5, frequencyPenalty: 1, presencePenalty: 0.5 };
  const refPen = await engine.generate(prompt, { maxTokens: 24, sampling: penalties, eos: [] });
  const refPlain = await engine.generate(prompt, { maxTokens: 24, eos: [] });
  const refMinP = await engine.generate(prompt, {
    maxTokens: 16,
    sampling: { temperature: 1.2, seed: 9, minP: 0.2 },
    eos: [],
  });
  const server = startServer(engine, { chatTemplate: "deepseek-r1", modelId: "tiny" });
  const url = server.url;
  const chatUrl = `${url}/v1/chat/completions`;
  const compUrl = `${url}/v1/completions`;
  const messages = [{ role: "user", content: "Say something." }];

  await t.step("chat logprobs: shapes, greedy token = top 1, streamed = not streamed", async () => {
    const body = {
      messages,
      max_tokens: 10,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
      ignore_eos: true,
    };
    const r = await json(chatUrl, body);
    const content: Json[] = r.choices[0].logprobs.content;
    assertEquals(content.length, r.usage.completion_tokens);
    for (const e of content) {
      chatEntry(e, 3);
      // Greedy: the chosen token is the most likely one.
      assertEquals(e.token, e.top_logprobs[0].token);
      assert(Math.abs(e.logprob - e.top_logprobs[0].logprob) < 1e-6);
    }
    const events = await sse(chatUrl, body);
    const streamed = events.flatMap((ev) => ev.choices?.[0]?.logprobs?.content ?? []);
    assertEquals(streamed, content);
    // logprobs without top_logprobs: the token's own logprob only.
    const bare = await json(chatUrl, { messages, max_tokens: 3, temperature: 0, logprobs: true });
    for (const e of bare.choices[0].logprobs.content) chatEntry(e, 0);
    // Not asked: null.
    const none = await json(chatUrl, { messages, max_tokens: 2, temperature: 0 });
    assertEquals(none.choices[0].logprobs, null);
  });

  await t.step("completions logprobs: tokens, token_logprobs, top_logprobs, text_offset", async () => {
    const body = { prompt, max_tokens: 12, temperature: 0.8, seed: 4, logprobs: 2, ignore_eos: true };
    const r = await json(compUrl, body);
    const lp = r.choices[0].logprobs;
    const n = r.usage.completion_tokens;
    assertEquals(
      [lp.tokens.length, lp.token_logprobs.length, lp.top_logprobs.length, lp.text_offset.length],
      [n, n, n, n],
    );
    assertEquals(lp.text_offset[0], 0);
    for (let k = 0; k < n; k++) {
      assertEquals(typeof lp.tokens[k], "string");
      assert(lp.token_logprobs[k] <= 1e-6);
      const tops = Object.values(lp.top_logprobs[k]) as number[];
      assert(tops.length >= 1 && tops.length <= 2);
      // The sampled token is never more likely than the most likely one.
      assert(lp.token_logprobs[k] <= Math.max(...tops) + 1e-6);
      if (k > 0) assert(lp.text_offset[k] >= lp.text_offset[k - 1]);
    }
    // The tokens spell the text (no stop string, no EOS).
    assertEquals(lp.tokens.join(""), r.choices[0].text);
    const events = await sse(compUrl, body);
    const merged = {
      tokens: [] as string[],
      token_logprobs: [] as number[],
      top_logprobs: [] as Json[],
      text_offset: [] as number[],
    };
    for (const ev of events) {
      const l = ev.choices?.[0]?.logprobs;
      if (!l) continue;
      merged.tokens.push(...l.tokens);
      merged.token_logprobs.push(...l.token_logprobs);
      merged.top_logprobs.push(...l.top_logprobs);
      merged.text_offset.push(...l.text_offset);
    }
    assertEquals(merged, lp);
  });

  await t.step("n = 3 at temperature 0: three copies of n = 1; usage counts the prompt once", async () => {
    const one = await json(compUrl, { prompt, max_tokens: 12, temperature: 0 });
    const three = await json(compUrl, { prompt, max_tokens: 12, temperature: 0, n: 3 });
    assertEquals(three.choices.map((c: Json) => c.index), [0, 1, 2]);
    for (const c of three.choices) {
      assertEquals([c.text, c.finish_reason], [one.choices[0].text, one.choices[0].finish_reason]);
    }
    assertEquals(three.usage.prompt_tokens, one.usage.prompt_tokens);
    assertEquals(three.usage.completion_tokens, 3 * one.usage.completion_tokens);
    const chat = await json(chatUrl, { messages, max_tokens: 8, temperature: 0, n: 3 });
    const chat1 = await json(chatUrl, { messages, max_tokens: 8, temperature: 0 });
    for (const c of chat.choices) assertEquals(c.message, chat1.choices[0].message);
  });

  await t.step(
    "n = 4 with a seed: distinct choices, reproducible, choice 0 = n = 1, streamed by index",
    async () => {
      const body = { prompt, max_tokens: 16, temperature: 1.5, seed: 1234, n: 4, ignore_eos: true };
      const a = await json(compUrl, body);
      const b = await json(compUrl, body);
      assertEquals(a.choices, b.choices);
      const texts = a.choices.map((c: Json) => c.text);
      assert(new Set(texts).size >= 2, `four seeded choices all equal: ${texts}`);
      const one = await json(compUrl, { ...body, n: 1 });
      assertEquals(texts[0], one.choices[0].text);
      const events = await sse(compUrl, body);
      const streamed = ["", "", "", ""];
      const finished = [0, 0, 0, 0];
      for (const ev of events) {
        for (const c of ev.choices ?? []) {
          streamed[c.index] += c.text;
          if (c.finish_reason) finished[c.index]++;
        }
      }
      assertEquals(streamed, texts);
      assertEquals(finished, [1, 1, 1, 1]);
      const usage = events.filter((e) => e.usage).map((e) => e.usage);
      assertEquals(usage.at(-1).completion_tokens, 4 * 16);
    },
  );

  await t.step("penalties and min_p: equal Engine.generate; zero penalties change nothing", async () => {
    const base = { prompt, max_tokens: 24, temperature: 0, ignore_eos: true, return_token_ids: true };
    const pen = await json(compUrl, {
      ...base,
      repetition_penalty: 1.5,
      frequency_penalty: 1,
      presence_penalty: 0.5,
    });
    assertEquals(pen.choices[0].token_ids, refPen.ids);
    const plain = await json(compUrl, base);
    assertEquals(plain.choices[0].token_ids, refPlain.ids);
    assert(refPen.ids.join() !== refPlain.ids.join(), "penalties changed nothing");
    const zero = await json(compUrl, {
      ...base,
      frequency_penalty: 0,
      presence_penalty: 0,
      repetition_penalty: 1,
    });
    assertEquals(zero.choices[0].token_ids, refPlain.ids);
    const minP = await json(compUrl, {
      ...base,
      max_tokens: 16,
      temperature: 1.2,
      seed: 9,
      min_p: 0.2,
    });
    assertEquals(minP.choices[0].token_ids, refMinP.ids);
    // logit_bias: +100 on one id makes greedy decoding pick it every time; −100 on the greedy first token bans it.
    const forced = 1234;
    const biased = await json(compUrl, { ...base, max_tokens: 6, logit_bias: { [forced]: 100 } });
    assertEquals(biased.choices[0].token_ids, Array(6).fill(forced));
    const banned = await json(compUrl, { ...base, max_tokens: 6, logit_bias: { [refPlain.ids[0]]: -100 } });
    assert(banned.choices[0].token_ids[0] !== refPlain.ids[0], "a -100 bias did not ban the token");
    // With logprobs: the bias changes the choice, not the model's raw logprobs.
    const lp = await json(compUrl, { ...base, max_tokens: 1, logprobs: 1, logit_bias: { [forced]: 100 } });
    const l = lp.choices[0].logprobs;
    assert(l.token_logprobs[0] < (Object.values(l.top_logprobs[0])[0] as number), "logprobs saw the bias");
  });

  await t.step("400s name the field; fields still unsupported stay 400", async () => {
    const bad: [Json, string, string][] = [
      [{ prompt, presence_penalty: 2.5 }, compUrl, "presence_penalty"],
      [{ prompt, frequency_penalty: -3 }, compUrl, "frequency_penalty"],
      [{ prompt, repetition_penalty: 0 }, compUrl, "repetition_penalty"],
      [{ prompt, repetition_penalty: "x" }, compUrl, "repetition_penalty"],
      [{ prompt, min_p: 1.5 }, compUrl, "min_p"],
      [{ prompt, n: 17 }, compUrl, "n"],
      [{ prompt, n: 0 }, compUrl, "n"],
      [{ prompt, logprobs: 21 }, compUrl, "logprobs"],
      [{ messages, top_logprobs: 3 }, chatUrl, "top_logprobs"],
      [{ messages, logprobs: true, top_logprobs: 21 }, chatUrl, "top_logprobs"],
      [{ messages, logprobs: 2 }, chatUrl, "logprobs"],
      [{ prompt, logit_bias: { "abc": 10 } }, compUrl, "logit_bias"],
      [{ prompt, logit_bias: { "5": 101 } }, compUrl, "logit_bias"],
      [{ prompt, logit_bias: { "151936": 1 } }, compUrl, "logit_bias"],
      [{ prompt, logit_bias: [1] }, compUrl, "logit_bias"],
      [{ prompt, best_of: 2 }, compUrl, "best_of"],
      [{ prompt, suffix: "x" }, compUrl, "suffix"],
      [{ messages, tools: [{ type: "function" }] }, chatUrl, "tools"],
    ];
    for (const [body, u, param] of bad) {
      const res = await post(u, body);
      const j = await res.json();
      assertEquals([res.status, j.error.param], [400, param], JSON.stringify(body));
    }
  });

  await server.shutdown();
  engine.destroy();
  await Deno.remove(dirname(model), { recursive: true });
});

Deno.test(
  "scheduler: n = 2 with penalties under a tight pool: the preempted fork resumes with its counts",
  opts,
  async () => {
    const engine = await Engine.load(STORIES_DIR, { progress: false });
    const promptIds = [1, 400, 300, 200];
    const kv: KvSettings = { policy: "h2o", budget: 300 };
    const sampling = {
      ...DEFAULT_SAMPLING,
      repetitionPenalty: 1.3,
      frequencyPenalty: 0.5,
      presencePenalty: 0.2,
    };
    const solo = (await engine.generate(promptIds, { maxTokens: 100, kv, sampling, eos: [] })).ids;
    const plain = (await engine.generate(promptIds, { maxTokens: 100, kv, eos: [] })).ids;
    assert(solo.join() !== plain.join(), "penalties changed nothing");
    // Bytes per token as the scheduler counts them (whatever the KV storage type).
    const probe = new Scheduler(engine, { kvMemory: 1 << 30, maxBatch: 4 });
    const tokenBytes = probe.tokenBytes;
    await probe.close();
    // h2o above its length never evicts: both caches fit at admission (112 slots each), not once they grow.
    const scheduler = new Scheduler(engine, { kvMemory: 2 * 112 * tokenBytes + 1000, maxBatch: 4 });
    const ids: number[][] = [[], []];
    const done = await new Promise<JobEvent[]>((resolve, reject) => {
      const ends: JobEvent[] = [];
      scheduler.submit({
        promptIds,
        maxTokens: 100,
        sampling,
        n: 2,
        kv,
        stop: [],
        eos: [],
        onEvent: (e) => {
          if (e.type === "token") ids[e.index].push(e.id);
          else if (e.type === "error") reject(new Error(e.message));
          else if (ends.push(e) === 2) resolve(ends);
        },
      });
    });
    const m = scheduler.metrics();
    await scheduler.close();
    assert(m.preemptionsTotal >= 1, "expected the fork to be preempted");
    assertEquals(
      m.promptTokensTotal,
      promptIds.length,
      "the prompt is prefilled once (a recompute not counted)",
    );
    assertEquals(done.map((e) => e.type === "done" && e.completionTokens), [100, 100]);
    assertEquals(ids, [solo, solo]);
    engine.destroy();
  },
);
