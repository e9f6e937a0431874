/**
 * The OpenAI-compatible server against real HTTP on 127.0.0.1 (a free port): outputs equal Engine.generate
 * for the same seed (streaming and not), concurrent streams under a tight KV pool, preemption, disconnects
 * freeing KV, every bad input answered 400, /metrics, and the `openai` npm client.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
// deno-lint-ignore no-import-prefix
import OpenAI from "npm:openai@4.104.0";
import { Engine } from "../src/engine/engine.ts";
import type { GenerateOptions } from "../src/engine/generate.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import { type JobEvent, Scheduler } from "../src/server/scheduler.ts";
import { startServer } from "../src/server/server.ts";
import { StopStrings } from "../src/engine/stop.ts";
import { splitThought, ThinkSplitter } from "../src/server/text.ts";
import { dirname } from "node:path";
import { STORIES_DIR, tinyChatModel } from "./support/models.ts";
import { freshSeed, rng } from "./helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

type Json = Record<string, unknown>;

async function post(url: string, body: unknown, raw = false): Promise<Response> {
  return await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: raw ? String(body) : JSON.stringify(body),
  });
}

/** Reads a whole SSE response: the JSON events and whether it ended with [DONE]. */
async function sse(res: Response): Promise<{ events: Json[]; done: boolean }> {
  assertEquals(res.status, 200);
  assert(res.headers.get("content-type")!.startsWith("text/event-stream"));
  const text = await res.text();
  const events: Json[] = [];
  let done = false;
  for (const block of text.split("\n\n")) {
    const line = block.trim();
    if (!line) continue;
    assert(line.startsWith("data: "), `bad SSE line ${line}`);
    const data = line.slice(6);
    if (data === "[DONE]") {
      done = true;
      continue;
    }
    assert(!done, "event after [DONE]");
    events.push(JSON.parse(data));
  }
  return { events, done };
}

async function metrics(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^(\w+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    assert(m, `bad metrics line ${line}`);
    out[m[1]] = Number(m[2]);
  }
  return out;
}

type Choice = { token_ids?: number[]; text?: string; finish_reason: string | null };

Deno.test("server text helpers: stop strings across pieces, thought split at any chunking", () => {
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const r = rng(seed);
  const full = "<think>\nlet me see</think>\n\nThe answer is 4.";
  for (let trial = 0; trial < 20; trial++) {
    const s = new ThinkSplitter(false);
    const pieces = [];
    let i = 0;
    while (i < full.length) {
      const n = 1 + Math.floor(r() * 5);
      pieces.push(...s.push(full.slice(i, i + n)));
      i += n;
    }
    pieces.push(...s.flush());
    const reasoning = pieces.filter((p) => p.kind === "reasoning").map((p) => p.text).join("");
    const content = pieces.filter((p) => p.kind === "content").map((p) => p.text).join("");
    assertEquals([reasoning, content], ["let me see", "The answer is 4."]);
  }
  assertEquals(splitThought("thinking\n</think>\n\nok", true), { reasoning: "thinking\n", content: "ok" });
  assertEquals(splitThought("no thought", false), { reasoning: null, content: "no thought" });
  const stop = new StopStrings(["END"]);
  assertEquals(stop.push("abcE") + stop.push("N") + stop.push("Dxyz") + stop.flush(), "abc");
  assert(stop.stopped);
});

Deno.test("server on stories260K (token-id prompts)", opts, async (t) => {
  const engine = await Engine.load(STORIES_DIR);
  const prompt = [1, 400, 300, 200];
  const ref = async (o: GenerateOptions) => (await engine.generate(prompt, o)).ids;
  // KV bytes per token over all layers in the default format (f16).
  const tokenBytes = engine.kvTokenBytes();

  // Solo references first (the server shares the engine, so nothing else may run while it serves).
  const cases = Array.from({ length: 8 }, (_, i) => ({
    max_tokens: 24 + 5 * i,
    temperature: i % 3 === 0 ? 0 : 0.9,
    seed: 100 + i,
    kv_policy: ["full", "lethe", "h2o", "streaming"][i % 4],
    kv_budget: 16,
  }));
  const refs: number[][] = [];
  for (const c of cases) {
    refs.push(
      await ref({
        maxTokens: c.max_tokens,
        sampling: { temperature: c.temperature, seed: c.seed },
        kv: { policy: c.kv_policy as "full", budget: c.kv_budget },
      }),
    );
  }
  // All greedy: the server samples the whole batch with one argmax dispatch.
  const greedyCases = cases.map((c, i) => ({ ...c, temperature: 0, max_tokens: 20 + 7 * i }));
  const greedyRefs: number[][] = [];
  for (const c of greedyCases) {
    greedyRefs.push(
      await ref({
        maxTokens: c.max_tokens,
        sampling: { temperature: 0 },
        kv: { policy: c.kv_policy as "full", budget: c.kv_budget },
      }),
    );
  }
  const plain = await ref({ maxTokens: 40, sampling: { temperature: 0.8, seed: 11 } });
  const lethe = await ref({
    maxTokens: 60,
    sampling: { temperature: 0.8, seed: 12 },
    kv: { policy: "lethe", budget: 16 },
  });

  // A pool that holds three of the largest requests: the rest queue.
  const kvMemory = 3 * Math.ceil((4 + 59) / 16) * 16 * tokenBytes;
  // Rounds on each sequence's own schedule: the concurrent steps below compare with solo runs token for token
  // (aligned rounds, the default, move a batched sequence's rounds; tested on their own below).
  let server = startServer(engine, { kvMemory, maxBatch: 8, alignRounds: false });
  const url = server.url;

  await t.step("health and models", async () => {
    assertEquals(await (await fetch(`${url}/health`)).json(), { status: "ok", model: "stories260K" });
    const models = await (await fetch(`${url}/v1/models`)).json();
    assertEquals(models.object, "list");
    assertEquals(models.data[0].id, "stories260K");
  });

  const before = await metrics(url);

  await t.step("non-streaming completion equals Engine.generate", async () => {
    const res = await post(`${url}/v1/completions`, {
      model: "stories260K",
      prompt,
      max_tokens: 40,
      temperature: 0.8,
      seed: 11,
    });
    assertEquals(res.status, 200);
    const body = await res.json();
    assertEquals(body.object, "text_completion");
    assertEquals(body.choices[0].token_ids, plain);
    assertEquals(body.choices[0].finish_reason, "length");
    assertEquals(body.usage, { prompt_tokens: 4, completion_tokens: 40, total_tokens: 44 });
  });

  await t.step("streaming completion (lethe, pruning rounds) equals Engine.generate", async () => {
    const res = await post(`${url}/v1/completions`, {
      prompt: [prompt],
      max_tokens: 60,
      temperature: 0.8,
      seed: 12,
      stream: true,
      kv_policy: "lethe",
      kv_budget: 16,
    });
    const { events, done } = await sse(res);
    assert(done, "no [DONE]");
    const ids = events.flatMap((e) => (e.choices as Choice[])[0]?.token_ids ?? []);
    assertEquals(ids, lethe);
    const last = events.at(-1)!;
    assertEquals((last.choices as Choice[])[0].finish_reason, "length");
    assertEquals(last.usage, { prompt_tokens: 4, completion_tokens: 60, total_tokens: 64 });
  });

  await t.step("8 concurrent streams under a tight KV pool each equal their solo result", async () => {
    const results = await Promise.all(cases.map(async (c) => {
      const { events, done } = await sse(await post(`${url}/v1/completions`, { prompt, stream: true, ...c }));
      assert(done);
      return events.flatMap((e) => (e.choices as Choice[])[0]?.token_ids ?? []);
    }));
    results.forEach((ids, i) => assertEquals(ids, refs[i], `stream ${i} (${cases[i].kv_policy})`));
    const m = await metrics(url);
    assert(m.lethe_batch_size_max > 1, "requests were never batched");
    assert(m.lethe_batch_size_max <= 8);
    assert(m.lethe_kv_bytes_peak <= kvMemory, `peak ${m.lethe_kv_bytes_peak} > pool ${kvMemory}`);
    assert(m.lethe_queue_length_max > 3, "the tight pool should have queued requests");
    assertEquals(m.lethe_preemptions_total, 0);
  });

  await t.step("8 concurrent greedy streams (one batched argmax) each equal their solo result", async () => {
    const results = await Promise.all(greedyCases.map(async (c) => {
      const { events, done } = await sse(await post(`${url}/v1/completions`, { prompt, stream: true, ...c }));
      assert(done);
      return events.flatMap((e) => (e.choices as Choice[])[0]?.token_ids ?? []);
    }));
    results.forEach((ids, i) =>
      assertEquals(ids, greedyRefs[i], `greedy stream ${i} (${greedyCases[i].kv_policy})`)
    );
  });

  await t.step("/metrics moves", async () => {
    const m = await metrics(url);
    assert(m.lethe_generated_tokens_total >= before.lethe_generated_tokens_total + 100);
    assert(m.lethe_requests_finished_total >= before.lethe_requests_finished_total + 10);
    assert(m.lethe_prune_rounds_total > before.lethe_prune_rounds_total);
    assert(m.lethe_decode_steps_total > before.lethe_decode_steps_total);
    assert(
      m.lethe_decode_steps_ahead_total > before.lethe_decode_steps_ahead_total,
      "no step was recorded ahead",
    );
    assert(m.lethe_tokens_per_second > 0);
    assertEquals(m.lethe_active_sequences, 0);
    assertEquals(m.lethe_kv_bytes_allocated, 0);
    assertEquals(m.lethe_kv_arena_bytes, 0, "the KV arena is released once no sequence holds a region");
  });

  await t.step(
    "aligned rounds: a batch of Lethe streams records most steps ahead of the readback",
    async () => {
      // Prompts of different lengths fill their caches at different steps, so rounds on each sequence's own
      // schedule fall on different steps and (nearly) every step waits for one.
      const run = async (alignRounds: boolean) => {
        const s = startServer(engine, { kvMemory: 1 << 24, maxBatch: 8, alignRounds });
        const outs = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
          const res = await post(`${s.url}/v1/completions`, {
            prompt: [1, 400, 300, 200, 17, 33, 250].slice(0, 2 + i),
            max_tokens: 120,
            temperature: 0,
            ignore_eos: true,
            kv_policy: "lethe",
            kv_budget: 16,
          });
          assertEquals(res.status, 200);
          return ((await res.json()).choices[0] as Choice).token_ids!;
        }));
        const m = await metrics(s.url);
        await s.shutdown();
        outs.forEach((ids) => assertEquals(ids.length, 120));
        return { ahead: m.lethe_decode_steps_ahead_total / m.lethe_decode_steps_total, m };
      };
      const own = await run(false);
      const aligned = await run(true);
      console.log(
        `steps ahead: ${(own.ahead * 100).toFixed(0)}% on own schedules, ${
          (aligned.ahead * 100).toFixed(0)
        }% aligned`,
      );
      assert(aligned.m.lethe_batch_size_max >= 4, `batch ≤ ${aligned.m.lethe_batch_size_max}`);
      assert(aligned.ahead > 0.5, `aligned: ${(aligned.ahead * 100).toFixed(0)}% of steps ahead`);
      assert(
        aligned.ahead > own.ahead + 0.2,
        `aligned ${(aligned.ahead * 100).toFixed(0)}% vs own schedules ${
          (own.ahead * 100).toFixed(0)
        }% ahead`,
      );
    },
  );

  await t.step("a disconnected client frees its KV", async () => {
    // A long generation that fits the pool (its cache is capped), EOS ignored so it runs until cancelled.
    const long = {
      prompt,
      max_tokens: 400,
      temperature: 0,
      ignore_eos: true,
      kv_policy: "streaming",
      kv_budget: 16,
    };
    const abort = new AbortController();
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ ...long, stream: true }),
      signal: abort.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    await reader.read();
    let m = await metrics(url);
    assertEquals(m.lethe_active_sequences, 1);
    assert(m.lethe_kv_bytes_allocated > 0);
    assert(
      m.lethe_kv_arena_bytes >= m.lethe_kv_bytes_allocated,
      "the arena holds at least the sequences' regions",
    );
    abort.abort();
    await reader.cancel().catch(() => {});
    const t0 = performance.now();
    do {
      await new Promise((r) => setTimeout(r, 50));
      m = await metrics(url);
    } while (
      (m.lethe_active_sequences > 0 || m.lethe_kv_bytes_allocated > 0) && performance.now() - t0 < 5000
    );
    assertEquals(m.lethe_active_sequences, 0);
    assertEquals(m.lethe_kv_bytes_allocated, 0);
    assert(m.lethe_requests_cancelled_total >= 1);
    // The same for a non-streaming request.
    const abort2 = new AbortController();
    const pending = fetch(`${url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify(long),
      signal: abort2.signal,
    }).catch(() => null);
    const t1 = performance.now();
    do {
      await new Promise((r) => setTimeout(r, 20));
      m = await metrics(url);
    } while (m.lethe_active_sequences === 0 && performance.now() - t1 < 5000);
    assertEquals(m.lethe_active_sequences, 1);
    abort2.abort();
    await pending;
    const t2 = performance.now();
    do {
      await new Promise((r) => setTimeout(r, 50));
      m = await metrics(url);
    } while (
      (m.lethe_active_sequences > 0 || m.lethe_kv_bytes_allocated > 0) && performance.now() - t2 < 5000
    );
    assertEquals(m.lethe_active_sequences, 0);
    assertEquals(m.lethe_kv_bytes_allocated, 0);
    assert(m.lethe_requests_cancelled_total >= 2);
    assert(m.lethe_generated_tokens_total < before.lethe_generated_tokens_total + 1000, "it kept generating");
  });

  await t.step("bad input → 400 with an OpenAI error body; the server keeps serving", async () => {
    const bad: [string, string, unknown, boolean?][] = [
      ["malformed JSON", "/v1/completions", "{bad", true],
      ["body not an object", "/v1/completions", "[1, 2]", true],
      ["missing prompt", "/v1/completions", { max_tokens: 4 }],
      ["max_tokens of the wrong type", "/v1/completions", { prompt, max_tokens: "ten" }],
      ["negative max_tokens", "/v1/completions", { prompt, max_tokens: -5 }],
      ["zero max_tokens", "/v1/completions", { prompt, max_tokens: 0 }],
      ["absurd max_tokens", "/v1/completions", { prompt, max_tokens: 1e9 }],
      ["fractional max_tokens", "/v1/completions", { prompt, max_tokens: 2.5 }],
      ["prompt plus max_tokens past the context", "/v1/completions", {
        prompt: Array(500).fill(5),
        max_tokens: 100,
      }],
      ["prompt longer than the context", "/v1/completions", { prompt: Array(600).fill(5) }],
      ["token id outside the vocabulary", "/v1/completions", { prompt: [1, 512] }],
      ["prompt of the wrong type", "/v1/completions", { prompt: { a: 1 } }],
      ["text prompt without a tokenizer", "/v1/completions", { prompt: "Once upon a time" }],
      ["tools (not implemented)", "/v1/completions", { prompt, tools: [{ type: "function" }] }],
      ["response_format json (not implemented)", "/v1/completions", {
        prompt,
        response_format: { type: "json_object" },
      }],
      ["echo (not implemented)", "/v1/completions", { prompt, echo: true }],
      ["best_of (not implemented)", "/v1/completions", { prompt, best_of: 2 }],
      ["logprobs above 20", "/v1/completions", { prompt, logprobs: 21 }],
      ["presence_penalty out of range", "/v1/completions", { prompt, presence_penalty: 2.5 }],
      ["temperature of the wrong type", "/v1/completions", { prompt, temperature: "hot" }],
      ["temperature out of range", "/v1/completions", { prompt, temperature: -1 }],
      ["top_p out of range", "/v1/completions", { prompt, top_p: 1.5 }],
      ["seed of the wrong type", "/v1/completions", { prompt, seed: "x" }],
      ["stop of the wrong type", "/v1/completions", { prompt, stop: 5 }],
      ["stream of the wrong type", "/v1/completions", { prompt, stream: "yes" }],
      ["unknown kv_policy", "/v1/completions", { prompt, kv_policy: "bogus" }],
      ["negative kv_budget", "/v1/completions", { prompt, kv_policy: "lethe", kv_budget: -1 }],
      ["n above 16", "/v1/completions", { prompt, n: 17 }],
      ["n choices whose caches together pass the KV pool", "/v1/completions", {
        prompt,
        max_tokens: 200,
        kv_policy: "full",
        n: 16,
      }],
      ["a full cache larger than the KV pool", "/v1/completions", {
        prompt,
        max_tokens: 400,
        kv_policy: "full",
      }],
      ["chat without a tokenizer", "/v1/chat/completions", { messages: [{ role: "user", content: "hi" }] }],
      ["messages of the wrong type", "/v1/chat/completions", { messages: "hi" }],
    ];
    for (const [name, path, body, raw] of bad) {
      const res = await post(`${url}${path}`, body, raw);
      const json = await res.json();
      assertEquals(res.status, 400, `${name}: ${JSON.stringify(json)}`);
      const e = json.error;
      assert(e && typeof e.message === "string" && e.message.length > 0, `${name}: no message`);
      assertEquals(e.type, "invalid_request_error", name);
      assert("param" in e && "code" in e, `${name}: no param/code`);
      // A field the server does not implement is named, never silently ignored.
      if (name.includes("not implemented")) assertEquals(e.code, "unsupported_parameter", name);
    }
    // An unknown model is a 404, as OpenAI and vLLM answer it.
    const unknown = await post(`${url}/v1/completions`, { model: "gpt-5", prompt });
    const uj = await unknown.json();
    assertEquals([unknown.status, uj.error.code, uj.error.param], [404, "model_not_found", "model"]);
    // Neutral values of those fields pass.
    const neutral = await post(`${url}/v1/completions`, {
      prompt,
      max_tokens: 2,
      temperature: 0,
      tools: [],
      response_format: { type: "text" },
      logprobs: false,
      presence_penalty: 0,
      frequency_penalty: 0,
    });
    assertEquals(neutral.status, 200);
    const ok = await post(`${url}/v1/completions`, { prompt, max_tokens: 3, temperature: 0 });
    assertEquals(ok.status, 200);
    assertEquals((await ok.json()).choices[0].token_ids.length, 3);
  });

  await server.shutdown();

  await t.step("a pool that runs short mid-generation preempts the youngest; nothing crashes", async () => {
    // h2o with a budget above the length never evicts, so caches grow by 1.5× past their projected size:
    // two sequences fit at admission, not at the end.
    const c = { prompt, max_tokens: 100, temperature: 0, kv_policy: "h2o", kv_budget: 300 };
    const solo = await ref({ maxTokens: 100, kv: { policy: "h2o", budget: 300 } });
    server = startServer(engine, { kvMemory: 2 * 112 * tokenBytes + 1000, maxBatch: 4 });
    const out = await Promise.all([0, 1].map(async () => {
      const body = await (await post(`${server.url}/v1/completions`, c)).json();
      return body.choices[0] as Choice;
    }));
    const m = await metrics(server.url);
    assert(m.lethe_preemptions_total >= 1, "expected a preemption");
    assert(m.lethe_kv_bytes_peak <= 2 * 112 * tokenBytes + 1000);
    assertEquals(out[0].token_ids, solo, "the older sequence is never disturbed");
    for (const o of out) {
      assertEquals(o.token_ids!.length, 100);
      assertEquals(o.finish_reason, "length");
    }
    await server.shutdown();
  });
  engine.destroy();
});

Deno.test(
  "scheduler: requests submitted while its loop is between admission and decode are served",
  opts,
  async () => {
    // Two moments at which a request once got "needs more KV memory than the server's pool" although it
    // fitted: submitted right after the scheduler starts (its loop is awaiting an empty admission pass), and
    // submitted from the only running job's final event (that job's last step is recorded ahead of its ids'
    // readback).
    const engine = await Engine.load(STORIES_DIR, { progress: false });
    const scheduler = new Scheduler(engine, { kvMemory: 1 << 24, maxBatch: 4 });
    const req = (maxTokens: number, onEvent: (e: JobEvent) => void) => ({
      promptIds: [1, 400, 300, 200],
      maxTokens,
      sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
      kv: {},
      stop: [],
      onEvent,
    });
    const second = new Promise<JobEvent>((resolve) => {
      scheduler.submit(req(5, (e) => {
        if (e.type === "done") scheduler.submit(req(3, (e2) => e2.type !== "token" && resolve(e2)));
      }));
    });
    const end = await second;
    assertEquals(end.type, "done", JSON.stringify(end));
    assert(scheduler.metrics().decodeStepsAheadTotal > 0, "the first job's steps were recorded ahead");
    await scheduler.close();
    engine.destroy();
  },
);

Deno.test(
  "server with a tokenizer: text, stop strings, chat reasoning_content, the openai client",
  opts,
  async (t) => {
    const model = await tinyChatModel("lethe-server-", 3);
    const engine = await Engine.load(model);
    const tok = engine.tokenizer!;
    const text = "The capital of France is";
    const refText = await engine.generate(text, { maxTokens: 24, sampling: { temperature: 0.7, seed: 3 } });
    const stopAt = refText.text.slice(20, 23);
    const refStop = await engine.generate(text, {
      maxTokens: 24,
      sampling: { temperature: 0.7, seed: 3 },
      stop: [stopAt],
    });
    const messages = [{ role: "user", content: "What is 2 + 2?" }];
    const chatPrompt = tok.applyChatTemplate(messages, "deepseek-r1");
    const chatIds = tok.encode(chatPrompt, { addSpecialTokens: false });
    const refChat = await engine.generate(chatIds, {
      maxTokens: 20,
      sampling: { temperature: 0.9, seed: 5 },
    });
    const thought = splitThought(refChat.text, true);

    const server = startServer(engine, { chatTemplate: "deepseek-r1", modelId: "tiny" });
    const url = server.url;

    await t.step("completion text equals Engine.generate; stop strings", async () => {
      const body = await (await post(`${url}/v1/completions`, {
        model: "tiny",
        prompt: text,
        max_tokens: 24,
        temperature: 0.7,
        seed: 3,
      })).json();
      assertEquals(body.choices[0].text, refText.text);
      const stopped = await (await post(`${url}/v1/completions`, {
        prompt: text,
        max_tokens: 24,
        temperature: 0.7,
        seed: 3,
        stop: [stopAt],
      })).json();
      assertEquals(stopped.choices[0].text, refStop.text);
      assertEquals(stopped.choices[0].finish_reason, refStop.finishReason === "length" ? "length" : "stop");
    });

    await t.step("chat: reasoning_content and content, streaming and not", async () => {
      const req = { model: "tiny", messages, max_tokens: 20, temperature: 0.9, seed: 5 };
      const body = await (await post(`${url}/v1/chat/completions`, req)).json();
      assertEquals(body.object, "chat.completion");
      const msg = body.choices[0].message;
      assertEquals(msg.role, "assistant");
      assertEquals(msg.reasoning_content, thought.reasoning);
      assertEquals(msg.content, thought.content);
      assertEquals(body.usage.prompt_tokens, chatIds.length);
      const { events, done } = await sse(await post(`${url}/v1/chat/completions`, { ...req, stream: true }));
      assert(done);
      let reasoning = "";
      let content = "";
      for (const e of events) {
        const d = (e.choices as { delta: Json }[])[0]?.delta ?? {};
        reasoning += (d.reasoning_content as string | undefined) ?? "";
        content += (d.content as string | undefined) ?? "";
      }
      assertEquals([reasoning, content], [thought.reasoning, thought.content]);
    });

    await t.step("the openai npm client", async () => {
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0 });
      const models = await client.models.list();
      assertEquals(models.data.map((m) => m.id), ["tiny"]);
      const c = await client.completions.create({
        model: "tiny",
        prompt: text,
        max_tokens: 24,
        temperature: 0.7,
        seed: 3,
      });
      assertEquals(c.choices[0].text, refText.text);
      assertEquals(c.usage?.completion_tokens, refText.ids.length);
      const stream = await client.chat.completions.create({
        model: "tiny",
        messages: messages as OpenAI.ChatCompletionMessageParam[],
        max_tokens: 20,
        temperature: 0.9,
        seed: 5,
        stream: true,
        stream_options: { include_usage: true },
      });
      let reasoning = "";
      let content = "";
      let usage: OpenAI.CompletionUsage | null | undefined = null;
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
        const d = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string } | undefined;
        reasoning += d?.reasoning_content ?? "";
        content += d?.content ?? "";
      }
      assertEquals([reasoning, content], [thought.reasoning, thought.content]);
      assertEquals(usage?.completion_tokens, refChat.ids.length);
      assertEquals(usage?.prompt_tokens, chatIds.length);
      let status = 0;
      try {
        await client.completions.create({ model: "nope", prompt: "x" });
      } catch (e) {
        status = (e as { status: number }).status;
      }
      // An unknown model is a 404 (OpenAI's and vLLM's answer), which the client raises as NotFoundError.
      assertEquals(status, 404);
    });

    await server.shutdown();
    engine.destroy();
    await Deno.remove(dirname(model), { recursive: true });
  },
);
