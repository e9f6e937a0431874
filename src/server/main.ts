/**
 * `deno task serve`: the OpenAI-compatible server from the command line.
 */
import "../io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "../engine/engine.ts";
import { parseGpuPath } from "../gpu/device.ts";
import { parseWeightsOption } from "../model/model.ts";
import { loadKvDefaults } from "../kv/defaults.ts";
import {
  checkKvOptions,
  DEFAULT_POLICY,
  KV_FLAG_OPTIONS,
  type KvFlagValues,
  kvHelpLines,
  KvOptionError,
  type KvSettings,
  kvSettingsFromFlags,
  resolveKvOptions,
} from "../kv/options.ts";
import { startServer } from "./server.ts";
import { DEFAULT_LIMITS, parseDuration } from "./limits.ts";
import { prepareWebDir } from "./static.ts";
import { DEFAULT_MODEL_DIR } from "../util/paths.ts";
import type { ChatTemplateName } from "../../tokenizer/mod.ts";

const HELP = `Usage: deno task serve [--model DIR] [--port N] [options]

  --model DIR            Hugging Face model directory (default: the bundled models/lethe-reasoner-tiny)
  --host H               address to bind (default 127.0.0.1)
  --port N               port (default 8000; 0 = any free port)
  --model-id NAME        the id clients pass as "model" (default: the directory's name)
  --weights FORMAT       stored (default), q8 or q4: quantize the matrices while loading (groups of 32, f16
                         scales; see deno task generate --help)
  --gpu-path PATH        auto (default; LETHE_GPU_PATH when set), texture or storage kernels
  --kv-memory BYTES      byte cap on KV over all sequences, K/M/G suffixes (default 1G)
  --max-batch N          most sequences decoding together (default 16)
  --max-tokens N         max_tokens when a request gives none (default 256)
  --no-align-rounds      prune each sequence on its own schedule: outputs equal the CLI's even in a shared
                         batch, but every step with a round due waits for a readback (by default the batch's
                         rounds are lined up, moving some a few steps earlier, and the steps between them run
                         ahead)
  --chat-template T      deepseek-r1, chatml or llama3 (default: from tokenizer_config.json, else deepseek-r1)
  --cors ORIGIN          let pages of ORIGIN (or * for any) read the page and /model/ files (default: off)
  --no-web               serve neither the browser page at / nor the model's files at /model/ (built into
                         dist/web on start when missing or older than its sources)
  --help                 this text

Limits and auth:
  --api-key KEY          require Authorization: Bearer KEY on /v1/*, /metrics and /model/* (default: the
                         LETHE_API_KEY environment variable; none: no auth). /health and the page stay open
  --max-body BYTES       largest request body, K/M/G suffixes; 413 past it (default 4M)
  --max-queue N          most requests waiting for admission; 429 with Retry-After past it (default 64)
  --header-timeout T     a request's head must arrive within T, else 408 and the connection closes
                         (default 10s)
  --body-timeout T       a request's body must arrive within T once read, else 408 (default 30s)
  --idle-timeout T       close kept-alive connections idle for T, and writes stalled for T (default 60s)
  --request-timeout T    wall-clock limit of a request: a generation still running ends with finish_reason
                         "length", one still queued gets 503 (default 600s). T: 500ms, 10s, 2m, 1h
  --quiet-access-log     no access-log line per request on stderr
  On SIGTERM the server drains: running requests finish, new ones get 503, then it exits 0 (SIGINT: at once).

KV defaults for requests (the request fields kv_policy, kv_budget, … override them; settings not given come
from the model directory's kv_defaults.json when it has one, else from the defaults below):
${kvHelpLines(23).join("\n")}
`;

/** The KV defaults the flags give; a bad one is an error that names its flag. */
async function kvFromFlags(values: KvFlagValues, model: string): Promise<KvSettings> {
  try {
    const kv = kvSettingsFromFlags(values);
    // Requests may pick any policy, so the budget must suit the pruning ones whatever the default policy.
    checkKvOptions(resolveKvOptions(kv, await loadKvDefaults(model)));
    return { ...kv, policy: kv.policy ?? DEFAULT_POLICY };
  } catch (e) {
    throw e instanceof KvOptionError ? new Error(e.format((s) => s.flag)) : e;
  }
}

/** Parses "512M", "1G", "1048576". */
export function parseByteSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(s.trim());
  if (!m) throw new Error(`not a byte size (a number ≥ 0 with an optional K, M, G or T): ${s}`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase()]!;
  return Math.floor(Number(m[1]) * mult);
}

async function main(): Promise<void> {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      "model-id": { type: "string" },
      weights: { type: "string" },
      "gpu-path": { type: "string" },
      ...KV_FLAG_OPTIONS,
      "kv-memory": { type: "string" },
      "max-batch": { type: "string" },
      "max-tokens": { type: "string" },
      "chat-template": { type: "string" },
      "no-align-rounds": { type: "boolean" },
      cors: { type: "string" },
      "no-web": { type: "boolean" },
      "api-key": { type: "string" },
      "max-body": { type: "string" },
      "max-queue": { type: "string" },
      "header-timeout": { type: "string" },
      "body-timeout": { type: "string" },
      "idle-timeout": { type: "string" },
      "request-timeout": { type: "string" },
      "quiet-access-log": { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (v.help) {
    console.log(HELP);
    return;
  }
  const int = (name: string, s: string | undefined, def: number, min: number) => {
    if (s === undefined) return def;
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${s}`);
    return n;
  };
  const bytes = (name: string, s: string | undefined, def: number, min: number) => {
    if (s === undefined) return def;
    let n: number;
    try {
      n = parseByteSize(s);
    } catch (e) {
      throw new Error(`--${name}: ${(e as Error).message}`);
    }
    if (n < min) throw new Error(`--${name} must be at least ${min} bytes, got ${s}`);
    return n;
  };
  const duration = (name: string, def: number) => {
    const s = v[name as "idle-timeout"];
    return s === undefined ? def : parseDuration(s, `--${name}`);
  };
  const model = v.model ?? DEFAULT_MODEL_DIR;
  const kv = await kvFromFlags(v, model);
  if (v["chat-template"] !== undefined && !["deepseek-r1", "chatml", "llama3"].includes(v["chat-template"])) {
    throw new Error("--chat-template must be deepseek-r1, chatml or llama3");
  }
  // Every flag is checked before the model loads, and again against the model (startServer) before listening.
  const port = int("port", v.port, 8000, 0);
  if (port > 65535) throw new Error(`--port must be at most 65535, got ${port}`);
  const apiKey = v["api-key"] ?? Deno.env.get("LETHE_API_KEY");
  if (apiKey !== undefined && !/^[\x21-\x7e]+$/.test(apiKey)) {
    throw new Error(
      `${v["api-key"] !== undefined ? "--api-key" : "LETHE_API_KEY"} must be non-empty printable ASCII ` +
        "without spaces",
    );
  }
  const options = {
    modelId: v["model-id"],
    chatTemplate: v["chat-template"] as ChatTemplateName | undefined,
    hostname: v.host ?? "127.0.0.1",
    port,
    kvMemory: bytes("kv-memory", v["kv-memory"], 1024 ** 3, 1),
    maxBatch: int("max-batch", v["max-batch"], 16, 1),
    maxTokens: int("max-tokens", v["max-tokens"], 256, 1),
    maxQueue: int("max-queue", v["max-queue"], DEFAULT_LIMITS.maxQueue, 1),
    maxBodyBytes: bytes("max-body", v["max-body"], DEFAULT_LIMITS.maxBodyBytes, 1024),
    headerTimeoutMs: duration("header-timeout", DEFAULT_LIMITS.headerTimeoutMs),
    bodyTimeoutMs: duration("body-timeout", DEFAULT_LIMITS.bodyTimeoutMs),
    idleTimeoutMs: duration("idle-timeout", DEFAULT_LIMITS.idleTimeoutMs),
    requestTimeoutMs: duration("request-timeout", DEFAULT_LIMITS.requestTimeoutMs),
    apiKey,
    accessLog: v["quiet-access-log"] ? undefined : (line: string) => console.error(`lethe: ${line}`),
    alignRounds: !v["no-align-rounds"],
    kv,
    cors: v.cors,
  };
  const weights = parseWeightsOption(v.weights ?? "stored", "--weights");
  const envPath = Deno.env.get("LETHE_GPU_PATH") || undefined;
  const gpuPath = parseGpuPath(
    v["gpu-path"] ?? envPath ?? "auto",
    v["gpu-path"] ? "--gpu-path" : "LETHE_GPU_PATH",
  );
  const engine = await Engine.load(model, { progress: Deno.stderr.isTerminal(), weights, gpuPath });
  const web = v["no-web"] ? null : await prepareWebDir(() => import("../../tools/build_web.ts"));
  if (web) console.error(`lethe: ${web.message}`);
  const server = startServer(engine, {
    ...options,
    webDir: web?.dir ?? undefined,
    modelDir: web && !/^https?:/i.test(model) ? model : undefined,
  });
  console.error(
    `lethe: serving ${model} at ${server.url} (kv ${kv.policy}, pool ${server.scheduler.options.kvMemory} bytes, ` +
      `max batch ${server.scheduler.options.maxBatch}, max queue ${options.maxQueue}, ` +
      `${apiKey !== undefined ? "API key required on /v1/*, /metrics and /model/*" : "no API key"})`,
  );
  if (apiKey === undefined && !/^(127\.|::1$|localhost$)/.test(options.hostname)) {
    console.error(
      `lethe: warning: ${options.hostname} is reachable from other hosts and no --api-key is set`,
    );
  }
  // A line on stdout that scripts can wait for.
  console.log(`listening ${server.url}`);
  let stopping = false;
  // SIGTERM: drain (running requests finish, new ones get 503), then exit 0. SIGINT, or a second signal: at once.
  const stop = async (drain: boolean) => {
    if (stopping) {
      console.error("lethe: stopping now");
      await server.shutdown();
      Deno.exit(0);
    }
    stopping = true;
    if (drain) {
      console.error("lethe: draining: running requests finish, new ones get 503");
      await server.drain();
    } else await server.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop(false));
  Deno.addSignalListener("SIGTERM", () => stop(true));
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    // A ServerOptionError's message names its flag.
    console.error(`lethe serve: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
