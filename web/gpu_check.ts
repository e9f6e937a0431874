/// <reference lib="dom" />
/**
 * Whether this browser can run the engine, said plainly: no WebGPU at all, no adapter, or an adapter whose
 * limits are too small for the model's weights.
 */

/** What the adapter offers (the limits the engine needs). */
export interface GpuSummary {
  description: string;
  fallback: boolean;
  f16: boolean;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

/** The first problem found: a message for the page. */
export class GpuProblem extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GpuProblem";
  }
}

const HOW_TO =
  "WebGPU is in Chrome and Edge 113+ (desktop; on Linux start Chrome with --enable-unsafe-webgpu " +
  "--enable-features=Vulkan), Safari 26+, and Firefox 141+ on Windows (elsewhere set dom.webgpu.enabled " +
  "in about:config)";

/** Checks navigator.gpu and asks for an adapter; throws {@link GpuProblem}. */
export async function checkWebGpu(): Promise<GpuSummary> {
  if (!globalThis.isSecureContext) {
    throw new GpuProblem(
      `this page is not a secure context (${location.origin}): browsers offer WebGPU only over https or ` +
        "on localhost — open it as http://localhost:PORT/ or http://127.0.0.1:PORT/",
    );
  }
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) throw new GpuProblem(`this browser has no WebGPU (navigator.gpu is undefined). ${HOW_TO}.`);
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    throw new GpuProblem(`WebGPU adapter request failed: ${(e as Error).message}. ${HOW_TO}.`);
  }
  if (!adapter) {
    throw new GpuProblem(
      "WebGPU is present but the browser gave no adapter (no usable GPU, or WebGPU is blocked for this " +
        `GPU/driver: see chrome://gpu). ${HOW_TO}.`,
    );
  }
  const info = adapter.info;
  return {
    description: info.description ||
      [info.vendor, info.architecture, info.device].filter(Boolean).join(" ") ||
      "unknown adapter",
    fallback: (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false,
    f16: adapter.features.has("shader-f16"),
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize,
  };
}

/** A checkpoint's largest tensor and its widest row (what one binding must hold at least), in bytes. */
export interface TensorExtent {
  largest: { name: string; bytes: number };
  widestRow: { name: string; bytes: number };
}

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(n < 1024 * 1024 ? 2 : 0)} MiB`;
}

/**
 * Compares the adapter's limits with the model's largest tensor. The engine splits a matrix into row chunks
 * that each fit a storage binding, so only a row wider than `maxStorageBufferBindingSize` (or
 * `maxBufferSize`) cannot be placed; returns a warning when the matrix will be chunked, else null.
 */
export function checkLimits(gpu: GpuSummary, t: TensorExtent): string | null {
  const limit = Math.min(gpu.maxStorageBufferBindingSize, gpu.maxBufferSize);
  if (t.widestRow.bytes > limit) {
    throw new GpuProblem(
      `this GPU's limits are too small for the model: one row of tensor ${t.widestRow.name} takes ` +
        `${mib(t.widestRow.bytes)}, ` +
        `over the adapter's maxStorageBufferBindingSize ${mib(gpu.maxStorageBufferBindingSize)} / ` +
        `maxBufferSize ${mib(gpu.maxBufferSize)}`,
    );
  }
  if (t.largest.bytes > limit) {
    return `tensor ${t.largest.name} (${mib(t.largest.bytes)}) is larger than one storage binding (${
      mib(limit)
    }): ` +
      "it will be split into row chunks";
  }
  return null;
}
