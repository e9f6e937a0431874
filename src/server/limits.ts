/**
 * The server's limits: their defaults, flag parsing (durations, sizes), the startup check that refuses a
 * configuration that could serve nothing (naming the option and its flag), request ids, and a bounded,
 * yielding token count for huge text prompts.
 */
import type { Engine } from "../engine/engine.ts";
import {
  checkKvOptions,
  DEFAULT_POLICY,
  KvOptionError,
  type KvSettings,
  resolveKvOptions,
} from "../kv/options.ts";
import { Scheduler } from "./scheduler.ts";
import { ApiError } from "./protocol.ts";

/** Default limits of the server (library and `deno task serve`). */
export const DEFAULT_LIMITS = {
  /** Request body cap: a 128K-token prompt as text or as token ids is well under 2 MB of JSON. */
  maxBodyBytes: 4 * 1024 * 1024,
  /** Request head cap (request line and headers). */
  maxHeaderBytes: 16 * 1024,
  /** Head deadline: a real client sends its head in one packet. */
  headerTimeoutMs: 10_000,
  /** Body deadline: 4 MiB at ~140 KB/s. */
  bodyTimeoutMs: 30_000,
  /** Kept-alive connections idle this long close (and a write stalled this long). */
  idleTimeoutMs: 60_000,
  /** Wall-clock limit of one request, queue time included. */
  requestTimeoutMs: 600_000,
  /** Requests waiting for admission: 4 × the default batch. */
  maxQueue: 64,
  /** Seconds a 429 or 503 asks the client to wait (Retry-After). */
  retryAfterSeconds: 2,
} as const;

/**
 * A server option that cannot work; `option` is its library name, `flag` its `deno task serve` flag, which the
 * message names (`--kv-memory is 0 bytes: …`).
 */
export class ServerOptionError extends Error {
  readonly option: string;
  readonly flag: string;

  constructor(option: string, flag: string, message: string) {
    super(message);
    this.option = option;
    this.flag = flag;
  }
}

/** Parses "10s", "500ms", "2m", "1h" or a plain number of seconds into milliseconds; throws on anything else. */
export function parseDuration(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!m) {
    throw new ServerOptionError(
      flag,
      flag,
      `${flag} must be a duration such as 10s, 500ms or 2m, got "${text}"`,
    );
  }
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s").toLowerCase() as "ms"];
  const ms = Number(m[1]) * mult;
  if (!(ms >= 1) || !Number.isFinite(ms)) {
    throw new ServerOptionError(flag, flag, `${flag} must be at least 1ms, got "${text}"`);
  }
  return Math.round(ms);
}

/** What {@link checkServerConfig} checks. */
export interface ServerConfig {
  kvMemory: number;
  maxBatch: number;
  maxTokens: number;
  maxQueue: number;
  maxBodyBytes: number;
  maxHeaderBytes: number;
  headerTimeoutMs: number;
  bodyTimeoutMs: number;
  idleTimeoutMs: number;
  requestTimeoutMs: number;
  apiKey: string | undefined;
  /** The server's KV defaults as given (the model's kv_defaults.json fills the rest). */
  kv: KvSettings | undefined;
}

const FLAGS: Record<keyof ServerConfig, string> = {
  kvMemory: "--kv-memory",
  maxBatch: "--max-batch",
  maxTokens: "--max-tokens",
  maxQueue: "--max-queue",
  maxBodyBytes: "--max-body",
  maxHeaderBytes: "maxHeaderBytes",
  headerTimeoutMs: "--header-timeout",
  bodyTimeoutMs: "--body-timeout",
  idleTimeoutMs: "--idle-timeout",
  requestTimeoutMs: "--request-timeout",
  apiKey: "--api-key",
  kv: "--kv",
};

/**
 * Refuses a configuration under which the server could serve nothing, or that is malformed: a KV pool that
 * cannot hold one minimal request (a 1-token prompt and 1 token, default policy), KV defaults that every
 * request would inherit and fail on (budget/sink through the KV schema), a budget beyond the model's context,
 * a default policy whose steady cache of one sequence exceeds the pool, non-positive counts, sizes and
 * timeouts, an empty or unprintable API key. Throws {@link ServerOptionError}.
 */
export function checkServerConfig(engine: Engine, c: ServerConfig): void {
  const fail = (k: keyof ServerConfig, problem: string): never => {
    throw new ServerOptionError(k, FLAGS[k], `${FLAGS[k]} ${problem}`);
  };
  const positiveInt = (k: keyof ServerConfig, min = 1) => {
    const v = c[k] as number;
    if (!Number.isSafeInteger(v) || v < min) fail(k, `must be an integer ≥ ${min}, got ${v}`);
  };
  positiveInt("kvMemory");
  positiveInt("maxBatch");
  positiveInt("maxTokens");
  positiveInt("maxQueue");
  positiveInt("maxBodyBytes", 1024);
  positiveInt("maxHeaderBytes", 1024);
  for (const k of ["headerTimeoutMs", "bodyTimeoutMs", "idleTimeoutMs", "requestTimeoutMs"] as const) {
    const v = c[k];
    if (!Number.isFinite(v) || v < 1 || v > 2 ** 31 - 1) {
      fail(k, `must be between 1ms and 24 days, got ${v} ms`);
    }
  }
  if (c.apiKey !== undefined && !/^[\x21-\x7e]+$/.test(c.apiKey)) {
    fail(
      "apiKey",
      "must be non-empty printable ASCII without spaces (it travels in an Authorization header)",
    );
  }
  const config = engine.model.config;
  let kv: ReturnType<typeof resolveKvOptions>;
  try {
    kv = resolveKvOptions(c.kv, engine.kvDefaults);
    checkKvOptions(kv);
  } catch (e) {
    if (!(e instanceof KvOptionError)) throw e;
    throw new ServerOptionError(`kv.${e.setting.name}`, e.setting.flag, e.format((s) => s.flag));
  }
  // Only a budget given explicitly: the documented default may exceed a small model's context harmlessly.
  if (c.kv?.budget !== undefined && kv.budget > config.maxPositionEmbeddings) {
    throw new ServerOptionError(
      "kv.budget",
      "--kv-budget",
      `--kv-budget ${kv.budget} is more than the model's context of ${config.maxPositionEmbeddings} tokens: no cache ever reaches it`,
    );
  }
  const policy = { ...c.kv, ...kv, policy: c.kv?.policy ?? DEFAULT_POLICY } as KvSettings;
  const minimum = Scheduler.minimumBytes(engine, 1, 1, policy);
  if (c.kvMemory < minimum) {
    fail(
      "kvMemory",
      `is ${c.kvMemory} bytes: the smallest request (1 prompt token, 1 generated, kv ${policy.policy}) needs ${minimum}`,
    );
  }
  const steady = engine.policy(policy).reserveTokens(config.numLayers);
  if (steady !== null) {
    const dtype = engine.policy(policy).options.dtype;
    const bytes = engine.kvSlots(steady, dtype) * engine.kvTokenBytes(dtype);
    if (bytes > c.kvMemory) {
      throw new ServerOptionError(
        "kv.budget",
        "--kv-budget",
        `--kv-budget ${kv.budget} (kv ${policy.policy}) reserves ${bytes} bytes of KV per sequence; --kv-memory holds ${c.kvMemory}`,
      );
    }
  }
}

/** A client's X-Request-Id when it is sane (1–128 of A–Z a–z 0–9 . _ : -), else a fresh one. */
export function requestId(given: string | null): string {
  if (given !== null && /^[A-Za-z0-9._:-]{1,128}$/.test(given)) return given;
  const b = crypto.getRandomValues(new Uint8Array(12));
  return `req-${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
}

/** Characters a text prompt is encoded in at once; longer ones are counted in pieces first. */
export const PROMPT_PIECE_CHARS = 16 * 1024;

/**
 * Rejects a text prompt far past the context without freezing the event loop: a prompt longer than
 * {@link PROMPT_PIECE_CHARS} is counted piece by piece, yielding to the event loop (so the scheduler's other
 * streams go on) between pieces, and gets a 400 `context_length_exceeded` as soon as its pieces pass twice the
 * context (cutting text into pieces changes a token count by a little at each cut, never by 2×). A prompt that
 * passes is encoded whole by the caller, exactly as before.
 */
export async function checkPromptSize(
  texts: readonly string[],
  encode: (piece: string) => number,
  contextLength: number,
  param: string,
): Promise<void> {
  const chars = texts.reduce((n, t) => n + t.length, 0);
  if (chars <= PROMPT_PIECE_CHARS) return;
  const limit = 2 * contextLength;
  let tokens = 0;
  for (const text of texts) {
    for (let i = 0; i < text.length;) {
      let j = Math.min(text.length, i + PROMPT_PIECE_CHARS);
      // Do not cut a surrogate pair.
      if (j < text.length && (text.charCodeAt(j) & 0xfc00) === 0xdc00) j++;
      tokens += encode(text.slice(i, j));
      i = j;
      if (tokens >= limit) {
        throw new ApiError(
          `the prompt has more than ${limit} tokens (${chars} characters); the model's context length is ${contextLength}`,
          param,
          "context_length_exceeded",
        );
      }
      await new Promise((r) => setTimeout(r, 0));
    }
  }
}
