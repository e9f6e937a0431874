/**
 * The OpenAI-compatible HTTP server: routes, response formats (JSON and server-sent events), /metrics.
 * Generation runs in the {@link Scheduler}; this module only translates requests and events.
 */
import type { Engine } from "../engine/engine.ts";
import { DEFAULT_POLICY, type KvSettings, resolveKvOptions } from "../kv/options.ts";
import { bytesPerToken } from "../kv/cache.ts";
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
import { type FinishReason, type JobEvent, Scheduler, type SchedulerMetrics } from "./scheduler.ts";
import { ThinkSplitter } from "./text.ts";
import { staticHandler } from "./static.ts";

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
  /** Chat template (default: the one the tokenizer names, else deepseek-r1). */
  chatTemplate?: ChatTemplateName;
  /** Directory of the built browser page, served at `/` (default: no page). */
  webDir?: string;
  /** Model directory whose files are served at `/model/<file>` with Range support (default: none). */
  modelDir?: string;
  /** Origin allowed to read the page and model files cross-origin, or `*` (default: same origin only). */
  cors?: string;
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
  /** Stops accepting requests, ends the scheduler loop and waits for both. */
  shutdown(): Promise<void>;
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
  const scheduler = new Scheduler(engine, {
    kvMemory: options.kvMemory ?? 1024 ** 3,
    maxBatch: options.maxBatch ?? 16,
    alignRounds: options.alignRounds ?? true,
  });
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
  const template: ChatTemplateName = options.chatTemplate ?? tok?.chatTemplate ?? "deepseek-r1";

  /** Submits a job and returns either an SSE stream or the final JSON. */
  const generate = (
    req: Request,
    p: ParsedRequest,
    promptIds: number[],
    kind: "completion" | "chat",
    startsInThought: boolean,
  ): Response | Promise<Response> => {
    const maxTokens = resolveMaxTokens(
      p,
      promptIds.length,
      defaults,
      kind === "chat" ? "messages" : "prompt",
    );
    const minimum = scheduler.minimumBytes(promptIds.length, maxTokens, p.kv);
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
    const usage = (e: { promptTokens: number; completionTokens: number }) => ({
      prompt_tokens: e.promptTokens,
      completion_tokens: e.completionTokens,
      total_tokens: e.promptTokens + e.completionTokens,
    });

    if (p.stream) {
      let handle: { cancel(): void } | null = null;
      const splitter = new ThinkSplitter(startsInThought);
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
          const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
            id,
            object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
            created: Math.floor(Date.now() / 1000),
            model: modelId,
            choices: [{ index: 0, ...choice }],
            ...extra,
          });
          if (kind === "chat") {
            send(chunk({ delta: { role: "assistant", content: "" }, finish_reason: null }));
          }
          const onEvent = (e: JobEvent) => {
            if (e.type === "token") {
              const ids = withIds && e.id >= 0 ? { token_ids: [e.id] } : {};
              if (kind === "completion") {
                if (e.text || withIds) {
                  send(chunk({ text: e.text, logprobs: null, finish_reason: null, ...ids }));
                }
                return;
              }
              const pieces = splitter.push(e.text);
              if (pieces.length === 0 && withIds && e.id >= 0) {
                send(chunk({ delta: {}, finish_reason: null, ...ids }));
              }
              pieces.forEach((piece, i) => {
                const delta = piece.kind === "reasoning"
                  ? { reasoning_content: piece.text }
                  : { content: piece.text };
                send(chunk({ delta, finish_reason: null, ...(i === 0 ? ids : {}) }));
              });
            } else if (e.type === "done") {
              if (kind === "chat") {
                for (const piece of splitter.flush()) {
                  const delta = piece.kind === "reasoning"
                    ? { reasoning_content: piece.text }
                    : { content: piece.text };
                  send(chunk({ delta, finish_reason: null }));
                }
              }
              const fin = kind === "chat"
                ? { delta: {}, finish_reason: e.finishReason }
                : { text: "", logprobs: null, finish_reason: e.finishReason };
              send(chunk(fin, { usage: usage(e) }));
              if (p.includeUsage) {
                send({ ...chunk({}), choices: [], usage: usage(e) });
              }
              end();
            } else {
              send({
                error: { message: e.message, type: "server_error", param: null, code: "generation_failed" },
              });
              end();
            }
          };
          handle = scheduler.submit({
            promptIds,
            maxTokens,
            sampling: p.sampling,
            kv: p.kv,
            stop: p.stop,
            ...(p.ignoreEos ? { eos: [] } : {}),
            onEvent,
          });
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
      const ids: number[] = [];
      let text = "";
      const handle = scheduler.submit({
        promptIds,
        maxTokens,
        sampling: p.sampling,
        kv: p.kv,
        stop: p.stop,
        ...(p.ignoreEos ? { eos: [] } : {}),
        onEvent: (e: JobEvent) => {
          if (e.type === "token") {
            if (e.id >= 0) ids.push(e.id);
            text += e.text;
          } else if (e.type === "done") {
            req.signal.removeEventListener("abort", onAbort);
            resolve(Response.json(final(e.finishReason, usage(e))));
          } else {
            req.signal.removeEventListener("abort", onAbort);
            resolve(new ApiError(e.message, null, "generation_failed", 500, "server_error").response());
          }
        },
      });
      const onAbort = () => handle.cancel();
      req.signal.addEventListener("abort", onAbort);
      const final = (finishReason: FinishReason, u: ReturnType<typeof usage>) => {
        const extra = withIds ? { token_ids: ids } : {};
        if (kind === "completion") {
          return {
            id,
            object,
            created: Math.floor(Date.now() / 1000),
            model: modelId,
            choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason, ...extra }],
            usage: u,
          };
        }
        const s = new ThinkSplitter(startsInThought);
        let reasoning: string | null = startsInThought ? "" : null;
        let content = "";
        for (const piece of [...s.push(text), ...s.flush()]) {
          if (piece.kind === "reasoning") reasoning = (reasoning ?? "") + piece.text;
          else content += piece.text;
        }
        return {
          id,
          object,
          created: Math.floor(Date.now() / 1000),
          model: modelId,
          choices: [{
            index: 0,
            message: {
              role: "assistant",
              content,
              ...(reasoning !== null ? { reasoning_content: reasoning } : {}),
            },
            logprobs: null,
            finish_reason: finishReason,
            ...extra,
          }],
          usage: u,
        };
      };
    });
  };

  const statics = staticHandler({ webDir: options.webDir, modelDir: options.modelDir, cors: options.cors });
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const path = url.pathname.replace(/\/+$/, "") || "/";
    try {
      if (path === "/health") return Response.json({ status: "ok", model: modelId });
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
        if (req.method !== "POST") {
          throw new ApiError(`${path} takes POST`, null, "method_not_allowed", 405);
        }
        const body = await readJson(req);
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
            ids = engine.encode(p.prompt);
          } else ids = p.prompt;
          return await generate(req, p, ids, "completion", false);
        }
        const p = parseChat(body, defaults);
        if (!tok) {
          throw new ApiError(
            `the model '${modelId}' has no tokenizer: chat needs one (use /v1/completions with token ids)`,
            "messages",
            "no_tokenizer",
          );
        }
        const text = tok.applyChatTemplate(p.messages, template);
        const ids = tok.encode(text, { addSpecialTokens: false });
        return await generate(req, p, ids, "chat", /<think>\s*$/.test(text));
      }
      const file = await statics(req);
      if (file) return file;
      throw new ApiError(`no route for ${req.method} ${path}`, null, "not_found", 404);
    } catch (e) {
      if (e instanceof ApiError) return e.response();
      console.error(e);
      const msg = e instanceof Error ? e.message : String(e);
      return new ApiError(msg, null, "internal_error", 500, "server_error").response();
    }
  };

  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    onListen: () => {},
  }, handler);
  const addr = server.addr as Deno.NetAddr;
  return {
    port: addr.port,
    hostname: addr.hostname,
    url: `http://${addr.hostname}:${addr.port}`,
    scheduler,
    async shutdown() {
      await server.shutdown();
      await scheduler.close();
    },
  };
}

/** Bytes of KV one token costs over all layers of the engine's model. */
export function kvBytesPerToken(engine: Engine): number {
  const c = engine.model.config;
  return c.numLayers * bytesPerToken({ layers: c.numLayers, nKvHeads: c.numKvHeads, headDim: c.headDim });
}
