/**
 * Lethe: a WebGPU LLM inference engine for reasoning models with layer- and time-adaptive KV pruning.
 *
 * @module
 */
export { GpuContext, STORAGE_USAGE } from "./src/gpu/context.ts";
export type { Binding, ContextStats } from "./src/gpu/context.ts";
export { NoGpuError, requestGpuDevice } from "./src/gpu/device.ts";
export type { GpuDevice, GpuLimits, RequestGpuOptions } from "./src/gpu/device.ts";
export { BufferPool } from "./src/gpu/pool.ts";
export type { PoolStats } from "./src/gpu/pool.ts";
export { PipelineCache } from "./src/gpu/pipelines.ts";
export type { KernelSource } from "./src/gpu/pipelines.ts";
export { destroyWeight, uploadWeight } from "./src/gpu/weights.ts";
export type { Weight, WeightChunk } from "./src/gpu/weights.ts";
export type { DType } from "./src/dtype.ts";
export { buildPolicy, DEFAULT_SAMPLING, Engine, resolveKvOptions } from "./src/generate.ts";
export type {
  GenerateOptions,
  GenerationResult,
  GenerationStats,
  KvOptions,
  KvSettings,
  PruneRound,
  SamplingOptions,
} from "./src/generate.ts";
export { Forward } from "./src/model/forward.ts";
export type { SequenceState } from "./src/model/forward.ts";
export { GpuModel } from "./src/model/model.ts";
export type { LayerWeights, LoadOptions, ModelWeights } from "./src/model/model.ts";
export { loadConfig, parseConfig, SUPPORTED_MODEL_TYPES } from "./src/model/config.ts";
export type { ModelConfig } from "./src/model/config.ts";
export { SafetensorsError, SafetensorsIndex, writeSafetensors } from "./src/model/safetensors.ts";
export { KvArena, KvRegion } from "./src/kv/arena.ts";
export type { KvBinding, KvShard } from "./src/kv/arena.ts";
export { bytesPerToken, LayerKv, SequenceKv } from "./src/kv/cache.ts";
export type { AppendRow, Compaction, EvictProtect, KvShape, ViewsPlan } from "./src/kv/cache.ts";
export { DEFAULT_KV_OPTIONS, POLICY_NAMES } from "./src/kv/policy.ts";
export { KV_DEFAULTS_FILE, loadKvDefaults, parseKvDefaults } from "./src/kv/defaults.ts";
export type {
  KvPolicy,
  KvPolicyOptions,
  LayerView,
  LetheOptions,
  PolicyName,
  PruneDecision,
} from "./src/kv/policy.ts";
export { createPolicy } from "./src/kv/policies/mod.ts";
export { applyChatTemplate, IncrementalDecoder, Tokenizer } from "./tokenizer/mod.ts";
export type { ChatMessage, ChatTemplateName } from "./tokenizer/mod.ts";
export { startServer } from "./src/server/server.ts";
export type { RunningServer, ServerOptions } from "./src/server/server.ts";
export { Scheduler } from "./src/server/scheduler.ts";
