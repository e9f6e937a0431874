/**
 * The OpenAI request formats the server accepts, validated field by field. Anything wrong becomes an
 * {@link ApiError} (HTTP 400 with an OpenAI-style body naming the offending parameter). Unknown fields are
 * ignored, as OpenAI's API does; known fields of the wrong type are errors.
 */
import type { SamplingOptions } from "../engine/sampler.ts";
import {
  checkKvOptions,
  checkKvValue,
  DEFAULT_POLICY,
  KV_SETTINGS,
  KvOptionError,
  type KvSettings,
  resolveKvOptions,
  setKvSetting,
} from "../kv/options.ts";

/** An error answered as `{ error: { message, type, param, code } }`. */
export class ApiError extends Error {
  readonly status: number;
  readonly param: string | null;
  readonly code: string | null;
  readonly type: string;

  constructor(
    message: string,
    param: string | null = null,
    code: string | null = null,
    status = 400,
    type = "invalid_request_error",
  ) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
    this.type = type;
  }

  /** The JSON response. */
  response(): Response {
    return Response.json(
      { error: { message: this.message, type: this.type, param: this.param, code: this.code } },
      { status: this.status },
    );
  }
}

/** Server-wide defaults a request may override. */
export interface RequestDefaults {
  /** Model id clients pass as `model`. */
  modelId: string;
  /** Context length (prompt + max_tokens must fit). */
  contextLength: number;
  vocabSize: number;
  /** max_tokens when the request gives none (capped by the room left in the context). */
  maxTokens: number;
  kv: KvSettings;
}

/** A validated generation request. */
export interface ParsedRequest {
  stream: boolean;
  includeUsage: boolean;
  /** `max_tokens` as given (null: default, decided once the prompt length is known). */
  maxTokens: number | null;
  sampling: SamplingOptions;
  stop: string[];
  kv: KvSettings;
  /** Extension: add the generated token ids to each choice (always on for models without a tokenizer). */
  returnTokenIds: boolean;
  /** Extension: generate max_tokens tokens whatever the model says (benchmarks). */
  ignoreEos: boolean;
  /** Choices to generate (`n`, 1 … {@link MAX_CHOICES}); they share the prompt's prefill. */
  n: number;
  /**
   * Logprobs asked for: null for none, else how many top ids per token (0 … 20) beside the chosen token's —
   * chat's `top_logprobs` once `logprobs` is true, completions' `logprobs: N`.
   */
  logprobs: number | null;
}

/** Most choices (`n`) one request may ask for: each is a sequence in the batch and a share of the KV pool. */
export const MAX_CHOICES = 16;

/** Most top logprobs per token (OpenAI's limit for chat; completions' legacy limit of 5 is raised to it). */
export const MAX_TOP_LOGPROBS = 20;

/** A completions request: the prompt is text or token ids. */
export interface CompletionRequest extends ParsedRequest {
  prompt: string | number[];
}

/** One chat message after validation. */
export interface ChatMessageIn {
  role: string;
  content: string;
}

/** A chat request. */
export interface ChatRequest extends ParsedRequest {
  messages: ChatMessageIn[];
  /**
   * Extension `parse_special_tokens`: control-token text in the messages (`<|im_end|>`, `<｜Assistant｜>`) is
   * encoded as those tokens. Default false: it is plain text, so a message cannot forge a turn boundary.
   */
  parseSpecialTokens: boolean;
}

type Json = Record<string, unknown>;

/** Parses a request body as a JSON object. */
export async function readJson(req: Request): Promise<Json> {
  let text: string;
  try {
    text = await req.text();
  } catch {
    throw new ApiError("could not read the request body", null, "invalid_body");
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new ApiError(
      `the request body is not valid JSON: ${e instanceof Error ? e.message : e}`,
      null,
      "invalid_json",
    );
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ApiError("the request body must be a JSON object", null, "invalid_json");
  }
  return body as Json;
}

const typeName = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);

function wrongType(param: string, want: string, v: unknown): never {
  throw new ApiError(`'${param}' must be ${want}, got ${typeName(v)}`, param, "invalid_type");
}

function optNumber(b: Json, k: string, lo: number, hi: number, int = false): number | undefined {
  const v = b[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) wrongType(k, int ? "an integer" : "a number", v);
  if (int && !Number.isInteger(v)) {
    throw new ApiError(`'${k}' must be an integer, got ${v}`, k, "invalid_type");
  }
  if (v < lo || v > hi) {
    throw new ApiError(`'${k}' must be in [${lo}, ${hi}], got ${v}`, k, "invalid_value");
  }
  return v;
}

function optBool(b: Json, k: string): boolean | undefined {
  const v = b[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") wrongType(k, "a boolean", v);
  return v;
}

function optString(b: Json, k: string): string | undefined {
  const v = b[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") wrongType(k, "a string", v);
  return v;
}

/**
 * OpenAI fields this server does not implement, and the values that would ask for them: a request that sets one
 * gets a 400 naming it, never an answer that silently ignored it. (`null` and the neutral values pass.)
 */
const UNSUPPORTED: [field: string, neutral: (v: unknown) => boolean][] = [
  ["tools", (v) => Array.isArray(v) && v.length === 0],
  ["tool_choice", (v) => v === "none"],
  ["functions", (v) => Array.isArray(v) && v.length === 0],
  ["function_call", (v) => v === "none"],
  ["response_format", (v) => typeof v === "object" && v !== null && (v as Json).type === "text"],
  ["best_of", (v) => v === 1],
  ["suffix", (v) => v === ""],
  ["echo", (v) => v === false],
];

function rejectUnsupported(b: Json): void {
  for (const [field, neutral] of UNSUPPORTED) {
    const v = b[field];
    if (v === undefined || v === null || neutral(v)) continue;
    throw new ApiError(
      `'${field}' is not supported by this server (got ${JSON.stringify(v)?.slice(0, 80)}); leave it out`,
      field,
      "unsupported_parameter",
    );
  }
}

/** Fields shared by both endpoints. */
function parseCommon(b: Json, d: RequestDefaults, kind: "chat" | "completion"): ParsedRequest {
  const maxTokensKeys = kind === "chat" ? ["max_tokens", "max_completion_tokens"] : ["max_tokens"];
  const model = optString(b, "model");
  if (model !== undefined && model !== d.modelId) {
    throw new ApiError(
      `the model '${model}' does not exist; this server serves '${d.modelId}'`,
      "model",
      "model_not_found",
      404,
    );
  }
  rejectUnsupported(b);
  const n = optNumber(b, "n", 1, MAX_CHOICES, true) ?? 1;
  let logprobs: number | null = null;
  if (kind === "chat") {
    const top = optNumber(b, "top_logprobs", 0, MAX_TOP_LOGPROBS, true);
    if (optBool(b, "logprobs")) logprobs = top ?? 0;
    else if (top !== undefined && top > 0) {
      throw new ApiError("'top_logprobs' needs 'logprobs': true", "top_logprobs", "invalid_value");
    }
  } else if (b.logprobs !== false) logprobs = optNumber(b, "logprobs", 0, MAX_TOP_LOGPROBS, true) ?? null;
  const minP = optNumber(b, "min_p", 0, 1) ?? 0;
  const presencePenalty = optNumber(b, "presence_penalty", -2, 2) ?? 0;
  const frequencyPenalty = optNumber(b, "frequency_penalty", -2, 2) ?? 0;
  const repetitionPenalty = optNumber(b, "repetition_penalty", 0, Number.MAX_VALUE) ?? 1;
  const logitBias = parseLogitBias(b.logit_bias, d.vocabSize);
  if (repetitionPenalty === 0) {
    throw new ApiError("'repetition_penalty' must be greater than 0", "repetition_penalty", "invalid_value");
  }
  let maxTokens: number | null = null;
  for (const k of maxTokensKeys) {
    const v = b[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isInteger(v)) wrongType(k, "an integer", v);
    if (v < 1) throw new ApiError(`'${k}' must be at least 1, got ${v}`, k, "invalid_value");
    if (v > d.contextLength) {
      throw new ApiError(
        `'${k}' is ${v}, more than the model's context length of ${d.contextLength}`,
        k,
        "invalid_value",
      );
    }
    maxTokens = v;
  }
  const stream = optBool(b, "stream") ?? false;
  let includeUsage = false;
  const so = b.stream_options;
  if (so !== undefined && so !== null) {
    if (typeof so !== "object" || Array.isArray(so)) wrongType("stream_options", "an object", so);
    includeUsage = optBool(so as Json, "include_usage") ?? false;
  }
  const temperature = optNumber(b, "temperature", 0, 2) ?? 1;
  const topP = optNumber(b, "top_p", 0, 1) ?? 1;
  if (topP === 0) throw new ApiError("'top_p' must be greater than 0", "top_p", "invalid_value");
  const topK = optNumber(b, "top_k", -1, 1e9, true) ?? 0;
  const seed = optNumber(b, "seed", -(2 ** 63), 2 ** 64, true) ?? Math.floor(Math.random() * 2 ** 32);
  let stop: string[] = [];
  const s = b.stop;
  if (typeof s === "string") stop = [s];
  else if (Array.isArray(s)) {
    if (s.length > 4) throw new ApiError("'stop' takes at most 4 sequences", "stop", "invalid_value");
    for (const x of s) if (typeof x !== "string") wrongType("stop", "a string or an array of strings", s);
    stop = s as string[];
  } else if (s !== undefined && s !== null) wrongType("stop", "a string or an array of strings", s);
  const returnTokenIds = optBool(b, "return_token_ids") ?? false;
  const ignoreEos = optBool(b, "ignore_eos") ?? false;
  return {
    stream,
    includeUsage,
    maxTokens,
    sampling: {
      temperature,
      topK: Math.max(0, topK),
      topP,
      seed: ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32,
      minP,
      presencePenalty,
      frequencyPenalty,
      repetitionPenalty,
      ...(logitBias ? { logitBias } : {}),
    },
    stop,
    kv: parseKv(b, d.kv),
    returnTokenIds,
    ignoreEos,
    n,
    logprobs,
  };
}

/** Most entries of `logit_bias` (OpenAI documents no limit; each costs nothing on the GPU, but parsing does). */
export const MAX_LOGIT_BIAS = 1024;

/** `logit_bias`: token id (a decimal string key) → a bias in [-100, 100]; null when absent or empty. */
function parseLogitBias(v: unknown, vocab: number): Record<number, number> | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) wrongType("logit_bias", "an object", v);
  const entries = Object.entries(v as Json);
  if (entries.length > MAX_LOGIT_BIAS) {
    throw new ApiError(
      `'logit_bias' has ${entries.length} entries; at most ${MAX_LOGIT_BIAS}`,
      "logit_bias",
      "invalid_value",
    );
  }
  const out: Record<number, number> = {};
  for (const [k, x] of entries) {
    const id = /^(0|[1-9][0-9]*)$/.test(k) ? Number(k) : NaN;
    if (!(id < vocab)) {
      throw new ApiError(
        `'logit_bias' key ${JSON.stringify(k)} is not a token id in [0, ${vocab})`,
        "logit_bias",
        "invalid_value",
      );
    }
    if (typeof x !== "number" || !(x >= -100 && x <= 100)) {
      throw new ApiError(
        `'logit_bias' value for token ${k} must be a number in [-100, 100], got ${JSON.stringify(x)}`,
        "logit_bias",
        "invalid_value",
      );
    }
    out[id] = x;
  }
  return entries.length > 0 ? out : null;
}

/**
 * KV extensions: one request field per setting of the schema in kv/options.ts (kv_policy, kv_budget, kv_sink,
 * kv_recent_ratio, kv_window, lethe_{tau,segments,gamma,interval}). An error names the field that is wrong,
 * as its `param` too; the budget/sink relation blames `kv_budget`.
 */
function parseKv(b: Json, defaults: KvSettings): KvSettings {
  // The server's defaults (its flags over the model's kv_defaults.json) fill what the request leaves out.
  const kv: KvSettings = { ...defaults, ...resolveKvOptions(defaults) };
  try {
    for (const s of KV_SETTINGS) {
      const v = b[s.field];
      if (v !== undefined && v !== null) setKvSetting(kv, s, checkKvValue(s, v));
    }
    checkKvOptions(resolveKvOptions(kv), kv.policy ?? DEFAULT_POLICY);
  } catch (e) {
    if (!(e instanceof KvOptionError)) throw e;
    throw new ApiError(
      e.format((s) => `'${s.field}'`),
      e.setting.field,
      e.problem === "type" ? "invalid_type" : "invalid_value",
    );
  }
  return kv;
}

/** Validates a token-id prompt. */
function tokenIds(v: unknown[], vocab: number): number[] {
  for (const x of v) {
    if (typeof x !== "number" || !Number.isInteger(x)) {
      wrongType("prompt", "a string or an array of token ids", v);
    }
    if (x < 0 || x >= vocab) {
      throw new ApiError(
        `prompt token id ${x} is outside the vocabulary [0, ${vocab})`,
        "prompt",
        "invalid_value",
      );
    }
  }
  return v as number[];
}

/** Parses a /v1/completions body. */
export function parseCompletion(b: Json, d: RequestDefaults): CompletionRequest {
  const common = parseCommon(b, d, "completion");
  let p = b.prompt;
  if (p === undefined || p === null) {
    throw new ApiError("'prompt' is required", "prompt", "missing_required_parameter");
  }
  // OpenAI allows a list of prompts; one is served per request.
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === "string" || Array.isArray(p[0]))) p = p[0];
  let prompt: string | number[];
  if (typeof p === "string") prompt = p;
  else if (Array.isArray(p)) prompt = tokenIds(p, d.vocabSize);
  else wrongType("prompt", "a string or an array of token ids", p);
  if (prompt.length === 0) throw new ApiError("'prompt' is empty", "prompt", "invalid_value");
  return { ...common, prompt };
}

/** Parses a /v1/chat/completions body. */
export function parseChat(b: Json, d: RequestDefaults): ChatRequest {
  const common = parseCommon(b, d, "chat");
  const m = b.messages;
  if (m === undefined || m === null) {
    throw new ApiError("'messages' is required", "messages", "missing_required_parameter");
  }
  if (!Array.isArray(m)) wrongType("messages", "an array", m);
  if (m.length === 0) throw new ApiError("'messages' is empty", "messages", "invalid_value");
  const messages: ChatMessageIn[] = m.map((x, i) => {
    const param = `messages[${i}]`;
    if (x === null || typeof x !== "object" || Array.isArray(x)) wrongType(param, "an object", x);
    const role = (x as Json).role;
    if (typeof role !== "string") wrongType(`${param}.role`, "a string", role);
    if (!["system", "user", "assistant", "developer"].includes(role)) {
      throw new ApiError(`${param}.role '${role}' is not supported`, `${param}.role`, "invalid_value");
    }
    const c = (x as Json).content;
    let content: string;
    if (typeof c === "string") content = c;
    else if (Array.isArray(c)) {
      // Content parts: only text parts are served.
      content = c.map((part, k) => {
        if (part?.type !== "text" || typeof part?.text !== "string") {
          throw new ApiError(
            `${param}.content[${k}] must be a text part`,
            `${param}.content`,
            "invalid_value",
          );
        }
        return part.text as string;
      }).join("");
    } else if (c === null && role === "assistant") content = "";
    else wrongType(`${param}.content`, "a string", c);
    return { role: role === "developer" ? "system" : role, content };
  });
  return { ...common, messages, parseSpecialTokens: optBool(b, "parse_special_tokens") ?? false };
}

/** Decides max_tokens once the prompt length is known; rejects prompts that do not fit the context. */
export function resolveMaxTokens(
  req: ParsedRequest,
  promptTokens: number,
  d: RequestDefaults,
  param: string,
): number {
  if (promptTokens >= d.contextLength) {
    throw new ApiError(
      `the prompt has ${promptTokens} tokens; the model's context length is ${d.contextLength}`,
      param,
      "context_length_exceeded",
    );
  }
  const room = d.contextLength - promptTokens;
  if (req.maxTokens === null) return Math.min(d.maxTokens, room);
  if (req.maxTokens > room) {
    throw new ApiError(
      `the prompt (${promptTokens} tokens) plus max_tokens (${req.maxTokens}) exceeds the model's context length of ${d.contextLength}`,
      "max_tokens",
      "context_length_exceeded",
    );
  }
  return req.maxTokens;
}
