/**
 * Adapter and device acquisition.
 *
 * We ask for the adapter's real limits instead of the WebGPU defaults: the defaults cap a storage binding
 * at 128 MiB and a buffer at 256 MiB, which is too small for real embeddings and KV caches on most GPUs.
 */

/** Thrown when no WebGPU adapter can be found; the message says what to install. */
export class NoGpuError extends Error {
  /** `detail` says why no adapter was found; the message adds what to install. */
  constructor(detail: string) {
    super(
      `No WebGPU adapter is available (${detail}).\n` +
        `Lethe runs on WebGPU. On a machine without a GPU, install Mesa's CPU Vulkan driver:\n` +
        `  apt-get install -y mesa-vulkan-drivers   (Debian/Ubuntu)\n` +
        `On a machine with a GPU, install its Vulkan (Linux), Metal (macOS) or D3D12 (Windows) driver.`,
    );
    this.name = "NoGpuError";
  }
}

/** The limits the engine plans with, read from the adapter. */
export interface GpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupsPerDimension: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupStorageSize: number;
  maxStorageBuffersPerShaderStage: number;
  minStorageBufferOffsetAlignment: number;
  minUniformBufferOffsetAlignment: number;
  maxUniformBufferBindingSize: number;
}

/** A device with the facts about it that kernels specialise on. */
export interface GpuDevice {
  device: GPUDevice;
  /** Human-readable adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** True when the adapter is a software (CPU) implementation. */
  isFallback: boolean;
  /** `shader-f16` is available and enabled. */
  hasF16: boolean;
  /** `timestamp-query` is available and enabled. */
  hasTimestamps: boolean;
  /**
   * Whether weights get texture copies and the texture kernels run (matvec, matmul, attention's K/V staging):
   * the one place the path is decided (see {@link GpuPath}); every op reads this flag.
   */
  useTextures: boolean;
  limits: GpuLimits;
}

/**
 * Which kernels a context uses: `"texture"` — weights as `rgba32uint` texture copies and the texture matvec /
 * K/V staging, which is several times faster on a CPU adapter (Mesa's lavapipe, SwiftShader), where a texel
 * fetch moves 16 bytes per lane while a storage load is scalar; `"storage"` — storage buffers only, the
 * path every real GPU and browser takes; `"auto"` (default) — texture on a CPU adapter, storage elsewhere.
 */
export type GpuPath = "auto" | "texture" | "storage";

/** The values {@link GpuPath} accepts, for flag and option validation. */
export const GPU_PATHS: readonly GpuPath[] = ["auto", "texture", "storage"];

/**
 * Validates a GPU path given as text (a flag, an environment variable, a library option); `what` names it in
 * the error (e.g. "--gpu-path", "LETHE_GPU_PATH").
 */
export function parseGpuPath(value: unknown, what: string): GpuPath {
  if (typeof value === "string" && (GPU_PATHS as readonly string[]).includes(value)) return value as GpuPath;
  throw new RangeError(`${what} must be one of ${GPU_PATHS.join(", ")}; got ${JSON.stringify(value)}`);
}

/** True when an adapter is a software (CPU) implementation: flagged as fallback, or named as one. */
export function isCpuAdapterInfo(isFallback: boolean, description: string): boolean {
  return isFallback || /llvmpipe|lavapipe|softpipe|swiftshader/i.test(description);
}

/** Options for {@link requestGpuDevice}. */
export interface RequestGpuOptions {
  /** Prefer a high-performance adapter (default true). */
  highPerformance?: boolean;
  /** Do not enable shader-f16 even when present (used to test the f32 paths). */
  disableF16?: boolean;
  /**
   * Milliseconds to wait for an adapter before giving up with {@link NoGpuError} (default
   * {@link DEFAULT_ADAPTER_TIMEOUT_MS}). Without a working driver some WebGPU implementations search for
   * minutes at full CPU and print nothing; the CLI reads `LETHE_ADAPTER_TIMEOUT_MS` into this.
   */
  adapterTimeoutMs?: number;
  /** Texture or storage-buffer kernels (default "auto": textures on a CPU adapter only); see {@link GpuPath}. */
  gpuPath?: GpuPath;
  /**
   * The WebGPU entry point to ask (default `navigator.gpu`); tests pass a stand-in.
   * @internal
   */
  gpu?: Pick<GPU, "requestAdapter">;
}

/**
 * How long {@link requestGpuDevice} waits for an adapter by default: a working driver answers in well
 * under a second (lavapipe ~40 ms), so 15 s only ever cuts off a search that will not succeed.
 */
export const DEFAULT_ADAPTER_TIMEOUT_MS = 15_000;

/** Acquires an adapter and a device with the adapter's real limits and the features the engine uses. */
export async function requestGpuDevice(options: RequestGpuOptions = {}): Promise<GpuDevice> {
  const gpuPath = parseGpuPath(options.gpuPath ?? "auto", "gpuPath");
  const gpu = options.gpu ?? (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) throw new NoGpuError("navigator.gpu is undefined in this runtime");
  const timeoutMs = options.adapterTimeoutMs ?? DEFAULT_ADAPTER_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new RangeError(`adapterTimeoutMs must be positive, got ${timeoutMs}`);
  let adapter: GPUAdapter | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const timeout = new Promise<"timeout">((resolve) =>
      timer = setTimeout(() => resolve("timeout"), timeoutMs)
    );
    const found = await Promise.race([
      gpu.requestAdapter({
        powerPreference: options.highPerformance === false ? "low-power" : "high-performance",
      }),
      timeout,
    ]);
    if (found === "timeout") {
      throw new NoGpuError(
        `no adapter answered within ${timeoutMs / 1000} s — usually no working GPU driver is installed`,
      );
    }
    adapter = found;
  } catch (e) {
    if (e instanceof NoGpuError) throw e;
    throw new NoGpuError(`requestAdapter failed: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  if (!adapter) throw new NoGpuError("requestAdapter returned null");

  const wanted: GPUFeatureName[] = [];
  const hasF16 = !options.disableF16 && adapter.features.has("shader-f16");
  if (hasF16) wanted.push("shader-f16");
  const hasTimestamps = adapter.features.has("timestamp-query");
  if (hasTimestamps) wanted.push("timestamp-query");

  const a = adapter.limits;
  const limits: GpuLimits = {
    maxStorageBufferBindingSize: a.maxStorageBufferBindingSize,
    maxBufferSize: a.maxBufferSize,
    maxComputeWorkgroupsPerDimension: a.maxComputeWorkgroupsPerDimension,
    maxComputeInvocationsPerWorkgroup: a.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupStorageSize: a.maxComputeWorkgroupStorageSize,
    maxStorageBuffersPerShaderStage: a.maxStorageBuffersPerShaderStage,
    minStorageBufferOffsetAlignment: a.minStorageBufferOffsetAlignment,
    minUniformBufferOffsetAlignment: a.minUniformBufferOffsetAlignment,
    maxUniformBufferBindingSize: a.maxUniformBufferBindingSize,
  };
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
    maxBufferSize: limits.maxBufferSize,
    maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
    maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
    maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupSizeX: a.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: a.maxComputeWorkgroupSizeY,
    // Without these the device keeps the default 256-byte alignments while `limits` reports the adapter's
    // (32 on lavapipe): the uniform arena's offsets then fail validation and batched dispatches are dropped.
    minUniformBufferOffsetAlignment: limits.minUniformBufferOffsetAlignment,
    minStorageBufferOffsetAlignment: limits.minStorageBufferOffsetAlignment,
  };
  const device = await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits });
  const info = adapter.info;
  const description = info.description || `${info.vendor} ${info.architecture} ${info.device}`.trim();
  const isFallback = (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;
  return {
    device,
    description,
    isFallback,
    hasF16,
    hasTimestamps,
    useTextures: gpuPath === "texture" || (gpuPath === "auto" && isCpuAdapterInfo(isFallback, description)),
    limits,
  };
}
