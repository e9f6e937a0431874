/**
 * Lethe: a WebGPU LLM inference engine for reasoning models with layer- and time-adaptive KV pruning.
 *
 * This entry is platform-neutral (no `Deno.*`, no `node:*`): it runs in a browser with WebGPU, loading a
 * model from a URL or from files the user picked. Under Deno, import the Deno entry (`@lethe/lethe/deno`,
 * `deno.ts`) instead: everything here plus local model directories, the terminal progress bar and the
 * OpenAI-compatible server.
 *
 * ```ts
 * import { Engine, urlSource } from "@lethe/lethe";
 * const engine = await Engine.load("https://example.com/models/lethe-reasoner-tiny/", {
 *   progress: (p) => console.log(`${p.loadedBytes}/${p.totalBytes} ${p.tensor}`),
 * });
 * const result = await engine.generate("The capital of France is", { maxTokens: 32, kv: { policy: "lethe", budget: 128 } });
 * console.log(result.text, result.stats);
 * ```
 *
 * Model files come from a {@link ModelSource}: {@link urlSource} (HTTP range requests), {@link filesSource}
 * (a browser File list or directory picker), {@link memorySource}, or a URL string.
 *
 * @module
 */
// Loading and generating.
export { Engine } from "./src/engine/engine.ts";
export type { EngineLoadOptions } from "./src/engine/engine.ts";
export type { GenerateOptions, GenerationResult, GenerationStats } from "./src/engine/generate.ts";
export type { PruneRound } from "./src/engine/rounds.ts";
export { DEFAULT_SAMPLING } from "./src/engine/sampler.ts";
export type { SamplingOptions, TokenLogprobs } from "./src/engine/sampler.ts";
export { NoGpuError } from "./src/gpu/device.ts";
export type { GpuPath } from "./src/gpu/device.ts";
export type { WeightsOption } from "./src/model/model.ts";
export type { Llama3RopeScaling, ModelConfig, ModelType, QuantizationConfig } from "./src/model/config.ts";
// Where model files come from.
export { filesSource, memorySource, urlSource } from "./src/io/source.ts";
export type { ModelSource, UrlSourceOptions } from "./src/io/source.ts";
export type { LoadProgress } from "./src/io/progress.ts";
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
  KvSettingValue,
} from "./src/kv/options.ts";
// How K and V are stored (f16 by default, f32, int8).
export { DEFAULT_KV_DTYPE, KV_DTYPES } from "./src/ops/kv_layout.ts";
export type { KvDtype } from "./src/ops/kv_layout.ts";
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
// The continuous-batching scheduler (the OpenAI-compatible server on it is Deno's: deno.ts).
export { Scheduler } from "./src/server/scheduler.ts";
export type {
  FinishReason,
  JobEvent,
  JobHandle,
  JobRequest,
  SchedulerMetrics,
  SchedulerOptions,
} from "./src/server/scheduler.ts";
