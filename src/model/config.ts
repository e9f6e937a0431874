/**
 * Hugging Face `config.json` → a typed, validated model configuration, and the list of tensors a
 * checkpoint of that configuration must hold. Qwen2 and Llama share one decoder; their differences are data
 * (q/k/v biases, tied embeddings, RoPE theta and llama3 scaling, norm eps).
 */
import { type ModelSource, readSourceText, resolveFileSpec, sourcePath } from "../io/source.ts";
import { scaleStride, weightRowBytes } from "../gpu/weights.ts";

/** Architectures the engine runs. */
export const SUPPORTED_MODEL_TYPES: readonly ModelType[] = ["qwen2", "llama"];

/** `model_type` values the engine runs. */
export type ModelType = "qwen2" | "llama";

/** Llama 3.1 RoPE frequency scaling (`rope_scaling` with `rope_type: "llama3"`). */
export interface Llama3RopeScaling {
  /** The only scaling supported. */
  type: "llama3";
  /** `factor`: low frequencies are divided by this. */
  factor: number;
  /** `low_freq_factor`: wavelengths above original context / this are fully scaled. */
  lowFreqFactor: number;
  /** `high_freq_factor`: wavelengths below original context / this are left alone. */
  highFreqFactor: number;
  /** `original_max_position_embeddings`: the context the model was pretrained with. */
  originalMaxPositionEmbeddings: number;
}

/** Typed model configuration. */
export interface ModelConfig {
  /** `model_type`. */
  modelType: ModelType;
  /** `hidden_size`: the residual stream's width. */
  hiddenSize: number;
  /** `intermediate_size`: the MLP's inner width. */
  intermediateSize: number;
  /** `num_hidden_layers`. */
  numLayers: number;
  /** `num_attention_heads`: query heads. */
  numHeads: number;
  /** `num_key_value_heads` (default: numHeads); a divisor of numHeads (grouped-query attention). */
  numKvHeads: number;
  /** `head_dim` (default: hiddenSize / numHeads); always even. */
  headDim: number;
  /** `vocab_size`: rows of the embedding and the LM head. */
  vocabSize: number;
  /** `rms_norm_eps` (default 1e-6). */
  rmsNormEps: number;
  /** `rope_theta`: RoPE base frequency (default 10000). */
  ropeTheta: number;
  /** `rope_scaling`, or null when there is none (or it is `default`). */
  ropeScaling: Llama3RopeScaling | null;
  /** `tie_word_embeddings`: the LM head reuses the embedding (default false). */
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (always for Qwen2; Llama's `attention_bias`). */
  attentionBias: boolean;
  /** `bos_token_id`, or null when the config has none. */
  bosTokenId: number | null;
  /** All end-of-sequence ids (config's `eos_token_id` may be an int or a list). */
  eosTokenIds: number[];
  /** `max_position_embeddings`: the longest context, prompt and output together (default 131072). */
  maxPositionEmbeddings: number;
  /** `quantization`: the checkpoint's matrices are stored quantized (absent: as floats). */
  quantization?: QuantizationConfig;
}

/**
 * config.json's `quantization` entry, written by `deno task quantize` (named so that no other tool mistakes it
 * for Hugging Face's `quantization_config`):
 * `{"method": "lethe-symmetric", "weights": "q8" | "q4", "group_size": 32, "scale_dtype": "float16"}`.
 * Every matrix (embedding, projections, LM head) `W` [rows, cols] is then stored as `W` (U8
 * [rows, weightRowBytes]) and `W.scales` (F16 [rows, scaleStride]) in the layout of src/gpu/weights.ts; norms
 * and biases stay floats.
 */
export interface QuantizationConfig {
  /** Always "lethe-symmetric" (group-wise, symmetric, no zero point). */
  method: "lethe-symmetric";
  /** 8- or 4-bit values. */
  weights: "q8" | "q4";
  /** Values per group (32). */
  groupSize: 32;
  /** Scale type ("float16"). */
  scaleDtype: "float16";
}

/** The `quantization` entry of a quantized checkpoint's config.json (see {@link QuantizationConfig}). */
export function quantizationEntry(weights: "q8" | "q4"): Record<string, unknown> {
  return { method: "lethe-symmetric", weights, group_size: 32, scale_dtype: "float16" };
}

function parseQuantization(src: string, v: unknown): QuantizationConfig | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new ConfigError(`${src}: quantization must be an object, got ${JSON.stringify(v)}`);
  }
  const q = v as Record<string, unknown>;
  const want: [string, unknown[]][] = [
    ["method", ["lethe-symmetric"]],
    ["weights", ["q8", "q4"]],
    ["group_size", [32]],
    ["scale_dtype", ["float16"]],
  ];
  for (const [key, allowed] of want) {
    if (!allowed.includes(q[key])) {
      throw new ConfigError(
        `${src}: quantization.${key} must be ${allowed.map((a) => JSON.stringify(a)).join(" or ")}, got ${
          JSON.stringify(q[key])
        }`,
      );
    }
  }
  for (const key of Object.keys(q)) {
    if (!want.some(([k]) => k === key)) {
      throw new ConfigError(`${src}: quantization.${key} is not a known field`);
    }
  }
  return {
    method: "lethe-symmetric",
    weights: q.weights as "q8" | "q4",
    groupSize: 32,
    scaleDtype: "float16",
  };
}

/** A config.json the engine cannot run; the message names the file and the field. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Json = Record<string, unknown>;

/**
 * Sane bounds of the size fields, checked before anything is built per layer or per token: every real
 * checkpoint of the supported families lies far inside them (Llama-3.1-405B: 126 layers, hidden 16384,
 * intermediate 53248, 128 heads; vocabularies up to 256k), and a config outside them is corrupt or hostile
 * (`num_hidden_layers: 1e8` once made the loader build a 1.2-billion-entry tensor list and die of V8 OOM).
 */
export const CONFIG_BOUNDS: Readonly<Record<string, readonly [number, number]>> = {
  num_hidden_layers: [1, 1024],
  hidden_size: [1, 65536],
  intermediate_size: [1, 262144],
  num_attention_heads: [1, 1024],
  num_key_value_heads: [1, 1024],
  head_dim: [2, 1024],
  vocab_size: [1, 4_194_304],
  max_position_embeddings: [1, 16_777_216],
  original_max_position_embeddings: [1, 16_777_216],
};

/** Most parameters a config may describe (dense models top out near 4·10¹¹); beyond it is absurd. */
export const MAX_CONFIG_PARAMETERS = 1e12;

function positiveInt(src: string, json: Json, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (v === undefined) throw new ConfigError(`${src}: missing ${key}`);
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
    throw new ConfigError(`${src}: ${key} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  const bounds = CONFIG_BOUNDS[key];
  if (bounds && (v < bounds[0] || v > bounds[1])) {
    throw new ConfigError(`${src}: "${key}" must be an integer in [${bounds[0]}, ${bounds[1]}], got ${v}`);
  }
  return v;
}

function positiveNumber(src: string, json: Json, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (v === undefined) throw new ConfigError(`${src}: missing ${key}`);
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new ConfigError(`${src}: ${key} must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(src: string, json: Json, key: string, fallback: boolean): boolean {
  const v = json[key] ?? fallback;
  if (typeof v !== "boolean") {
    throw new ConfigError(`${src}: ${key} must be a boolean, got ${JSON.stringify(v)}`);
  }
  return v;
}

function tokenId(src: string, key: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new ConfigError(`${src}: ${key} must be a non-negative integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function parseRopeScaling(src: string, v: unknown): Llama3RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new ConfigError(`${src}: rope_scaling must be an object or null`);
  }
  const rs = v as Json;
  const type = rs.rope_type ?? rs.type;
  if (type === "default") return null;
  if (type !== "llama3") {
    throw new ConfigError(
      `${src}: rope_scaling type ${JSON.stringify(type)} is not supported (supported: llama3)`,
    );
  }
  const s = `${src}: rope_scaling`;
  const out: Llama3RopeScaling = {
    type: "llama3",
    factor: positiveNumber(s, rs, "factor"),
    lowFreqFactor: positiveNumber(s, rs, "low_freq_factor"),
    highFreqFactor: positiveNumber(s, rs, "high_freq_factor"),
    originalMaxPositionEmbeddings: positiveInt(s, rs, "original_max_position_embeddings"),
  };
  if (out.highFreqFactor <= out.lowFreqFactor) {
    throw new ConfigError(`${s}: high_freq_factor must exceed low_freq_factor`);
  }
  return out;
}

/** Parses a config.json object; `source` names it in errors. */
export function parseConfig(json: unknown, source = "config.json"): ModelConfig {
  const src = source;
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new ConfigError(`${src}: not a JSON object`);
  }
  const c = json as Json;
  const modelType = c.model_type;
  if (modelType !== "qwen2" && modelType !== "llama") {
    throw new ConfigError(
      `${src}: model_type ${JSON.stringify(modelType)} is not supported (supported: ${
        SUPPORTED_MODEL_TYPES.join(", ")
      })`,
    );
  }
  if (c.hidden_act !== undefined && c.hidden_act !== "silu") {
    throw new ConfigError(
      `${src}: hidden_act ${JSON.stringify(c.hidden_act)} is not supported (supported: silu)`,
    );
  }
  if (modelType === "qwen2" && c.use_sliding_window === true) {
    throw new ConfigError(`${src}: use_sliding_window true is not supported`);
  }
  if (modelType === "llama" && c.mlp_bias === true) {
    throw new ConfigError(`${src}: mlp_bias true is not supported`);
  }

  // Every size field is bounded first: nothing below allocates per layer or per token before these pass.
  const hiddenSize = positiveInt(src, c, "hidden_size");
  const intermediateSize = positiveInt(src, c, "intermediate_size");
  const numLayers = positiveInt(src, c, "num_hidden_layers");
  const vocabSize = positiveInt(src, c, "vocab_size");
  const maxPositionEmbeddings = positiveInt(src, c, "max_position_embeddings", 131072);
  const numHeads = positiveInt(src, c, "num_attention_heads");
  const numKvHeads = positiveInt(src, c, "num_key_value_heads", numHeads);
  if (numKvHeads > numHeads) {
    throw new ConfigError(
      `${src}: "num_key_value_heads" ${numKvHeads} exceeds "num_attention_heads" ${numHeads}`,
    );
  }
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(
      `${src}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  }
  let headDim: number;
  if (c.head_dim !== undefined && c.head_dim !== null) {
    headDim = positiveInt(src, c, "head_dim");
  } else {
    if (hiddenSize % numHeads !== 0) {
      throw new ConfigError(
        `${src}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`,
      );
    }
    headDim = hiddenSize / numHeads;
  }
  if (headDim > CONFIG_BOUNDS.head_dim[1]) {
    throw new ConfigError(
      `${src}: head dimension ${headDim} (hidden_size / num_attention_heads) exceeds ${
        CONFIG_BOUNDS.head_dim[1]
      }`,
    );
  }
  if (headDim % 2 !== 0) throw new ConfigError(`${src}: head dimension ${headDim} must be even for RoPE`);

  let attentionBias: boolean;
  if (modelType === "qwen2") attentionBias = true;
  else attentionBias = bool(src, c, "attention_bias", false);

  const tieWordEmbeddings = bool(src, c, "tie_word_embeddings", false);
  const quantization = parseQuantization(src, c.quantization);
  checkParameterCount(src, {
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    tieWordEmbeddings,
    attentionBias,
  });

  const bos = c.bos_token_id;
  const eos = c.eos_token_id;
  if (Array.isArray(eos) && eos.length > 1024) {
    throw new ConfigError(`${src}: "eos_token_id" lists ${eos.length} ids (at most 1024)`);
  }
  const eosTokenIds = eos === undefined || eos === null
    ? []
    : Array.isArray(eos)
    ? eos.map((e, i) => tokenId(src, `eos_token_id[${i}]`, e))
    : [tokenId(src, "eos_token_id", eos)];

  return {
    modelType,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps: positiveNumber(src, c, "rms_norm_eps", 1e-6),
    ropeTheta: positiveNumber(src, c, "rope_theta", 10000),
    ropeScaling: parseRopeScaling(src, c.rope_scaling),
    tieWordEmbeddings,
    attentionBias,
    bosTokenId: bos === undefined || bos === null ? null : tokenId(src, "bos_token_id", bos),
    eosTokenIds,
    maxPositionEmbeddings,
    ...(quantization ? { quantization } : {}),
  };
}

/**
 * Checks that `bos_token_id` and every `eos_token_id` name a row of the embedding (below `vocab_size`);
 * `source` names the file in the error. Model loads call it: {@link parseConfig} itself accepts such ids,
 * because shape-faithful planning checkpoints (tools/make_checkpoint.ts with `--vocab`) keep their family's
 * ids with a shrunk vocabulary, but no model can run with them.
 */
export function checkConfigTokenIds(config: ModelConfig, source = "config.json"): void {
  const check = (key: string, id: number): void => {
    if (id >= config.vocabSize) {
      throw new ConfigError(
        `${source}: "${key}" ${id} is outside the vocabulary (vocab_size ${config.vocabSize})`,
      );
    }
  };
  if (config.bosTokenId !== null) check("bos_token_id", config.bosTokenId);
  config.eosTokenIds.forEach((id, i) =>
    check(config.eosTokenIds.length > 1 ? `eos_token_id[${i}]` : "eos_token_id", id)
  );
}

/** Parameters of the weights a configuration describes (an exact integer while every field is in bounds). */
export function configParameterCount(
  c: Pick<
    ModelConfig,
    | "hiddenSize"
    | "intermediateSize"
    | "numLayers"
    | "numHeads"
    | "numKvHeads"
    | "headDim"
    | "vocabSize"
    | "tieWordEmbeddings"
    | "attentionBias"
  >,
): number {
  const h = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const perLayer = 2 * h + 2 * q * h + 2 * kv * h + 3 * c.intermediateSize * h +
    (c.attentionBias ? q + 2 * kv : 0);
  return c.vocabSize * h * (c.tieWordEmbeddings ? 1 : 2) + c.numLayers * perLayer + h;
}

function checkParameterCount(src: string, c: Parameters<typeof configParameterCount>[0]): void {
  const n = configParameterCount(c);
  if (!Number.isSafeInteger(n) || n > MAX_CONFIG_PARAMETERS) {
    throw new ConfigError(
      `${src}: the weights it describes hold ${n.toExponential(3)} parameters (${
        (n * 2).toExponential(3)
      } bytes in bf16), over the limit of ${MAX_CONFIG_PARAMETERS.toExponential(0)}`,
    );
  }
}

/**
 * Reads and parses `config.json` of a model source (or of a local directory or URL; a path or URL ending in
 * `.json` names the file itself). Errors name the file.
 */
export async function loadConfig(source: string | ModelSource): Promise<ModelConfig> {
  const spec = resolveFileSpec(source, (name) => name.endsWith(".json"));
  const file = spec.file ?? "config.json";
  const path = typeof source === "string" && spec.file !== null ? source : sourcePath(spec.source, file);
  let text: string | null;
  try {
    text = await readSourceText(spec.source, file);
  } catch (e) {
    throw new ConfigError(`${path}: cannot read (${(e as Error).message})`);
  }
  if (text === null) throw new ConfigError(`${path}: cannot read (no such file)`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  return parseConfig(json, path);
}

/** A tensor the engine needs: its HF name and shape. */
export interface TensorSpec {
  name: string;
  shape: number[];
}

/** HF tensor names of layer `i`. */
export function layerTensorNames(i: number): {
  inputNorm: string;
  q: string;
  k: string;
  v: string;
  o: string;
  qBias: string;
  kBias: string;
  vBias: string;
  postNorm: string;
  gate: string;
  up: string;
  down: string;
} {
  const p = `model.layers.${i}`;
  return {
    inputNorm: `${p}.input_layernorm.weight`,
    q: `${p}.self_attn.q_proj.weight`,
    k: `${p}.self_attn.k_proj.weight`,
    v: `${p}.self_attn.v_proj.weight`,
    o: `${p}.self_attn.o_proj.weight`,
    qBias: `${p}.self_attn.q_proj.bias`,
    kBias: `${p}.self_attn.k_proj.bias`,
    vBias: `${p}.self_attn.v_proj.bias`,
    postNorm: `${p}.post_attention_layernorm.weight`,
    gate: `${p}.mlp.gate_proj.weight`,
    up: `${p}.mlp.up_proj.weight`,
    down: `${p}.mlp.down_proj.weight`,
  };
}

/** Every tensor the engine reads for `config`, in checkpoint order, with its expected shape. */
export function expectedTensors(config: ModelConfig): TensorSpec[] {
  const floats = floatTensors(config);
  const q = config.quantization?.weights;
  if (!q) return floats;
  // A quantized checkpoint: each matrix is its packed values and its scales (src/gpu/weights.ts).
  return floats.flatMap((s) =>
    s.shape.length === 2
      ? [
        { name: s.name, shape: [s.shape[0], weightRowBytes(q, s.shape[1])] },
        { name: `${s.name}.scales`, shape: [s.shape[0], scaleStride(s.shape[1])] },
      ]
      : [s]
  );
}

/** The tensors of a float checkpoint of `config`, with their logical shapes (matrices [rows, cols]). */
export function floatTensors(config: ModelConfig): TensorSpec[] {
  const h = config.hiddenSize;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  const ff = config.intermediateSize;
  const out: TensorSpec[] = [{ name: "model.embed_tokens.weight", shape: [config.vocabSize, h] }];
  for (let i = 0; i < config.numLayers; i++) {
    const n = layerTensorNames(i);
    out.push({ name: n.inputNorm, shape: [h] });
    out.push({ name: n.q, shape: [qDim, h] });
    if (config.attentionBias) out.push({ name: n.qBias, shape: [qDim] });
    out.push({ name: n.k, shape: [kvDim, h] });
    if (config.attentionBias) out.push({ name: n.kBias, shape: [kvDim] });
    out.push({ name: n.v, shape: [kvDim, h] });
    if (config.attentionBias) out.push({ name: n.vBias, shape: [kvDim] });
    out.push({ name: n.o, shape: [h, qDim] });
    out.push({ name: n.postNorm, shape: [h] });
    out.push({ name: n.gate, shape: [ff, h] });
    out.push({ name: n.up, shape: [ff, h] });
    out.push({ name: n.down, shape: [h, ff] });
  }
  out.push({ name: "model.norm.weight", shape: [h] });
  if (!config.tieWordEmbeddings) out.push({ name: "lm_head.weight", shape: [config.vocabSize, h] });
  return out;
}

/** A checkpoint that does not match its config; `problems` lists every fault found. */
export class CheckpointError extends Error {
  readonly problems: string[];
  /** `names`: how the message names the checkpoint and the config (their paths). */
  constructor(problems: string[], names: CheckpointNames = {}) {
    super(
      `${names.checkpoint ?? "model.safetensors"} does not match ${
        names.config ?? "config.json"
      } (${problems.length} problem(s)):\n  ${problems.join("\n  ")}`,
    );
    this.name = "CheckpointError";
    this.problems = problems;
  }
}

/** How {@link CheckpointError} names the files (default `model.safetensors` and `config.json`). */
export interface CheckpointNames {
  /** The checkpoint: its single file or its index file. */
  checkpoint?: string;
  /** The config file. */
  config?: string;
}

/** What {@link validateCheckpoint} needs from a checkpoint (a SafetensorsIndex fits). */
export interface TensorShapeSource {
  info(name: string): { shape: number[] } | undefined;
}

/**
 * Checks every expected tensor is present with its shape; throws one CheckpointError listing all faults (its
 * message names the files as `names` says).
 */
export function validateCheckpoint(
  config: ModelConfig,
  index: TensorShapeSource,
  names: CheckpointNames = {},
): void {
  const problems: string[] = [];
  for (const spec of expectedTensors(config)) {
    const info = index.info(spec.name);
    if (!info) problems.push(`missing ${spec.name} [${spec.shape}]`);
    else if (info.shape.length !== spec.shape.length || info.shape.some((d, i) => d !== spec.shape[i])) {
      problems.push(`${spec.name} has shape [${info.shape}], expected [${spec.shape}]`);
    }
  }
  if (problems.length) throw new CheckpointError(problems, names);
}
