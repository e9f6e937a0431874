/**
 * Lethe: a WebGPU LLM inference engine for reasoning models with layer- and time-adaptive KV pruning.
 *
 * ```ts
 * import { Engine } from "@lethe/lethe";
 * const engine = await Engine.load("/path/to/model");
 * const result = await engine.generate("The capital of France is", { maxTokens: 32, kv: { policy: "lethe", budget: 128 } });
 * console.log(result.text, result.stats);
 * ```
 *
 * Permissions: `--allow-read` (the model directory), `--allow-env` (the GPU driver and terminal checks);
 * `--allow-net` only for {@link startServer}.
 *
 * @module
 */
// Loading and generating.
export { Engine } from "./src/engine/engine.ts";
export type { EngineLoadOptions } from "./src/engine/engine.ts";
export type { GenerateOptions, GenerationResult, GenerationStats } from "./src/engine/generate.ts";
export type { PruneRound } from "./src/engine/rounds.ts";
export { DEFAULT_SAMPLING } from "./src/engine/sampler.ts";
export type { SamplingOptions } from "./src/engine/sampler.ts";
export { NoGpuError } from "./src/gpu/device.ts";
export type { Llama3RopeScaling, ModelConfig, ModelType } from "./src/model/config.ts";
// KV policies and their settings (one schema behind the CLI, the server, kv_defaults.json and the library).
export { DEFAULT_KV_OPTIONS, POLICY_NAMES } from "./src/kv/policy.ts";
export type { KvPolicyOptions, LetheOptions, PolicyName } from "./src/kv/policy.ts";
export { KV_SETTINGS, KvOptionError, resolveKvOptions } from "./src/kv/options.ts";
export type {
  KvBound,
  KvFlagName,
  KvNamer,
  KvOptions,
  KvProblem,
  KvSetting,
  KvSettingName,
  KvSettings,
  KvSettingType,
} from "./src/kv/options.ts";
// Text.
export { applyChatTemplate, IncrementalDecoder, Tokenizer } from "./tokenizer/mod.ts";
export type {
  AddedToken,
  ChatMessage,
  ChatTemplateName,
  ChatTemplateOptions,
  DecodeOptions,
  EncodeOptions,
} from "./tokenizer/mod.ts";
// The OpenAI-compatible server.
export { startServer } from "./src/server/server.ts";
export type { RunningServer, ServerOptions } from "./src/server/server.ts";
export { Scheduler } from "./src/server/scheduler.ts";
export type {
  FinishReason,
  JobEvent,
  JobHandle,
  JobRequest,
  SchedulerMetrics,
  SchedulerOptions,
} from "./src/server/scheduler.ts";
