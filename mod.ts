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
