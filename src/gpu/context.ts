/**
 * GpuContext: the device plus the three things every op needs — a buffer pool, a pipeline cache and a
 * command recorder that batches many dispatches into one submit.
 *
 * Binding convention for every kernel in `wgsl/`: `@binding(0)` is the optional `var<uniform>` parameter
 * block; storage buffers follow at `@binding(1)`, `@binding(2)`, … in the order the op passes them.
 *
 * Uniforms: each dispatch's parameter block is written into a CPU-side arena; on flush the arena is uploaded
 * with one `writeBuffer` and the batch is submitted. Because queue operations are ordered, the next batch may
 * reuse the same GPU arena immediately.
 */
import { type GpuDevice, requestGpuDevice, type RequestGpuOptions } from "./device.ts";
import { BufferPool } from "./pool.ts";
import { type KernelSource, PipelineCache } from "./pipelines.ts";

/** A storage binding: a whole buffer or a byte range of one. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

/** Usage flags for ordinary storage tensors (readable back, writable from the CPU). */
export const STORAGE_USAGE: GPUBufferUsageFlags = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

const ARENA_BYTES = 1 << 20;

/** Counters of a {@link GpuContext}, for benchmarks and tests. */
export interface ContextStats {
  dispatches: number;
  submits: number;
  readbacks: number;
}

/** GPU memory objects a context made and has not seen destroyed (see {@link GpuContext.liveBuffers}). */
export interface LiveBuffers {
  /** Buffers and textures alive. */
  count: number;
  /** Their bytes (a texture counts width × height × bytes per texel). */
  bytes: number;
}

/** Bytes per texel of the formats the engine's textures use (others count 16, an upper bound). */
const TEXEL_BYTES: Partial<Record<GPUTextureFormat, number>> = {
  rgba32uint: 16,
  rgba32float: 16,
  rgba32sint: 16,
  rg32float: 8,
  r32float: 4,
  r32uint: 4,
  rgba8unorm: 4,
};

/** A WebGPU device with a buffer pool, pipeline cache and batched command recording. */
export class GpuContext {
  readonly gpu: GpuDevice;
  readonly device: GPUDevice;
  readonly pool: BufferPool;
  readonly pipelines: PipelineCache;
  readonly stats: ContextStats = { dispatches: 0, submits: 0, readbacks: 0 };

  readonly #uniformAlign: number;
  readonly #arena: GPUBuffer;
  readonly #arenaCpu = new Uint8Array(ARENA_BYTES);
  #arenaUsed = 0;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #pendingDestroy: GPUBuffer[] = [];
  // Counters only: the context holds no reference to what it counts, so nothing is kept alive by counting.
  #liveCount = 0;
  #liveBytes = 0;
  /** Bumped by destroy(): objects of an earlier device no longer count when destroyed. */
  #generation = 0;

  constructor(gpu: GpuDevice) {
    this.gpu = gpu;
    this.device = gpu.device;
    this.pool = new BufferPool(this.device, (b) => this.#track(b, b.size));
    this.pipelines = new PipelineCache(this.device);
    this.#uniformAlign = Math.max(16, gpu.limits.minUniformBufferOffsetAlignment);
    // Validation errors outside an error scope would otherwise vanish silently (a dropped dispatch).
    this.device.addEventListener("uncapturederror", (e) => {
      console.error(`WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
    });
    this.#arena = this.#track(
      this.device.createBuffer({
        size: ARENA_BYTES,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        label: "uniform-arena",
      }),
      ARENA_BYTES,
    );
  }

  /**
   * Counts `obj` as live until its `destroy()` is called (the instance's method is wrapped, so every way of
   * destroying it — directly, by the pool, by {@link destroyLater} — is seen).
   */
  #track<T extends GPUBuffer | GPUTexture>(obj: T, bytes: number): T {
    this.#liveCount++;
    this.#liveBytes += bytes;
    const destroy = obj.destroy.bind(obj);
    const generation = this.#generation;
    let live = true;
    obj.destroy = () => {
      if (live && generation === this.#generation) {
        this.#liveCount--;
        this.#liveBytes -= bytes;
      }
      live = false;
      destroy();
    };
    return obj;
  }

  /**
   * The buffers and textures this context made (its own, the pool's, and every one made through
   * {@link createBuffer}, {@link upload} or {@link createTexture}: weights, activations, KV arenas, sampler
   * ids) that are not destroyed yet. A leak check: after an engine is destroyed the count returns to what it
   * was. Objects made directly on `ctx.device` are not seen.
   */
  liveBuffers(): LiveBuffers {
    return { count: this.#liveCount, bytes: this.#liveBytes };
  }

  /** Acquires a device (see {@link requestGpuDevice}) and wraps it. */
  static async create(options: RequestGpuOptions = {}): Promise<GpuContext> {
    return new GpuContext(await requestGpuDevice(options));
  }

  /** The largest byte size one storage binding may have. */
  get maxBinding(): number {
    return this.gpu.limits.maxStorageBufferBindingSize;
  }

  /** Creates a (non-pooled) storage buffer, optionally filled with `data`. Sizes are padded to 4 bytes. */
  createBuffer(bytes: number, label: string, usage: GPUBufferUsageFlags = STORAGE_USAGE): GPUBuffer {
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    if (size > this.gpu.limits.maxBufferSize) {
      throw new Error(
        `buffer "${label}" needs ${size} bytes, over this adapter's maxBufferSize ${this.gpu.limits.maxBufferSize}`,
      );
    }
    return this.#track(this.device.createBuffer({ size, usage, label }), size);
  }

  /** Creates a texture counted by {@link liveBuffers} (weights' texture copies). */
  createTexture(descriptor: GPUTextureDescriptor): GPUTexture {
    const texture = this.device.createTexture(descriptor);
    const bpt = TEXEL_BYTES[descriptor.format] ?? 16;
    return this.#track(texture, texture.width * texture.height * texture.depthOrArrayLayers * bpt);
  }

  /** Creates a storage buffer holding `data`. */
  upload(data: ArrayBufferView, label: string, usage: GPUBufferUsageFlags = STORAGE_USAGE): GPUBuffer {
    const buffer = this.createBuffer(data.byteLength, label, usage);
    this.write(buffer, data);
    return buffer;
  }

  /** Queues a CPU → GPU write (ordered with submits; pending dispatches are flushed first). */
  write(buffer: GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
    this.flush();
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    const padded = bytes.byteLength % 4 === 0 ? bytes : (() => {
      const p = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      p.set(bytes);
      return p;
    })();
    this.device.queue.writeBuffer(buffer, byteOffset, padded);
  }

  /**
   * Records one compute dispatch. `uniforms` (if any) is bound at binding 0, `bindings` from binding 1
   * (buffers, buffer ranges, or texture views for kernels that sample textures).
   */
  dispatch(
    kernel: KernelSource,
    bindings: (Binding | GPUTextureView)[],
    workgroups: readonly [number, number?, number?],
    uniforms?: ArrayBufferView,
  ): void {
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const maxWg = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxWg || y > maxWg || z > maxWg) {
      throw new Error(
        `kernel "${kernel.name}": workgroup grid ${x}×${y}×${z} exceeds the per-dimension limit ${maxWg}`,
      );
    }
    const pipeline = this.pipelines.get(kernel);
    const entries: GPUBindGroupEntry[] = [];
    if (uniforms) {
      const bytes = uniforms.byteLength;
      if (this.#arenaUsed + bytes > ARENA_BYTES) this.flush();
      const offset = this.#arenaUsed;
      this.#arenaCpu.set(new Uint8Array(uniforms.buffer as ArrayBuffer, uniforms.byteOffset, bytes), offset);
      this.#arenaUsed += Math.ceil(bytes / this.#uniformAlign) * this.#uniformAlign;
      entries.push({ binding: 0, resource: { buffer: this.#arena, offset, size: Math.max(16, bytes) } });
    }
    bindings.forEach((b, i) => {
      const resource = b instanceof GPUTextureView
        ? b
        : b instanceof GPUBuffer
        ? { buffer: b }
        : { buffer: b.buffer, offset: b.offset, size: b.size };
      entries.push({ binding: i + 1, resource });
    });
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const pass = this.#computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    this.stats.dispatches++;
  }

  /** Records a buffer-to-buffer copy. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.#endPass();
    this.#commandEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /**
   * Records a buffer-to-texture copy of `size` = [width, height] texels to `origin` = [x, y]; buffer rows are
   * `bytesPerRow` apart (a multiple of 256).
   */
  copyToTexture(
    src: GPUBuffer,
    srcOffset: number,
    bytesPerRow: number,
    dst: GPUTexture,
    origin: [number, number],
    size: [number, number],
  ): void {
    this.#endPass();
    this.#commandEncoder().copyBufferToTexture({ buffer: src, offset: srcOffset, bytesPerRow }, {
      texture: dst,
      origin,
    }, size);
  }

  /** Submits everything recorded so far (no-op when nothing is pending). */
  flush(): void {
    this.#endPass();
    if (!this.#encoder) return;
    if (this.#arenaUsed > 0) {
      this.device.queue.writeBuffer(this.#arena, 0, this.#arenaCpu, 0, this.#arenaUsed);
      this.#arenaUsed = 0;
    }
    this.device.queue.submit([this.#encoder.finish()]);
    this.#encoder = null;
    this.stats.submits++;
    for (const b of this.#pendingDestroy) b.destroy();
    this.#pendingDestroy = [];
  }

  /**
   * Destroys `buffer` once the commands recorded so far are submitted (destroying it earlier would invalidate
   * a recorded copy or dispatch that still reads it).
   */
  destroyLater(buffer: GPUBuffer): void {
    if (this.#encoder) this.#pendingDestroy.push(buffer);
    else buffer.destroy();
  }

  /** Flushes and waits until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
  }

  /**
   * Submits the queued buffer and texture writes and waits until the GPU has consumed them. Each write holds
   * a staging copy of its bytes until then: a loader streaming a large tensor calls this every chunk so that
   * host memory holds about one chunk, not every chunk written so far.
   */
  async settleWrites(): Promise<void> {
    this.flush();
    this.device.queue.submit([]);
    await this.device.queue.onSubmittedWorkDone();
  }

  /** Copies `bytes` of `buffer` from `offset` back to the CPU (flushes pending work). */
  async read(buffer: GPUBuffer, offset = 0, bytes: number = buffer.size - offset): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.pool.acquire(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, "readback");
    this.copy(buffer, offset, staging, 0, size);
    this.flush();
    this.stats.readbacks++;
    await staging.mapAsync(GPUMapMode.READ, 0, size);
    const out = staging.getMappedRange(0, size).slice(0, bytes);
    staging.unmap();
    this.pool.release(staging);
    return out;
  }

  /** Reads a buffer back as f32 values. */
  async readF32(buffer: GPUBuffer, offset = 0, count?: number): Promise<Float32Array> {
    return new Float32Array(await this.read(buffer, offset, count === undefined ? undefined : count * 4));
  }

  /** Reads a buffer back as u32 values. */
  async readU32(buffer: GPUBuffer, offset = 0, count?: number): Promise<Uint32Array> {
    return new Uint32Array(await this.read(buffer, offset, count === undefined ? undefined : count * 4));
  }

  /** Splits `n` workgroups into an x×y grid that respects the per-dimension limit. */
  grid(n: number): [number, number] {
    const maxWg = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (n <= maxWg) return [n, 1];
    const y = Math.ceil(n / maxWg);
    return [Math.ceil(n / y), y];
  }

  /** Releases the device (and with it every buffer and texture made on it). */
  destroy(): void {
    this.#endPass();
    this.#encoder = null;
    this.#pendingDestroy = [];
    this.pool.trim();
    this.#arena.destroy();
    this.device.destroy();
    this.#generation++;
    this.#liveCount = 0;
    this.#liveBytes = 0;
  }

  #commandEncoder(): GPUCommandEncoder {
    return this.#encoder ??= this.device.createCommandEncoder();
  }

  #computePass(): GPUComputePassEncoder {
    return this.#pass ??= this.#commandEncoder().beginComputePass();
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }
}
