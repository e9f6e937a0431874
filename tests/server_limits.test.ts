/**
 * The server under abuse, one hole at a time, over real HTTP on 127.0.0.1: the body limit (413 from
 * Content-Length up front and while counting a chunked body), head/body/idle timeouts (24 slowloris connections
 * closed within the head timeout while a normal request is served), the per-request wall-clock limit (a running
 * generation ends with "length", a queued one with `request_timeout`), the bounded queue (429 + Retry-After),
 * API-key auth (401 + WWW-Authenticate; /health open), 405 + Allow, 400 for malformed chunked bodies, startup
 * validation of every flag (library and `deno task serve`, exit code 2 naming the flag), X-Request-Id on every
 * response and the access log, the graceful drain (library and SIGTERM), and huge text prompts that neither
 * stall other streams nor take long to refuse.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { fileURLToPath } from "node:url";
import { Engine } from "../src/engine/engine.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampler.ts";
import { type JobEvent, Scheduler } from "../src/server/scheduler.ts";
import { type RunningServer, type ServerOptions, startServer } from "../src/server/server.ts";
import { dirname } from "node:path";
import { STORIES_DIR, tinyChatModel } from "./support/models.ts";
import { type ParsedHttpResponse, parseHttpResponse } from "./support/raw_http.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const enc = new TextEncoder();
const dec = new TextDecoder();
const SERVE = fileURLToPath(new URL("../src/server/main.ts", import.meta.url));
const PROMPT = [1, 400, 300, 200];

type Json = Record<string, unknown>;

/** A response read off a raw connection. */
interface RawResponse extends ParsedHttpResponse {
  /** Whether the server closed the connection (EOF) within the wait. */
  closed: boolean;
  /** Milliseconds from the first write to EOF (or to the end of the wait). */
  ms: number;
  /** `performance.now()` at EOF (or at the end of the wait). */
  at: number;
}

/**
 * Sends `parts` on a fresh connection (pausing `gapMs` between them; then closing its sending side when
 * `closeWrite`) and reads until EOF or `waitMs`.
 */
async function raw(
  port: number,
  parts: (string | Uint8Array)[],
  { waitMs = 3000, gapMs = 0, closeWrite = false } = {},
): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const t0 = performance.now();
  let text = "";
  let closed = false;
  const reading = (async () => {
    const buf = new Uint8Array(65536);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        n = null;
      }
      if (n === null) {
        closed = true;
        return;
      }
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
  })();
  (async () => {
    for (const p of parts) {
      if (closed) return;
      if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
      try {
        await conn.write(typeof p === "string" ? enc.encode(p) : p);
      } catch {
        return;
      }
    }
    if (closeWrite) await conn.closeWrite().catch(() => {});
  })();
  let t: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([reading, new Promise((r) => (t = setTimeout(r, waitMs)))]);
  clearTimeout(t);
  const at = performance.now();
  try {
    conn.close();
  } catch { /* closed */ }
  return { ...parseHttpResponse(text), closed, ms: at - t0, at };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** Asserts an OpenAI error body `{error: {message, type, param, code}}` and returns it. */
function assertOpenAiError(json: Json, what: string): { message: string; type: string; code: unknown } {
  const e = json?.error as { message: string; type: string; param: unknown; code: unknown } | undefined;
  assert(
    e && typeof e.message === "string" && e.message.length > 0,
    `${what}: no error.message in ${JSON.stringify(json)}`,
  );
  assert(typeof e.type === "string" && "param" in e && "code" in e, `${what}: not the OpenAI error shape`);
  return e;
}

async function metrics(url: string, headers: Record<string, string> = {}): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`, { headers })).text();
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = /^(\w+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** Polls /metrics until KV is freed and nothing runs (or 5 s pass). */
async function idle(url: string, headers: Record<string, string> = {}): Promise<Record<string, number>> {
  const t0 = performance.now();
  let m = await metrics(url, headers);
  while (
    (m.lethe_active_sequences > 0 || m.lethe_queued_sequences > 0 || m.lethe_kv_bytes_allocated > 0) &&
    performance.now() - t0 < 5000
  ) {
    await new Promise((r) => setTimeout(r, 50));
    m = await metrics(url, headers);
  }
  return m;
}

/** Opens a long token-id stream and resolves once its first event arrived; `rest()` reads the others. */
async function openStream(url: string, body: Json, headers: Record<string, string> = {}) {
  const abort = new AbortController();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers,
    body: JSON.stringify({ prompt: PROMPT, temperature: 0, ignore_eos: true, stream: true, ...body }),
    signal: abort.signal,
  });
  assertEquals(res.status, 200);
  const reader = res.body!.getReader();
  let buffered = dec.decode((await reader.read()).value);
  const times: number[] = [performance.now()];
  return {
    res,
    abort: () => {
      abort.abort();
      reader.cancel().catch(() => {});
    },
    /** The rest of the stream: its events, whether it ended with [DONE], the largest gap between reads. */
    async rest(): Promise<{ events: Json[]; done: boolean; maxGapMs: number }> {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        times.push(performance.now());
        buffered += dec.decode(value);
      }
      const events: Json[] = [];
      let done = false;
      for (const block of buffered.split("\n\n")) {
        const line = block.trim();
        if (!line) continue;
        if (line === "data: [DONE]") done = true;
        else events.push(JSON.parse(line.slice(6)));
      }
      let maxGapMs = 0;
      for (let i = 1; i < times.length; i++) maxGapMs = Math.max(maxGapMs, times[i] - times[i - 1]);
      return { events, done, maxGapMs };
    },
  };
}

type Choice = { token_ids?: number[]; finish_reason: string | null };
const tokenIds = (events: Json[]) => events.flatMap((e) => (e.choices as Choice[])[0]?.token_ids ?? []);
const finishReason = (events: Json[]) => (events.at(-1)?.choices as Choice[] | undefined)?.[0]?.finish_reason;

/** Runs `f` on a stories260K server started with `o`, then shuts it down. */
async function withServer(engine: Engine, o: ServerOptions, f: (s: RunningServer) => Promise<void>) {
  const s = startServer(engine, { kvMemory: 1 << 24, maxBatch: 8, ...o });
  try {
    await f(s);
  } finally {
    await s.shutdown();
  }
}

Deno.test("server limits on stories260K", opts, async (t) => {
  const engine = await Engine.load(STORIES_DIR, { progress: false });

  await t.step(
    "1. body limit: 413 from Content-Length at once, and while counting a chunked body",
    async () => {
      const max = 64 * 1024;
      await withServer(engine, { maxBodyBytes: max }, async (s) => {
        // Over the limit by Content-Length: 413 with the OpenAI body, before the body is read.
        const big = JSON.stringify({ prompt: "x".repeat(4 * max) });
        const res = await post(`${s.url}/v1/completions`, big);
        assertEquals(res.status, 413);
        assertEquals(assertOpenAiError(await res.json(), "413").code, "request_too_large");
        assert(res.headers.get("x-request-id"));
        // Content-Length announces 50 MB and sends 1 KB: the answer comes without waiting for the rest.
        const head = `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${50 << 20}\r\n\r\n`;
        let r = await raw(s.port, [head, "x".repeat(1024)], { waitMs: 3000 });
        assertEquals(r.status, 413, `Content-Length 50 MB: ${r.status}`);
        assert(r.ms < 2500, `413 took ${r.ms} ms`);
        // Chunked: one chunk announced past the limit is refused before its data is read.
        const chunked = `POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`;
        r = await raw(s.port, [chunked, `${(max + 1).toString(16)}\r\n`, "x".repeat(100)], { waitMs: 3000 });
        assertEquals(r.status, 413, "one chunk past the limit");
        assertOpenAiError(JSON.parse(r.body), "chunked 413");
        // Chunked: many small chunks, counted as they arrive; 413 once their sum passes the limit, while the
        // client is still sending (it would send 1 MB).
        const piece = `400\r\n${"y".repeat(1024)}\r\n`;
        r = await raw(s.port, [chunked, ...Array(1024).fill(piece)], { waitMs: 3000 });
        assertEquals(r.status, 413, "chunks summing past the limit");
        assert(r.closed, "the connection closes after a 413");
        // Just under the limit: read and answered (a 400 for the prompt's length, not a 413).
        const under = JSON.stringify({ prompt: Array(20000).fill(5) });
        assert(under.length < max);
        const ok = await post(`${s.url}/v1/completions`, under);
        assertEquals(ok.status, 400);
        assertEquals(assertOpenAiError(await ok.json(), "under").code, "context_length_exceeded");
        // A chunked body under the limit is served.
        const body = JSON.stringify({ prompt: PROMPT, max_tokens: 3, temperature: 0 });
        r = await raw(s.port, [
          chunked.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
          `${(10).toString(16)}\r\n${body.slice(0, 10)}\r\n`,
          `${(body.length - 10).toString(16)}\r\n${body.slice(10)}\r\n0\r\n\r\n`,
        ]);
        assertEquals(r.status, 200, r.body);
        assertEquals((JSON.parse(r.body).choices[0] as Choice).token_ids!.length, 3);
      });
    },
  );

  await t.step(
    "2. head timeout: 24 slowloris connections are closed while a normal request is served",
    async () => {
      await withServer(engine, { headerTimeoutMs: 600 }, async (s) => {
        const slow = Array.from({ length: 24 }, (_, i) =>
          // A partial header line, one byte every 100 ms, for 5 s if the server lets it.
          raw(s.port, [`GET /health HTTP/1.1\r\nHost: x\r\nX-Slow-${i}: `, ...Array(50).fill("a")], {
            gapMs: 100,
            waitMs: 5000,
          }));
        await new Promise((r) => setTimeout(r, 200));
        const ok = await fetch(`${s.url}/health`);
        assertEquals(ok.status, 200);
        await ok.body?.cancel();
        const okAt = performance.now();
        const results = await Promise.all(slow);
        const firstClose = Math.min(...results.map((r) => r.at));
        assert(okAt < firstClose, "the normal request was answered only once the slow connections had gone");
        for (const [i, r] of results.entries()) {
          assert(r.closed, `slow connection ${i} still open after ${r.ms.toFixed(0)} ms`);
          assert(r.ms < 600 + 900, `slow connection ${i} closed after ${r.ms.toFixed(0)} ms`);
          assertEquals(r.status, 408, `slow connection ${i}`);
        }
        // A connection that sends nothing is closed too.
        const silent = await raw(s.port, [], { waitMs: 3000 });
        assert(
          silent.closed && silent.ms < 1500,
          `silent connection: closed ${silent.closed} after ${silent.ms}`,
        );
      });
    },
  );

  await t.step("2. body and idle timeouts", async () => {
    await withServer(engine, { bodyTimeoutMs: 400, idleTimeoutMs: 500 }, async (s) => {
      // A body that stops arriving: 408 within the body timeout.
      const r = await raw(s.port, [
        `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"prompt"`,
      ], { waitMs: 3000 });
      assertEquals(r.status, 408, `a stalled body: ${r.status}`);
      assertEquals(assertOpenAiError(JSON.parse(r.body), "408").code, "body_timeout");
      assert(r.closed && r.ms < 1500, `closed ${r.closed} after ${r.ms}`);
      // A kept-alive connection idle past the idle timeout is closed.
      const idleConn = await raw(s.port, [`GET /health HTTP/1.1\r\nHost: x\r\n\r\n`], { waitMs: 3000 });
      assertEquals(idleConn.status, 200);
      assert(
        idleConn.closed && idleConn.ms >= 450 && idleConn.ms < 1500,
        `idle: closed after ${idleConn.ms}`,
      );
    });
  });

  await t.step('2. request timeout: a running generation ends with "length" and frees its KV', async () => {
    await withServer(engine, { requestTimeoutMs: 150 }, async (s) => {
      const t0 = performance.now();
      const res = await post(`${s.url}/v1/completions`, {
        prompt: PROMPT,
        max_tokens: 500,
        temperature: 0,
        ignore_eos: true,
        kv_policy: "streaming",
        kv_budget: 16,
      });
      assertEquals(res.status, 200);
      const body = await res.json();
      const ms = performance.now() - t0;
      assertEquals(body.choices[0].finish_reason, "length");
      assert(body.usage.completion_tokens < 500, `ran to ${body.usage.completion_tokens} tokens in ${ms} ms`);
      assert(ms < 1200, `took ${ms} ms`);
      const m = await idle(s.url);
      assertEquals(m.lethe_kv_bytes_allocated, 0);
      assertEquals(m.lethe_active_sequences, 0);
    });
  });

  await t.step(
    "2. request timeout: a job still queued at its deadline fails with request_timeout",
    async () => {
      const scheduler = new Scheduler(engine, { kvMemory: 1 << 24, maxBatch: 1 });
      const events: JobEvent[] = [];
      const first = scheduler.submit({
        promptIds: PROMPT,
        maxTokens: 500,
        sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
        kv: { policy: "streaming", budget: 16 },
        stop: [],
        eos: [],
        onEvent: () => {},
      });
      const queued = new Promise<JobEvent>((resolve) => {
        scheduler.submit(
          {
            promptIds: PROMPT,
            maxTokens: 5,
            sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
            kv: {},
            stop: [],
            deadline: performance.now() + 150,
            onEvent: (e) => {
              events.push(e);
              if (e.type !== "token") resolve(e);
            },
          } as Parameters<Scheduler["submit"]>[0],
        );
      });
      const end = await queued;
      first.cancel();
      await scheduler.close();
      assertEquals(end.type, "error", JSON.stringify(events));
      assertEquals((end as { code?: string }).code, "request_timeout");
      assertEquals(events.length, 1, "no token before the timeout");
    },
  );

  await t.step("3. bounded queue: 429 with Retry-After once max-queue requests wait", async () => {
    await withServer(engine, { maxBatch: 1, maxQueue: 2 }, async (s) => {
      const long = { max_tokens: 480, kv_policy: "streaming", kv_budget: 16 };
      const running = await openStream(s.url, long);
      const queued = [openStream(s.url, long), openStream(s.url, long)];
      const t0 = performance.now();
      while ((await metrics(s.url)).lethe_queued_sequences < 2 && performance.now() - t0 < 5000) {
        await new Promise((r) => setTimeout(r, 20));
      }
      const res = await post(`${s.url}/v1/completions`, { prompt: PROMPT, max_tokens: 2 });
      assertEquals(res.status, 429);
      const retry = Number(res.headers.get("retry-after"));
      assert(Number.isInteger(retry) && retry >= 1, `Retry-After ${res.headers.get("retry-after")}`);
      assertEquals(assertOpenAiError(await res.json(), "429").code, "queue_full");
      // Streams too.
      const sres = await post(`${s.url}/v1/completions`, { prompt: PROMPT, max_tokens: 2, stream: true });
      assertEquals(sres.status, 429);
      await sres.body?.cancel();
      running.abort();
      for (const q of queued) (await q).abort();
      const m = await idle(s.url);
      assertEquals(m.lethe_kv_bytes_allocated, 0);
      assert(m.lethe_queue_length_max <= 2, `queue reached ${m.lethe_queue_length_max}`);
      // Room again: served.
      const ok = await post(`${s.url}/v1/completions`, { prompt: PROMPT, max_tokens: 2 });
      assertEquals(ok.status, 200);
      await ok.body?.cancel();
    });
  });

  await t.step(
    "4. API key: 401 with WWW-Authenticate on /v1/* and /metrics; /health stays open",
    async () => {
      const key = "sk-lethe-test-0123456789";
      await withServer(engine, { apiKey: key }, async (s) => {
        const cases: [string, string, Record<string, string>, number][] = [
          ["GET", "/v1/models", {}, 401],
          ["GET", "/v1/models", { authorization: "Bearer wrong" }, 401],
          ["GET", "/v1/models", { authorization: `Bearer ${key}x` }, 401],
          ["GET", "/v1/models", { authorization: `Bearer ${key.slice(0, -1)}` }, 401],
          ["GET", "/v1/models", { authorization: key }, 401],
          ["GET", "/v1/models", { authorization: `Basic ${btoa(`u:${key}`)}` }, 401],
          ["GET", "/metrics", {}, 401],
          ["POST", "/v1/completions", {}, 401],
          ["GET", "/v1/nope", {}, 401],
          ["GET", "/v1/models", { authorization: `Bearer ${key}` }, 200],
          ["GET", "/v1/models", { authorization: `bearer ${key}` }, 200],
          ["GET", "/metrics", { authorization: `Bearer ${key}` }, 200],
          ["GET", "/health", {}, 200],
        ];
        for (const [method, path, headers, status] of cases) {
          const res = await fetch(`${s.url}${path}`, {
            method,
            headers,
            body: method === "POST" ? JSON.stringify({ prompt: PROMPT, max_tokens: 2 }) : undefined,
          });
          const text = await res.text();
          assertEquals(res.status, status, `${method} ${path} ${JSON.stringify(headers)}: ${text}`);
          if (status === 401) {
            assert(
              /^Bearer\b/.test(res.headers.get("www-authenticate") ?? ""),
              `${path}: no WWW-Authenticate`,
            );
            assertEquals(assertOpenAiError(JSON.parse(text), "401").code, "invalid_api_key");
          }
        }
        const res = await post(`${s.url}/v1/completions`, { prompt: PROMPT, max_tokens: 2, temperature: 0 }, {
          authorization: `Bearer ${key}`,
        });
        assertEquals(res.status, 200);
        assertEquals((await res.json()).choices[0].token_ids.length, 2);
      });
    },
  );

  await t.step("5. 405 with Allow on wrong methods; the page routes too", async () => {
    const web = await Deno.makeTempDir({ prefix: "lethe-limits-web-" });
    await Deno.writeTextFile(`${web}/index.html`, "<!doctype html><title>t</title>");
    await withServer(engine, { webDir: web }, async (s) => {
      const cases: [string, string[], string][] = [
        ["/health", ["POST", "PUT", "DELETE", "PATCH"], "GET, HEAD"],
        ["/metrics", ["POST", "DELETE"], "GET, HEAD"],
        ["/v1/models", ["POST", "PUT", "DELETE"], "GET, HEAD"],
        ["/v1/completions", ["GET", "PUT", "DELETE", "PATCH"], "POST"],
        ["/v1/chat/completions", ["GET", "PUT", "DELETE"], "POST"],
        ["/", ["POST", "PUT", "DELETE"], "GET, HEAD, OPTIONS"],
        ["/index.html", ["POST"], "GET, HEAD, OPTIONS"],
      ];
      for (const [path, methods, allow] of cases) {
        for (const method of methods) {
          const res = await fetch(`${s.url}${path}`, { method, body: method === "GET" ? undefined : "{}" });
          const text = await res.text();
          assertEquals(res.status, 405, `${method} ${path}: ${res.status} ${text}`);
          assertEquals(res.headers.get("allow"), allow, `${method} ${path}`);
          assertEquals(assertOpenAiError(JSON.parse(text), `${method} ${path}`).code, "method_not_allowed");
        }
      }
      // HEAD where GET is allowed.
      const head = await fetch(`${s.url}/health`, { method: "HEAD" });
      assertEquals(head.status, 200);
      assertEquals(await head.text(), "");
      // A method Request cannot carry (CONNECT, TRACE) over a raw connection.
      const r = await raw(s.port, [`TRACE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
      assertEquals(r.status, 405);
      assertEquals(r.headers.get("allow"), "GET, HEAD");
    });
    await Deno.remove(web, { recursive: true });
  });

  await t.step(
    "6. malformed chunked bodies and unreadable requests get 400, not a dropped connection",
    async () => {
      await withServer(engine, {}, async (s) => {
        const head = `POST /v1/completions HTTP/1.1\r\nHost: x\r\n`;
        const body = JSON.stringify({ prompt: PROMPT, max_tokens: 2 });
        const cases: [string, string[], number][] = [
          ["size not hex", [head, "Transfer-Encoding: chunked\r\n\r\n", "zz\r\nabc\r\n0\r\n\r\n"], 400],
          ["data longer than its size", [
            head,
            "Transfer-Encoding: chunked\r\n\r\n",
            `2\r\n${body}\r\n0\r\n\r\n`,
          ], 400],
          ["size line never ends", [head, "Transfer-Encoding: chunked\r\n\r\n", "1".repeat(8000)], 400],
          ["negative size", [head, "Transfer-Encoding: chunked\r\n\r\n", `-5\r\nabc\r\n0\r\n\r\n`], 400],
          ["body cut off", [
            head,
            "Transfer-Encoding: chunked\r\n\r\n",
            `${body.length.toString(16)}\r\n{"pr`,
          ], 400],
          ["Content-Length and chunked", [
            head,
            `Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
          ], 400],
          ["Content-Length not a number", [head, `Content-Length: abc\r\n\r\n`], 400],
          ["two Content-Lengths", [head, `Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello`], 400],
          ["a header without a colon", [head, `Oops\r\nContent-Length: 2\r\n\r\n{}`], 400],
          ["a malformed request line", ["POST  /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n"], 400],
          ["no Host", ["GET /health HTTP/1.1\r\n\r\n"], 400],
          [
            "a head past 16 KiB",
            [`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20000)}\r\n\r\n`],
            431,
          ],
        ];
        for (const [name, parts, status] of cases) {
          // The client stops sending after its parts (a cut-off body ends early, not late).
          const r = await raw(s.port, parts, { waitMs: 3000, closeWrite: true });
          assertEquals(r.status, status, `${name}: got ${r.status} (closed ${r.closed}) ${r.body}`);
          assertOpenAiError(JSON.parse(r.body), name);
          assert(r.headers.get("x-request-id"), `${name}: no X-Request-Id`);
        }
        // Still serving.
        const ok = await post(`${s.url}/v1/completions`, body);
        assertEquals(ok.status, 200);
        await ok.body?.cancel();
      });
    },
  );

  await t.step(
    "8. X-Request-Id on every response (errors and SSE too) and one access-log line each",
    async () => {
      const log: string[] = [];
      await withServer(engine, { accessLog: (l) => log.push(l) }, async (s) => {
        const seen: [string, Response][] = [];
        const get = async (name: string, p: Promise<Response>) => {
          const res = await p;
          seen.push([name, res]);
          await res.text();
          return res;
        };
        await get("health", fetch(`${s.url}/health`));
        await get("404", fetch(`${s.url}/nope`));
        await get("405", fetch(`${s.url}/health`, { method: "DELETE" }));
        await get("400", post(`${s.url}/v1/completions`, "{bad"));
        await get("sse", post(`${s.url}/v1/completions`, { prompt: PROMPT, max_tokens: 3, stream: true }));
        await get("json", post(`${s.url}/v1/completions`, { prompt: PROMPT, max_tokens: 3 }));
        const echoed = await get(
          "echo",
          fetch(`${s.url}/v1/models`, { headers: { "x-request-id": "client-id_1.2:3" } }),
        );
        const insane = await get(
          "insane",
          fetch(`${s.url}/v1/models`, { headers: { "x-request-id": "bad id " + "x".repeat(200) } }),
        );
        const ids = seen.map(([name, res]) => {
          const id = res.headers.get("x-request-id");
          assert(id && /^[A-Za-z0-9._:-]{1,128}$/.test(id), `${name}: X-Request-Id ${id}`);
          return id;
        });
        assertEquals(echoed.headers.get("x-request-id"), "client-id_1.2:3");
        assert(insane.headers.get("x-request-id")!.startsWith("req-"));
        assertEquals(new Set(ids).size, ids.length, "ids are unique");
        // Raw protocol errors carry one too.
        const r = await raw(s.port, ["GET /health HTTP/9.9\r\nHost: x\r\n\r\n"]);
        assert(r.headers.get("x-request-id"));
        const t0 = performance.now();
        while (log.length < seen.length + 1 && performance.now() - t0 < 2000) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assertEquals(log.length, seen.length + 1, log.join("\n"));
        for (const [i, [name, res]] of seen.entries()) {
          const line = log.find((l) => l.includes(`id=${ids[i]}`));
          assert(line, `${name}: no log line with id ${ids[i]}\n${log.join("\n")}`);
          assert(line.includes(`status=${res.status}`), `${name}: ${line}`);
          assert(/method=[A-Z]+ path=\/\S* status=\d{3} bytes=\d+/.test(line), `${name}: ${line}`);
          assert(/ ms=\d+(\.\d+)? /.test(line), `${name}: ${line}`);
        }
        const sseLine = log.find((l) => l.includes(`id=${ids[4]}`))!;
        assert(sseLine.includes("completion_tokens=3"), sseLine);
      });
    },
  );

  await t.step("9. drain: running requests finish, new ones get 503, then it stops", async () => {
    const s = startServer(engine, { kvMemory: 1 << 24, maxBatch: 8 });
    const stream = await openStream(s.url, { max_tokens: 300, kv_policy: "streaming", kv_budget: 16 });
    // A non-streaming request also running when the drain starts.
    const plain = post(`${s.url}/v1/completions`, {
      prompt: PROMPT,
      max_tokens: 200,
      temperature: 0,
      ignore_eos: true,
    });
    const t0 = performance.now();
    while ((await metrics(s.url)).lethe_active_sequences < 2 && performance.now() - t0 < 5000) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const drained = s.drain();
    assert(s.draining);
    const late = await post(`${s.url}/v1/completions`, { prompt: PROMPT, max_tokens: 2 });
    assertEquals(late.status, 503);
    assert(Number(late.headers.get("retry-after")) >= 1);
    assert(late.headers.get("x-request-id"));
    assertOpenAiError(await late.json(), "503");
    const health = await fetch(`${s.url}/health`);
    assertEquals(health.status, 503);
    assertEquals((await health.json()).status, "draining");
    const { events, done } = await stream.rest();
    assert(done, "the running stream ended with [DONE]");
    assertEquals(tokenIds(events).length, 300);
    assertEquals(finishReason(events), "length");
    const p = await plain;
    assertEquals(p.status, 200);
    assertEquals((await p.json()).usage.completion_tokens, 200);
    await drained;
    let refused = false;
    try {
      await (await fetch(`${s.url}/health`)).body?.cancel();
    } catch {
      refused = true;
    }
    assert(refused, "still listening after the drain");
  });

  engine.destroy();
});

Deno.test("deno task serve: SIGTERM drains — a running stream finishes, then exit code 0", opts, async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      "--allow-net=127.0.0.1",
      SERVE,
      "--model",
      STORIES_DIR,
      "--port",
      "0",
      "--no-web",
      "--quiet-access-log",
    ],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1" },
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let errText = "";
  const errDone = (async () => {
    for (;;) {
      const { done, value } = await stderr.read();
      if (done) return;
      errText += value;
    }
  })();
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let outText = "";
  let url = "";
  while (!url) {
    const { done, value } = await out.read();
    if (done) throw new Error(`the server exited before listening: ${errText}`);
    outText += value;
    url = /listening (\S+)/.exec(outText)?.[1] ?? "";
  }
  const stream = await openStream(url, { max_tokens: 300, kv_policy: "streaming", kv_budget: 16 });
  child.kill("SIGTERM");
  const { events, done } = await stream.rest();
  const status = await child.status;
  await errDone;
  assert(done, `the stream was cut off: ${errText}`);
  assertEquals(tokenIds(events).length, 300);
  assertEquals(status.code, 0, errText);
  assert(errText.includes("draining"), errText);
});

Deno.test("startup: a server that could serve nothing refuses to start, naming the flag", opts, async (t) => {
  await t.step("library: startServer throws", async () => {
    const engine = await Engine.load(STORIES_DIR, { progress: false });
    const bad: [ServerOptions, RegExp][] = [
      [{ kvMemory: 0 }, /--kv-memory/],
      [{ kvMemory: 1000 }, /--kv-memory is 1000 bytes: the smallest request/],
      [{ kvMemory: -5 }, /--kv-memory/],
      [{ maxBatch: 0 }, /--max-batch/],
      [{ maxQueue: 0 }, /--max-queue/],
      [{ maxBodyBytes: -1 }, /--max-body/],
      [{ headerTimeoutMs: 0 }, /--header-timeout/],
      [{ bodyTimeoutMs: -1 }, /--body-timeout/],
      [{ idleTimeoutMs: NaN }, /--idle-timeout/],
      [{ requestTimeoutMs: Infinity }, /--request-timeout/],
      [{ apiKey: "" }, /--api-key/],
      [{ apiKey: "has space" }, /--api-key/],
      [{ kv: { budget: 100000 } }, /--kv-budget 100000 is more than the model's context/],
      [{ kv: { budget: 5, sink: 4 } }, /--kv-budget must exceed --kv-sink/],
      [
        { kv: { policy: "lethe", budget: 200 }, kvMemory: 100 * 1000 },
        /--kv-budget 200 \(kv lethe\) reserves/,
      ],
    ];
    for (const [o, want] of bad) {
      let msg = "";
      let s: RunningServer | null = null;
      try {
        s = startServer(engine, o);
      } catch (e) {
        msg = (e as Error).message;
      }
      await s?.shutdown();
      assert(want.test(msg), `${JSON.stringify(o)}: ${msg || "started"}`);
    }
    // The smallest pool that holds one minimal request starts.
    const s = startServer(engine, { kvMemory: engine.kvSlots(2) * engine.kvTokenBytes() });
    const res = await post(`${s.url}/v1/completions`, { prompt: [1], max_tokens: 1 });
    assertEquals(res.status, 200);
    await res.body?.cancel();
    await s.shutdown();
    engine.destroy();
  });

  await t.step("deno task serve: exit code 2 and the flag in the message", async () => {
    const cases: [string[], string][] = [
      [["--kv-memory", "0"], "--kv-memory"],
      [["--kv-memory", "1K"], "--kv-memory is 1024 bytes"],
      [["--kv-budget", "100000"], "--kv-budget 100000 is more than the model's context"],
      [["--max-batch", "0"], "--max-batch must be"],
      [["--max-queue=-1"], "--max-queue must be"],
      [["--max-body=-5"], "--max-body"],
      [["--header-timeout", "0"], "--header-timeout must be"],
      [["--request-timeout", "soon"], "--request-timeout must be a duration"],
      [["--port", "70000"], "--port must be"],
    ];
    await Promise.all(cases.map(async ([args, want]) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          "--allow-env",
          "--allow-net=127.0.0.1",
          SERVE,
          "--model",
          STORIES_DIR,
          "--port",
          "0",
          "--no-web",
          ...args,
        ],
        stdout: "piped",
        stderr: "piped",
        env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1" },
      }).spawn();
      // A server that starts anyway is stopped after 20 s.
      const kill = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const r = await child.output();
      clearTimeout(kill);
      const err = dec.decode(r.stderr);
      assertEquals(r.code, 2, `${args.join(" ")}: exit ${r.code}: ${err}`);
      assert(err.includes(want) && !err.includes("Unknown option"), `${args.join(" ")}: ${err}`);
      assert(!err.includes("    at "), "no stack trace");
    }));
  });
});

Deno.test("a huge text prompt neither stalls running streams nor takes long to refuse", opts, async () => {
  const model = await tinyChatModel("lethe-limits-", 3);
  const engine = await Engine.load(model, { progress: false });
  const s = startServer(engine, { modelId: "tiny" });
  try {
    // A stream decoding while the huge prompts arrive.
    const abort = new AbortController();
    const res = await fetch(`${s.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({
        prompt: "Once upon a time",
        max_tokens: 900,
        temperature: 0,
        ignore_eos: true,
        stream: true,
      }),
      signal: abort.signal,
    });
    const reader = res.body!.getReader();
    const times: number[] = [];
    let streaming = true;
    const reading = (async () => {
      while (streaming) {
        const { done } = await reader.read();
        if (done) return;
        times.push(performance.now());
      }
    })();
    while (times.length < 5) await new Promise((r) => setTimeout(r, 10));
    // Just under the default 4 MiB body limit: one repeated letter is the tokenizer's slowest text.
    const t0 = performance.now();
    const prompts = [
      { path: "/v1/completions", body: { prompt: "a".repeat(4_000_000), max_tokens: 4 } },
      {
        path: "/v1/chat/completions",
        body: { messages: [{ role: "user", content: "a".repeat(4_000_000) }], max_tokens: 4 },
      },
    ];
    const from = performance.now();
    for (const p of prompts) {
      const t1 = performance.now();
      const r = await post(`${s.url}${p.path}`, p.body);
      const ms = performance.now() - t1;
      assertEquals(r.status, 400, `${p.path}: ${r.status}`);
      assertEquals(assertOpenAiError(await r.json(), p.path).code, "context_length_exceeded");
      assert(ms < 1500, `${p.path}: refused after ${ms.toFixed(0)} ms`);
    }
    const to = performance.now();
    await new Promise((r) => setTimeout(r, 100));
    streaming = false;
    abort.abort();
    await reader.cancel().catch(() => {});
    await reading.catch(() => {});
    const during = times.filter((x) => x >= from && x <= to + 100);
    let maxGap = 0;
    for (let i = 1; i < times.length; i++) {
      if (times[i] >= from && times[i - 1] <= to + 100) maxGap = Math.max(maxGap, times[i] - times[i - 1]);
    }
    console.log(
      `huge prompts: refused in ${(to - t0).toFixed(0)} ms; ${during.length} stream reads meanwhile, ` +
        `largest gap ${maxGap.toFixed(0)} ms`,
    );
    assert(during.length > 0, "the stream got nothing while the prompts were refused");
    assert(maxGap < 500, `the running stream stalled ${maxGap.toFixed(0)} ms`);
  } finally {
    await s.shutdown();
    engine.destroy();
    await Deno.remove(dirname(model), { recursive: true });
  }
});
