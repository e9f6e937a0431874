/**
 * The server under a seeded mix of hostile requests (LETHE_TEST_SEED replays one): malformed JSON, wrong
 * types, bodies past the limit, wrong methods, bad or missing API keys, slow heads, streams cut off mid-way,
 * bad chunked bodies, garbage request lines, absurd numbers (temperature 1e-40, max_tokens 1e12, kv_budget
 * 1e308, seeds out of range), unknown fields and prototype-pollution keys, path traversal. Every answer must be
 * below 500; every error must be the OpenAI JSON shape with an X-Request-Id; afterwards the server must give a
 * normal request the same output as before the abuse, hold no KV once idle, and have logged no 5xx.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { Engine } from "../src/engine/engine.ts";
import { startServer } from "../src/server/server.ts";
import { DEFAULT_MODEL_DIR } from "../src/util/paths.ts";
import { freshSeed, rng } from "./helpers.ts";
import { parseHttpResponse } from "./support/raw_http.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const enc = new TextEncoder();
const dec = new TextDecoder();
const KEY = "sk-abuse-3f9a1c77e2";
const AUTH = { authorization: `Bearer ${KEY}` };

type Json = Record<string, unknown>;

/** What one hostile request got back. */
interface Outcome {
  name: string;
  /** HTTP status, or 0 when the server closed without answering (allowed only where `silentOk`). */
  status: number;
  headers: Headers;
  body: string;
  silentOk?: boolean;
}

/** Writes `parts` on a fresh connection (`gapMs` apart, then half-closes) and reads until EOF or `waitMs`. */
async function raw(port: number, parts: string[], gapMs = 0, waitMs = 4000) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let text = "";
  let closed = false;
  const reading = (async () => {
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) return void (closed = true);
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
  })();
  (async () => {
    for (const p of parts) {
      if (closed) return;
      if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      if (!(await conn.write(enc.encode(p)).then(() => true, () => false))) return;
    }
    await conn.closeWrite().catch(() => {});
  })();
  let t: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([reading, new Promise((r) => (t = setTimeout(r, waitMs)))]);
  clearTimeout(t);
  try {
    conn.close();
  } catch { /* closed */ }
  return { ...parseHttpResponse(text), closed };
}

Deno.test(
  "server abuse: a seeded mix of hostile requests; no 5xx, OpenAI errors, same output after",
  opts,
  async () => {
    const seed = freshSeed();
    console.log(`seed ${seed}`);
    const r = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
    const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

    const engine = await Engine.load(DEFAULT_MODEL_DIR, { progress: false });
    const log: string[] = [];
    const maxBody = 256 * 1024;
    const server = startServer(engine, {
      apiKey: KEY,
      maxBodyBytes: maxBody,
      headerTimeoutMs: 500,
      bodyTimeoutMs: 1000,
      kvMemory: 64 << 20,
      modelDir: DEFAULT_MODEL_DIR,
      accessLog: (l) => log.push(l),
    });
    const url = server.url;
    const port = server.port;

    const chat = {
      messages: [{ role: "user", content: "walk 6 steps from 28. map: 28>37, 37>41, 41>28." }],
      max_tokens: 40,
      temperature: 0,
    };
    const completion = { prompt: "walk 6 steps from 28.", max_tokens: 30, temperature: 0.7, seed: 42 };
    const normal = async () => {
      const a = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: AUTH,
        body: JSON.stringify(chat),
      });
      const b = await fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: AUTH,
        body: JSON.stringify(completion),
      });
      assertEquals([a.status, b.status], [200, 200]);
      const [ja, jb] = [await a.json(), await b.json()];
      return [ja.choices[0].message, ja.usage, jb.choices[0].text, jb.usage];
    };
    const before = await normal();

    const fetchCase = (name: string, path: string, init: RequestInit, silentOk = false) =>
    async (): Promise<
      Outcome
    > => {
      const res = await fetch(`${url}${path}`, init);
      return { name, status: res.status, headers: res.headers, body: await res.text(), silentOk };
    };
    const rawCase =
      (name: string, parts: string[], gapMs = 0, silentOk = false) => async (): Promise<Outcome> => {
        const x = await raw(port, parts, gapMs);
        return { name, status: x.status, headers: x.headers, body: x.body, silentOk };
      };
    const postJson = (name: string, path: string, body: string, headers: Record<string, string> = AUTH) =>
      fetchCase(name, path, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json" },
        body,
      });
    const base = () => (r() < 0.5 ? ["/v1/chat/completions", { ...chat, max_tokens: 6 }] as const : [
      "/v1/completions",
      { ...completion, max_tokens: 6 },
    ] as const);

    const WRONG = [
      "str",
      1.5,
      -1,
      0,
      true,
      [],
      {},
      [1, "a"],
      { a: { b: [null] } },
      1e308,
      -1e308,
      "x".repeat(1000),
      "",
    ];
    const FIELDS = [
      "model",
      "prompt",
      "messages",
      "max_tokens",
      "temperature",
      "top_p",
      "top_k",
      "seed",
      "stop",
      "stream",
      "stream_options",
      "n",
      "kv_policy",
      "kv_budget",
      "kv_sink",
      "lethe_gamma",
      "return_token_ids",
      "ignore_eos",
    ];
    const ABSURD: [string, unknown][] = [
      ["temperature", 1e-40],
      ["temperature", 5e-324],
      ["temperature", 1e308],
      ["max_tokens", 1e12],
      ["max_tokens", -1e12],
      ["max_completion_tokens", 2 ** 53],
      ["kv_budget", 1e308],
      ["kv_budget", 2 ** 31],
      ["kv_sink", 1e18],
      ["kv_window", 1e308],
      ["lethe_gamma", 1e-300],
      ["lethe_tau", 1e300],
      ["lethe_interval", 2 ** 40],
      ["seed", 2 ** 70],
      ["seed", -(2 ** 70)],
      ["seed", 1e300],
      ["seed", 3.5],
      ["top_p", 1e-300],
      ["top_k", 1e15],
      ["n", 1e9],
    ];
    const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"];
    const ROUTES = [
      "/health",
      "/metrics",
      "/v1/models",
      "/v1/completions",
      "/v1/chat/completions",
      "/v1/nope",
    ];

    const cases: (() => Promise<Outcome>)[] = [];
    const kinds = [
      // Malformed JSON: a valid body cut short, or with bytes flipped.
      () => {
        const [path, body] = base();
        const text = JSON.stringify(body);
        const cut = r() < 0.5
          ? text.slice(0, int(0, text.length - 1))
          : text.replace(/[{":,]/, pick(["", "'", "}", "\u0000"]));
        return postJson("malformed JSON", path, cut);
      },
      // A known field of a wrong type.
      () => {
        const [path, body] = base();
        const field = pick(FIELDS);
        return postJson(`wrong type ${field}`, path, JSON.stringify({ ...body, [field]: pick(WRONG) }));
      },
      // Absurd numbers.
      () => {
        const [path, body] = base();
        const [field, value] = pick(ABSURD);
        return postJson(`absurd ${field}`, path, JSON.stringify({ ...body, [field]: value }));
      },
      // Unknown fields, prototype keys among them: ignored.
      () => {
        const [path, body] = base();
        const extra: Json = {};
        for (let i = int(1, 5); i > 0; i--) extra[`x_${int(0, 1e6)}`] = pick(WRONG);
        const text = JSON.stringify({ ...body, ...extra }).replace(
          /}$/,
          `,"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}`,
        );
        return postJson("unknown fields", path, text);
      },
      // A body past the limit, by Content-Length.
      () => {
        const [path, body] = base();
        return postJson(
          "huge body",
          path,
          JSON.stringify({ ...body, pad: "x".repeat(maxBody + int(1, maxBody)) }),
        );
      },
      // Content-Length past the limit, body never sent.
      () =>
        rawCase("huge Content-Length", [
          `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Length: ${
            int(maxBody + 1, 1e12)
          }\r\n\r\n{`,
        ]),
      // Wrong methods on every route.
      () => {
        const method = pick(METHODS);
        const route = pick(ROUTES);
        return fetchCase(`${method} ${route}`, route, {
          method,
          headers: AUTH,
          body: method === "GET" ? undefined : "{}",
        });
      },
      // Bad auth.
      () => {
        const header = pick([
          {},
          { authorization: "Bearer" },
          { authorization: "Bearer " + KEY.slice(0, -1) },
          { authorization: "Bearer " + KEY + "0" },
          { authorization: "Basic " + btoa(`a:${KEY}`) },
          { authorization: KEY },
          { authorization: "Bearer " + "k".repeat(4000) },
        ]) as Record<string, string>;
        const [method, path] = pick([
          ["GET", "/v1/models"],
          ["GET", "/metrics"],
          ["POST", "/v1/completions"],
          ["GET", "/model/config.json"],
        ]);
        return fetchCase(`bad auth ${path}`, path, {
          method,
          headers: header,
          body: method === "POST" ? JSON.stringify(completion) : undefined,
        });
      },
      // Slow heads: one byte every 150 ms after a partial head (closed at the 500 ms head timeout).
      () =>
        rawCase("slow head", [
          `POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Drip: `,
          ..."abcdefghijklmnopqrst".split(""),
        ], 150),
      // A connection that never sends anything: closed without a word.
      () => rawCase("silent connection", [], 0, true),
      // Bad chunked bodies.
      () => {
        const bad = pick([
          "zz\r\nabc\r\n0\r\n\r\n",
          "2\r\nabcdef\r\n0\r\n\r\n",
          "-1\r\n\r\n",
          "1".repeat(6000),
          "ffffffffffff\r\nabc",
          "5\r\nabc",
          "3;ext\r\nabc\r\n0\r\nTrailer: x\r\n",
        ]);
        return rawCase("bad chunked body", [
          `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nTransfer-Encoding: chunked\r\n\r\n`,
          bad,
        ]);
      },
      // Garbage request lines and heads.
      () => {
        const garbage = Array.from({ length: int(1, 60) }, () => String.fromCharCode(int(33, 126))).join("");
        return rawCase("garbage head", [
          pick([
            `${garbage}\r\n\r\n`,
            `GET ${garbage} HTTP/1.1\r\n\r\n`,
            `GET /health HTTP/1.1\r\nHost: x\r\n${garbage}\r\n\r\n`,
            `GET /health HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n`,
            `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc`,
            `GET /health HTTP/1.1\r\nHost: x\r\nX: ${"y".repeat(20000)}\r\n\r\n`,
          ]),
        ]);
      },
      // Path traversal and odd paths.
      () => {
        const path = pick([
          "/model/..%2f..%2fetc%2fpasswd",
          "/model/%2e%2e/config.json",
          "/model/.hidden",
          "/model/%E0%A4%A",
          "/v1/models/../../etc/passwd",
          "//etc/passwd",
          "/v1/models/not-this-model",
        ]);
        return fetchCase(`odd path ${path}`, path, { headers: AUTH });
      },
    ];
    for (let i = 0; i < 130; i++) cases.push(pick(kinds)());
    // Streams cut off mid-way.
    const disconnects = Array.from({ length: 8 }, (_, i) => async (): Promise<Outcome> => {
      const abort = new AbortController();
      const path = i % 2 ? "/v1/chat/completions" : "/v1/completions";
      const body = i % 2
        ? { ...chat, max_tokens: 300, stream: true, ignore_eos: true }
        : { ...completion, max_tokens: 300, stream: true, ignore_eos: true };
      const res = await fetch(`${url}${path}`, {
        method: "POST",
        headers: AUTH,
        body: JSON.stringify(body),
        signal: abort.signal,
      });
      const reader = res.body!.getReader();
      for (let k = int(1, 3); k > 0; k--) await reader.read();
      abort.abort();
      await reader.cancel().catch(() => {});
      return { name: "mid-stream disconnect", status: res.status, headers: res.headers, body: "" };
    });

    const t0 = performance.now();
    const outcomes: Outcome[] = [];
    const all = [...cases, ...disconnects];
    // Shuffled, 8 at a time.
    for (let i = all.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [all[i], all[j]] = [all[j], all[i]];
    }
    for (let i = 0; i < all.length; i += 8) {
      outcomes.push(
        ...await Promise.all(all.slice(i, i + 8).map((f) => f())),
      );
    }
    const seconds = (performance.now() - t0) / 1000;
    const counts: Record<number, number> = {};
    for (const o of outcomes) counts[o.status] = (counts[o.status] ?? 0) + 1;
    console.log(
      `${outcomes.length} hostile requests in ${seconds.toFixed(1)} s; statuses ${JSON.stringify(counts)}`,
    );
    assert(outcomes.length >= 100);

    for (const o of outcomes) {
      const what = `${o.name}: ${o.status} ${o.body.slice(0, 200)}`;
      if (o.status === 0) {
        assert(o.silentOk, `${o.name}: the connection was dropped without an answer`);
        continue;
      }
      assert(o.status < 500, what);
      assert(o.headers.get("x-request-id"), `${what}: no X-Request-Id`);
      if (o.status >= 400 && o.body !== "") {
        const e = JSON.parse(o.body).error;
        assert(
          e && typeof e.message === "string" && typeof e.type === "string",
          `${what}: not an OpenAI error`,
        );
        assert("param" in e && "code" in e, `${what}: no param/code`);
      }
    }
    // The expected answers of the categories that have one.
    for (const o of outcomes) {
      if (o.name === "huge body" || o.name === "huge Content-Length") assertEquals(o.status, 413, o.name);
      if (o.name.startsWith("bad auth")) assertEquals(o.status, 401, o.name);
      if (o.name === "slow head") assertEquals(o.status, 408, o.name);
      if (o.name === "bad chunked body") {
        assert(
          o.status === 400 || o.status === 413,
          `${o.name}: ${o.status}`,
        );
      }
      if (o.name === "malformed JSON") assertEquals(o.status, 400, `${o.name}: ${o.body}`);
    }
    assertEquals(({} as Json).polluted, undefined, "Object.prototype was polluted");

    // Same output as before, no KV held, nothing logged as 5xx.
    assertEquals(await normal(), before);
    let m: Record<string, number> = {};
    const t1 = performance.now();
    do {
      await new Promise((res) => setTimeout(res, 50));
      const text = await (await fetch(`${url}/metrics`, { headers: AUTH })).text();
      m = Object.fromEntries(
        text.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => {
          const [k, v] = l.replace(/\{[^}]*\}/, "").split(" ");
          return [k, Number(v)];
        }),
      );
    } while (
      (m.lethe_active_sequences > 0 || m.lethe_kv_bytes_allocated > 0) && performance.now() - t1 < 5000
    );
    assertEquals(m.lethe_active_sequences, 0);
    assertEquals(m.lethe_queued_sequences, 0);
    assertEquals(m.lethe_kv_bytes_allocated, 0);
    assertEquals(m.lethe_requests_failed_total, 0);
    assert(
      log.length >= outcomes.length - outcomes.filter((o) => o.status === 0).length,
      `${log.length} log lines`,
    );
    assertEquals(log.filter((l) => / status=5\d\d /.test(l)), []);
    await server.shutdown();
    engine.destroy();
  },
);
