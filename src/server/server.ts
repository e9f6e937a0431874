/**
 * The OpenAI-compatible HTTP server: routes, response formats (JSON and server-sent events), /metrics, and
 * what holds it up under abuse: body, head and time limits (enforced by the HTTP layer, `http.ts`), a bounded
 * queue (429), an optional API key (401), 405 with `Allow` for wrong methods, an `X-Request-Id` on every
 * response, an access log, and a graceful drain. Generation runs in the {@link Scheduler}; this module only
 * translates requests and events.
 */
import type { Engine } from "../engine/engine.ts";
import { DEFAULT_POLICY, type KvSettings, resolveKvOptions } from "../kv/options.ts";
import type { ChatTemplateName } from "../../tokenizer/mod.ts";
import {
  ApiError,
  parseChat,
  parseCompletion,
  type ParsedRequest,
  readJson,
  type RequestDefaults,
  resolveMaxTokens,
} from "./protocol.ts";
import type { TokenLogprobs } from "../engine/sampler.ts";
import {
  type FinishReason,
  type JobEvent,
  QueueFullError,
  Scheduler,
  type SchedulerMetrics,
} from "./scheduler.ts";
import { ThinkSplitter } from "./text.ts";
import { staticHandler } from "./static.ts";
import { type Exchange, HttpError, serveHttp } from "./http.ts";
import { ApiKeyAuth } from "./auth.ts";
import { checkPromptSize, checkServerConfig, DEFAULT_LIMITS, requestId } from "./limits.ts";

/** Options of {@link startServer}. */
export interface ServerOptions {
  /** Model id clients pass as `model` (default: the model directory's name). */
  modelId?: string;
  /** Interface to listen on (default 127.0.0.1). */
  hostname?: string;
  /** 0 = any free port. */
  port?: number;
  /** Byte cap on KV over all sequences (default 1 GiB). */
  kvMemory?: number;
  /** Most sequences decoding together (default 16). */
  maxBatch?: number;
  /** Line up the batch's pruning rounds (default true; see `SchedulerOptions.alignRounds`). */
  alignRounds?: boolean;
  /** max_tokens when a request gives none (default 256). */
  maxTokens?: number;
  /** Default KV policy options (`--kv`, `--kv-budget`). */
  kv?: KvSettings;
  /**
   * Chat template family (default: the model's own `chat_template` from tokenizer_config.json; without one, the
   * family the tokenizer names, else deepseek-r1).
   */
  chatTemplate?: ChatTemplateName;
  /** Directory of the built browser page, served at `/` (default: no page). */
  webDir?: string;
  /** Model directory whose files are served at `/model/<file>` with Range support (default: none). */
  modelDir?: string;
  /** Origin allowed to read the page and model files cross-origin, or `*` (default: same origin only). */
  cors?: string;
  /**
   * API key: when set, `/v1/*`, `/metrics` and `/model/*` need `Authorization: Bearer <key>` (401 otherwise);
   * `/health` and the page stay open (default: no key).
   */
  apiKey?: string;
  /** Most bytes of a request body (413 past it; default 4 MiB). */
  maxBodyBytes?: number;
  /** Most bytes of a request head (431 past it; default 16 KiB). */
  maxHeaderBytes?: number;
  /** Most ms for a request's head to arrive (408 and closed past it; default 10 s). */
  headerTimeoutMs?: number;
  /** Most ms for a request's body to arrive once the server reads it (408; default 30 s). */
  bodyTimeoutMs?: number;
  /** Most ms a kept-alive connection idles, or a write to a client makes no progress (default 60 s). */
  idleTimeoutMs?: number;
  /**
   * Wall-clock limit of a request from its first byte (default 600 s): a generation still running then ends
   * with finish_reason "length", one still queued gets 503 `request_timeout`.
   */
  requestTimeoutMs?: number;
  /** Most requests waiting for admission (429 with Retry-After past it; default 64). */
  maxQueue?: number;
  /**
   * Receives one access-log line per request (method, path, status, body bytes, tokens, duration, request id;
   * default: none — `deno task serve` writes them to stderr unless `--quiet-access-log`).
   */
  accessLog?: (line: string) => void;
}

/** A running server. */
export interface RunningServer {
  /** The port it listens on (the one picked when asked for 0). */
  readonly port: number;
  /** The address it listens on. */
  readonly hostname: string;
  /** `http://hostname:port`, the base of the API's routes. */
  readonly url: string;
  /** The batching loop behind it (for its metrics). */
  readonly scheduler: Scheduler;
  /**
   * Stops accepting requests, ends the scheduler loop (requests still queued or running get an error) and waits
   * for both.
   */
  shutdown(): Promise<void>;
  /**
   * Graceful stop: new requests get 503 with Retry-After (and `/health` says "draining"), the requests already
   * accepted run to their end, then the server shuts down. After `timeoutMs` (default: the request timeout) it
   * shuts down whatever still runs.
   */
  drain(options?: { timeoutMs?: number }): Promise<void>;
  /** Whether {@link drain} was called. */
  readonly draining: boolean;
}

/** What the access log notes about an exchange. */
interface Note {
  id: string;
  tokens?: { prompt: number; completion: number };
}

const GET_HEAD = ["GET", "HEAD"];

/** An OpenAI-shaped error response with extra headers (Allow, WWW-Authenticate, Retry-After). */
function errorResponse(
  status: number,
  message: string,
  code: string | null,
  extra: { param?: string | null; type?: string; headers?: Record<string, string> } = {},
): Response {
  const type = extra.type ?? (status >= 500 ? "server_error" : "invalid_request_error");
  return Response.json(
    { error: { message, type, param: extra.param ?? null, code } },
    { status, headers: extra.headers },
  );
}

/** Sets a header on a response, copying it when its headers are immutable. */
function withHeader(res: Response, name: string, value: string): Response {
  try {
    res.headers.set(name, value);
    return res;
  } catch {
    const headers = new Headers(res.headers);
    headers.set(name, value);
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
  }
}

const enc = new TextEncoder();

/** Prometheus text of the scheduler's metrics. */
export function prometheus(m: SchedulerMetrics, modelId: string): string {
  const lines: string[] = [];
  const label = `{model="${modelId.replace(/["\\\n]/g, "_")}"}`;
  const put = (name: string, type: "gauge" | "counter", help: string, v: number) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}${label} ${v}`);
  };
  put("lethe_active_sequences", "gauge", "Sequences in the decode batch.", m.active);
  put("lethe_queued_sequences", "gauge", "Requests waiting for admission (KV pool or batch full).", m.queued);
  put("lethe_kv_bytes_live", "gauge", "KV bytes holding valid tokens, all sequences.", m.kvBytesLive);
  put("lethe_kv_bytes_allocated", "gauge", "KV bytes allocated, all sequences.", m.kvBytesAllocated);
  put(
    "lethe_kv_arena_bytes",
    "gauge",
    "GPU bytes of the shared KV arena (regions + free space).",
    m.kvArenaBytes,
  );
  put("lethe_kv_bytes_peak", "gauge", "Peak KV bytes allocated since start.", m.kvBytesPeak);
  put("lethe_kv_bytes_capacity", "gauge", "The KV pool's byte cap (--kv-memory).", m.kvBytesCap);
  put(
    "lethe_tokens_per_second",
    "gauge",
    "Generated tokens per second over the last 10 s.",
    m.tokensPerSecond,
  );
  put("lethe_prompt_tokens_total", "counter", "Prompt tokens prefilled.", m.promptTokensTotal);
  put("lethe_generated_tokens_total", "counter", "Tokens generated.", m.generatedTokensTotal);
  put("lethe_decode_steps_total", "counter", "Batched decode steps.", m.decodeStepsTotal);
  put(
    "lethe_decode_steps_ahead_total",
    "counter",
    "Decode steps recorded before the previous step's ids were read back.",
    m.decodeStepsAheadTotal,
  );
  put("lethe_prune_rounds_total", "counter", "KV pruning rounds run.", m.pruneRoundsTotal);
  put(
    "lethe_preemptions_total",
    "counter",
    "Sequences preempted because the KV pool ran short.",
    m.preemptionsTotal,
  );
  put("lethe_requests_finished_total", "counter", "Requests that finished.", m.requestsFinishedTotal);
  put(
    "lethe_requests_cancelled_total",
    "counter",
    "Requests whose client went away.",
    m.requestsCancelledTotal,
  );
  put(
    "lethe_requests_failed_total",
    "counter",
    "Requests that failed inside the engine.",
    m.requestsFailedTotal,
  );
  put("lethe_batch_size_max", "gauge", "Largest decode batch so far.", m.maxBatchSeen);
  put("lethe_queue_length_max", "gauge", "Longest queue so far.", m.maxQueuedSeen);
  return lines.join("\n") + "\n";
}

/** Starts the server on an engine that nothing else uses while it runs. */
export function startServer(engine: Engine, options: ServerOptions = {}): RunningServer {
  const c = engine.model.config;
  const modelId = options.modelId ?? engine.model.dir.replace(/\/+$/, "").split("/").pop() ?? "model";
  const limits = {
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_LIMITS.maxBodyBytes,
    maxHeaderBytes: options.maxHeaderBytes ?? DEFAULT_LIMITS.maxHeaderBytes,
    headerTimeoutMs: options.headerTimeoutMs ?? DEFAULT_LIMITS.headerTimeoutMs,
    bodyTimeoutMs: options.bodyTimeoutMs ?? DEFAULT_LIMITS.bodyTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_LIMITS.idleTimeoutMs,
    requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_LIMITS.requestTimeoutMs,
    maxQueue: options.maxQueue ?? DEFAULT_LIMITS.maxQueue,
  };
  const kvMemory = options.kvMemory ?? 1024 ** 3;
  const maxBatch = options.maxBatch ?? 16;
  // A server that could serve nothing does not start (the error names the option and its flag).
  checkServerConfig(engine, {
    ...limits,
    kvMemory,
    maxBatch,
    maxTokens: options.maxTokens ?? 256,
    apiKey: options.apiKey,
    kv: options.kv,
  });
  const auth = options.apiKey !== undefined ? new ApiKeyAuth(options.apiKey) : null;
  const scheduler = new Scheduler(engine, {
    kvMemory,
    maxBatch,
    alignRounds: options.alignRounds ?? true,
    maxQueue: limits.maxQueue,
  });
  const retryAfter = String(DEFAULT_LIMITS.retryAfterSeconds);
  let draining = false;
  const defaults: RequestDefaults = {
    modelId,
    contextLength: c.maxPositionEmbeddings,
    vocabSize: c.vocabSize,
    maxTokens: options.maxTokens ?? 256,
    // Server flags over the model's kv_defaults.json over the documented defaults.
    kv: { ...options.kv, ...resolveKvOptions(options.kv, engine.kvDefaults) },
  };
  const created = Math.floor(Date.now() / 1000);
  let counter = 0;
  const tok = engine.tokenizer;
  // Undefined: the model's own Jinja template.
  const template: ChatTemplateName | undefined = options.chatTemplate ??
    (tok?.chatTemplateSource ? undefined : tok?.chatTemplate ?? "deepseek-r1");

  /** Submits a job and returns either an SSE stream or the final JSON. */
  const generate = (
    req: Request,
    p: ParsedRequest,
    promptIds: number[],
    kind: "completion" | "chat",
    startsInThought: boolean,
    ex: Exchange,
  ): Response | Promise<Response> => {
    const note = notes.get(ex);
    const deadline = ex.started + limits.requestTimeoutMs;
    const maxTokens = resolveMaxTokens(
      p,
      promptIds.length,
      defaults,
      kind === "chat" ? "messages" : "prompt",
    );
    const minimum = scheduler.minimumBytes(promptIds.length, maxTokens, p.kv);
    if (minimum <= scheduler.options.kvMemory && p.n * minimum > scheduler.options.kvMemory) {
      throw new ApiError(
        `n = ${p.n} choices need ${
          p.n * minimum
        } bytes of KV to start; the server's pool holds ${scheduler.options.kvMemory}`,
        "n",
        "kv_memory_exceeded",
      );
    }
    if (minimum > scheduler.options.kvMemory) {
      throw new ApiError(
        `the request needs ${minimum} bytes of KV (kv_policy ${
          p.kv.policy ?? DEFAULT_POLICY
        }); the server's pool holds ${scheduler.options.kvMemory}`,
        kind === "chat" ? "messages" : "prompt",
        "kv_memory_exceeded",
      );
    }
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${Date.now().toString(36)}${
      (++counter).toString(36)
    }`;
    const object = kind === "chat" ? "chat.completion" : "text_completion";
    const withIds = p.returnTokenIds || tok === null;
    const usage = (e: { promptTokens: number; completionTokens: number }) => {
      if (note) note.tokens = { prompt: e.promptTokens, completion: e.completionTokens };
      return {
        prompt_tokens: e.promptTokens,
        completion_tokens: e.completionTokens,
        total_tokens: e.promptTokens + e.completionTokens,
      };
    };
    // Checked here, synchronously before the submit below (the stream's start() runs in its constructor).
    if (scheduler.queueFull) throw new QueueFullError(scheduler.metrics().queued);

    const n = p.n;
    const wantLp = p.logprobs !== null;
    const decoderUtf8 = new TextDecoder("utf-8");
    /** A token as OpenAI shows it: its text (lossy for a partial UTF-8 character) and its bytes. */
    const tokenOf = (tid: number): { token: string; bytes: number[] } => {
      const b = tok?.tokenBytes(tid) ?? null;
      if (!b) return { token: `token_id:${tid}`, bytes: [] };
      return { token: decoderUtf8.decode(b), bytes: Array.from(b) };
    };
    /** Chat's logprobs entry for one token. */
    const chatLp = (tid: number, lp: TokenLogprobs) => ({
      ...tokenOf(tid),
      logprob: lp.logprob,
      top_logprobs: lp.top.map((t) => ({ ...tokenOf(t.id), logprob: t.logprob })),
    });
    /** Completions' logprobs for a list of tokens (each at its offset in the choice's text). */
    const completionLp = (items: { id: number; lp: TokenLogprobs; offset: number }[]) => ({
      tokens: items.map((x) => tokenOf(x.id).token),
      token_logprobs: items.map((x) => x.lp.logprob),
      top_logprobs: items.map((x) =>
        Object.fromEntries(x.lp.top.map((t) => [tokenOf(t.id).token, t.logprob] as [string, number]))
      ),
      text_offset: items.map((x) => x.offset),
    });
    /** Usage over every choice: the prompt once, each choice's tokens. */
    const totals = { prompt: promptIds.length, completion: 0, done: 0 };
    const job = (onEvent: (e: JobEvent) => void) =>
      scheduler.submit({
        promptIds,
        maxTokens,
        sampling: p.sampling,
        n,
        logprobs: p.logprobs,
        kv: p.kv,
        stop: p.stop,
        ...(p.ignoreEos ? { eos: [] } : {}),
        onEvent,
        deadline,
      });

    if (p.stream) {
      let handle: { cancel(): void } | null = null;
      const splitters = Array.from({ length: n }, () => new ThinkSplitter(startsInThought));
      const textLen = new Array<number>(n).fill(0);
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          let open = true;
          const send = (obj: unknown) => {
            if (!open) return;
            try {
              controller.enqueue(enc.encode(`data: ${JSON.stringify(obj)}\n\n`));
            } catch {
              open = false;
            }
          };
          const end = () => {
            if (!open) return;
            open = false;
            try {
              controller.enqueue(enc.encode("data: [DONE]\n\n"));
              controller.close();
            } catch { /* the client went away */ }
          };
          const chunk = (
            index: number,
            choice: Record<string, unknown>,
            extra: Record<string, unknown> = {},
          ) => ({
            id,
            object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
            created: Math.floor(Date.now() / 1000),
            model: modelId,
            choices: [{ index, ...choice }],
            ...extra,
          });
          if (kind === "chat") {
            for (let i = 0; i < n; i++) {
              send(
                chunk(i, { delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }),
              );
            }
          }
          const onEvent = (e: JobEvent) => {
            if (e.type === "token") {
              const i = e.index;
              const ids = withIds && e.id >= 0 ? { token_ids: [e.id] } : {};
              const lp = wantLp && e.id >= 0 && e.logprobs ? e.logprobs : null;
              if (kind === "completion") {
                if (e.text || withIds || lp) {
                  const logprobs = lp ? completionLp([{ id: e.id, lp, offset: textLen[i] }]) : null;
                  send(chunk(i, { text: e.text, logprobs, finish_reason: null, ...ids }));
                }
                textLen[i] += e.text.length;
                return;
              }
              const logprobs = lp ? { content: [chatLp(e.id, lp)] } : null;
              const pieces = splitters[i].push(e.text);
              if (pieces.length === 0 && ((withIds && e.id >= 0) || lp)) {
                send(chunk(i, { delta: {}, logprobs, finish_reason: null, ...ids }));
              }
              pieces.forEach((piece, k) => {
                const delta = piece.kind === "reasoning"
                  ? { reasoning_content: piece.text }
                  : { content: piece.text };
                send(chunk(i, {
                  delta,
                  logprobs: k === 0 ? logprobs : null,
                  finish_reason: null,
                  ...(k === 0 ? ids : {}),
                }));
              });
            } else if (e.type === "done") {
              const i = e.index;
              if (kind === "chat") {
                for (const piece of splitters[i].flush()) {
                  const delta = piece.kind === "reasoning"
                    ? { reasoning_content: piece.text }
                    : { content: piece.text };
                  send(chunk(i, { delta, logprobs: null, finish_reason: null }));
                }
              }
              totals.completion += e.completionTokens;
              const last = ++totals.done === n;
              const fin = kind === "chat"
                ? { delta: {}, logprobs: null, finish_reason: e.finishReason }
                : { text: "", logprobs: null, finish_reason: e.finishReason };
              const u = last
                ? usage({ promptTokens: totals.prompt, completionTokens: totals.completion })
                : null;
              send(chunk(i, fin, u ? { usage: u } : {}));
              if (!last) return;
              if (p.includeUsage) send({ ...chunk(0, {}), choices: [], usage: u });
              end();
            } else {
              send({
                error: {
                  message: e.message,
                  type: "server_error",
                  param: null,
                  code: e.code ?? "generation_failed",
                },
              });
              end();
            }
          };
          handle = job(onEvent);
        },
        cancel() {
          handle?.cancel();
        },
      });
      // Disconnects reach a stream through cancel(); request.signal is not used here because Deno's legacy
      // behaviour aborts it as soon as a streamed response starts.
      return new Response(body, {
        headers: {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-cache",
          "connection": "keep-alive",
        },
      });
    }

    return new Promise<Response>((resolve) => {
      const choices = Array.from({ length: n }, () => ({
        ids: [] as number[],
        text: "",
        lps: [] as { id: number; lp: TokenLogprobs; offset: number }[],
        finishReason: "stop" as FinishReason,
      }));
      let settled = false;
      const handle = job((e: JobEvent) => {
        if (settled) return;
        if (e.type === "token") {
          const c = choices[e.index];
          if (e.id >= 0) c.ids.push(e.id);
          if (wantLp && e.id >= 0 && e.logprobs) {
            c.lps.push({ id: e.id, lp: e.logprobs, offset: c.text.length });
          }
          c.text += e.text;
        } else if (e.type === "done") {
          choices[e.index].finishReason = e.finishReason;
          totals.completion += e.completionTokens;
          if (++totals.done < n) return;
          settled = true;
          req.signal.removeEventListener("abort", onAbort);
          resolve(
            Response.json(final(usage({ promptTokens: totals.prompt, completionTokens: totals.completion }))),
          );
        } else {
          settled = true;
          req.signal.removeEventListener("abort", onAbort);
          // The other choices are of no use without this one.
          handle.cancel();
          const busy = e.code === "request_timeout" || e.code === "shutting_down";
          resolve(
            busy
              ? errorResponse(503, e.message, e.code!, { headers: { "retry-after": retryAfter } })
              : new ApiError(e.message, null, "generation_failed", 500, "server_error").response(),
          );
        }
      });
      const onAbort = () => handle.cancel();
      req.signal.addEventListener("abort", onAbort);
      const final = (u: ReturnType<typeof usage>) => {
        const base = { id, object, created: Math.floor(Date.now() / 1000), model: modelId };
        if (kind === "completion") {
          return {
            ...base,
            choices: choices.map((c, index) => ({
              index,
              text: c.text,
              logprobs: wantLp ? completionLp(c.lps) : null,
              finish_reason: c.finishReason,
              ...(withIds ? { token_ids: c.ids } : {}),
            })),
            usage: u,
          };
        }
        return {
          ...base,
          choices: choices.map((c, index) => {
            const s = new ThinkSplitter(startsInThought);
            let reasoning: string | null = startsInThought ? "" : null;
            let content = "";
            for (const piece of [...s.push(c.text), ...s.flush()]) {
              if (piece.kind === "reasoning") reasoning = (reasoning ?? "") + piece.text;
              else content += piece.text;
            }
            return {
              index,
              message: {
                role: "assistant",
                content,
                ...(reasoning !== null ? { reasoning_content: reasoning } : {}),
              },
              logprobs: wantLp ? { content: c.lps.map((x) => chatLp(x.id, x.lp)), refusal: null } : null,
              finish_reason: c.finishReason,
              ...(withIds ? { token_ids: c.ids } : {}),
            };
          }),
          usage: u,
        };
      };
    });
  };

  const statics = staticHandler({ webDir: options.webDir, modelDir: options.modelDir, cors: options.cors });
  const notes = new WeakMap<Exchange, Note>();

  /** The methods a route takes, or null for a path that is not one of the API's. */
  const allowFor = (path: string): string[] | null => {
    if (
      path === "/health" || path === "/metrics" || path === "/v1/models" || path === `/v1/models/${modelId}`
    ) {
      return GET_HEAD;
    }
    if (path === "/v1/completions" || path === "/v1/chat/completions") return ["POST"];
    return null;
  };
  const needsKey = (path: string) =>
    auth !== null &&
    (path === "/v1" || path.startsWith("/v1/") || path === "/metrics" || path.startsWith("/model/"));

  /** The response for anything a route throws. */
  const failure = (e: unknown, path: string): Response => {
    if (e instanceof ApiError) return e.response();
    if (e instanceof HttpError) {
      const allow = e.status === 405 ? allowFor(path) : null;
      return errorResponse(e.status, e.message, e.code, {
        headers: allow ? { allow: allow.join(", ") } : {},
      });
    }
    if (e instanceof QueueFullError) {
      return errorResponse(429, e.message, "queue_full", {
        type: "rate_limit_error",
        headers: { "retry-after": retryAfter },
      });
    }
    console.error(e);
    const msg = e instanceof Error ? e.message : String(e);
    return errorResponse(500, msg, "internal_error");
  };

  const route = async (req: Request, ex: Exchange): Promise<Response> => {
    const url = new URL(req.url);
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const method = req.method;
    if (needsKey(path) && !(await auth!.check(req.headers.get("authorization")))) {
      return errorResponse(
        401,
        req.headers.has("authorization")
          ? "invalid API key (send Authorization: Bearer <key>)"
          : "this server needs an API key: send Authorization: Bearer <key>",
        "invalid_api_key",
        { headers: { "www-authenticate": 'Bearer realm="lethe"' } },
      );
    }
    const allow = allowFor(path);
    if (allow !== null && !allow.includes(method)) {
      return errorResponse(405, `${path} takes ${allow.join(" or ")}, not ${method}`, "method_not_allowed", {
        headers: { allow: allow.join(", ") },
      });
    }
    if (path === "/health") {
      if (draining) {
        return Response.json({ status: "draining", model: modelId }, {
          status: 503,
          headers: { "retry-after": retryAfter },
        });
      }
      return Response.json({ status: "ok", model: modelId });
    }
    if (path === "/metrics") {
      return new Response(prometheus(scheduler.metrics(), modelId), {
        headers: { "content-type": "text/plain; version=0.0.4" },
      });
    }
    if (path === "/v1/models") {
      const card = {
        id: modelId,
        object: "model",
        created,
        owned_by: "lethe",
        max_model_len: c.maxPositionEmbeddings,
      };
      return Response.json({ object: "list", data: [card] });
    }
    if (path === `/v1/models/${modelId}`) {
      return Response.json({ id: modelId, object: "model", created, owned_by: "lethe" });
    }
    if (path === "/v1/completions" || path === "/v1/chat/completions") {
      if (draining) {
        return errorResponse(503, "the server is shutting down; try another instance", "draining", {
          headers: { "retry-after": retryAfter },
        });
      }
      // Refused before its body is read.
      if (scheduler.queueFull) throw new QueueFullError(scheduler.metrics().queued);
      const body = await readJson(new Request(req.url, { method: "POST", body: await ex.body() }));
      if (path === "/v1/completions") {
        const p = parseCompletion(body, defaults);
        let ids: number[];
        if (typeof p.prompt === "string") {
          if (!tok) {
            throw new ApiError(
              `the model '${modelId}' has no tokenizer: send the prompt as an array of token ids`,
              "prompt",
              "no_tokenizer",
            );
          }
          await checkPromptSize([p.prompt], countTokens, c.maxPositionEmbeddings, "prompt");
          ids = engine.encode(p.prompt);
        } else ids = p.prompt;
        return await generate(req, p, ids, "completion", false, ex);
      }
      const p = parseChat(body, defaults);
      if (!tok) {
        throw new ApiError(
          `the model '${modelId}' has no tokenizer: chat needs one (use /v1/completions with token ids)`,
          "messages",
          "no_tokenizer",
        );
      }
      await checkPromptSize(
        p.messages.map((m) => m.content),
        countTokens,
        c.maxPositionEmbeddings,
        "messages",
      );
      const text = tok.applyChatTemplate(p.messages, template);
      // Message content is plain text (no forged control tokens) unless the request opts in.
      const specialTokens = p.parseSpecialTokens ? "parse" : "plain";
      const ids = tok.encodeChat(p.messages, template, { specialTokens });
      return await generate(req, p, ids, "chat", /<think>\s*$/.test(text), ex);
    }
    if (path.startsWith("/v1/") || path === "/v1") {
      throw new ApiError(`no route for ${method} ${path}`, null, "not_found", 404);
    }
    const file = await statics(req);
    if (file) return file.status >= 400 ? asApiError(file) : file;
    throw new ApiError(`no route for ${method} ${path}`, null, "not_found", 404);
  };
  /** A static file's plain-text error in the API's error shape, its headers (Allow, Content-Range, CORS) kept. */
  const asApiError = async (res: Response): Promise<Response> => {
    if (!(res.headers.get("content-type") ?? "").startsWith("text/plain")) return res;
    const message = (await res.text()).trim() || `HTTP ${res.status}`;
    const codes: Record<number, string> = {
      400: "invalid_request",
      404: "not_found",
      405: "method_not_allowed",
      416: "range_not_satisfiable",
    };
    const code = codes[res.status] ?? null;
    const out = errorResponse(res.status, message, code);
    for (const [k, v] of res.headers) {
      if (k !== "content-type" && k !== "content-length") out.headers.set(k, v);
    }
    return out;
  };
  const countTokens = (piece: string) => tok!.encode(piece, { addSpecialTokens: false }).length;

  const http = serveHttp({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    maxBodyBytes: limits.maxBodyBytes,
    maxHeaderBytes: limits.maxHeaderBytes,
    headerTimeoutMs: limits.headerTimeoutMs,
    bodyTimeoutMs: limits.bodyTimeoutMs,
    idleTimeoutMs: limits.idleTimeoutMs,
    async handler(req, ex) {
      const note: Note = { id: requestId(req.headers.get("x-request-id")) };
      notes.set(ex, note);
      let res: Response;
      try {
        res = await route(req, ex);
      } catch (e) {
        res = failure(e, ex.path.replace(/\/+$/, "") || "/");
      }
      if (draining) res = withHeader(res, "connection", "close");
      return withHeader(res, "x-request-id", note.id);
    },
    errorResponse(e, ex) {
      const note: Note = { id: requestId(ex.headers.get("x-request-id")) };
      notes.set(ex, note);
      return withHeader(failure(e, ex.path.replace(/\/+$/, "") || "/"), "x-request-id", note.id);
    },
    onComplete(ex, status, bytes, ok) {
      if (!options.accessLog) return;
      const note = notes.get(ex);
      const tokens = note?.tokens
        ? ` prompt_tokens=${note.tokens.prompt} completion_tokens=${note.tokens.completion}`
        : "";
      const ms = (performance.now() - ex.started).toFixed(1);
      options.accessLog(
        `access method=${ex.method} path=${ex.path} status=${status} bytes=${bytes}${tokens} ms=${ms} ` +
          `id=${note?.id ?? "-"}${ok ? "" : " aborted=1"}`,
      );
    },
  });
  const addr = http.addr;
  let stopped: Promise<void> | null = null;
  const shutdown = () =>
    stopped ??= (async () => {
      const closed = http.close();
      // Pending requests get an error now, so that their responses end.
      await scheduler.close();
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([closed, new Promise((r) => (t = setTimeout(r, 5000)))]);
      clearTimeout(t);
      http.abort();
      await closed;
    })();
  return {
    port: addr.port,
    hostname: addr.hostname,
    url: `http://${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}`,
    scheduler,
    get draining() {
      return draining;
    },
    shutdown,
    async drain(o: { timeoutMs?: number } = {}) {
      draining = true;
      const until = performance.now() + (o.timeoutMs ?? limits.requestTimeoutMs);
      // Accepted requests run on; new ones get 503 at once (and count as busy only while they are answered).
      while (!(scheduler.idle && http.busy === 0) && performance.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await shutdown();
    },
  };
}
