/**
 * Buffer pool.
 *
 * Why: creating and destroying GPU buffers is slow (allocation, zeroing, driver bookkeeping), and tests,
 * prefill and benchmarks churn through many temporaries of a few recurring sizes. The pool rounds sizes up to
 * a size class and hands released buffers back out. Reuse is safe without fences because every WebGPU queue
 * operation (writeBuffer, submit) runs in queue order: a buffer released after its last use has been
 * recorded can be rewritten by a later queue operation without disturbing work submitted earlier.
 */

/** Bytes rounded up to the pool's size class: powers of two below 1 MiB, 1/8 steps of a power of two above. */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 4) * 4);
  if (b <= 1 << 20) return 2 ** Math.ceil(Math.log2(b));
  const p = 2 ** Math.floor(Math.log2(b));
  const step = p / 8;
  return Math.ceil(b / step) * step;
}

/** Statistics of a {@link BufferPool}. */
export interface PoolStats {
  /** Bytes of all buffers the pool has created and not destroyed. */
  allocatedBytes: number;
  /** Bytes currently handed out. */
  liveBytes: number;
  /** How many acquisitions were served from the free lists. */
  reused: number;
  /** How many acquisitions created a buffer. */
  created: number;
}

/** A pool of GPU buffers keyed by usage and size class. */
export class BufferPool {
  readonly #device: GPUDevice;
  readonly #free = new Map<string, GPUBuffer[]>();
  readonly #owned = new Set<GPUBuffer>();
  readonly #stats: PoolStats = { allocatedBytes: 0, liveBytes: 0, reused: 0, created: 0 };

  readonly #onCreate: ((buffer: GPUBuffer) => void) | undefined;

  /** `onCreate` sees every buffer the pool creates (the context counts them as live). */
  constructor(device: GPUDevice, onCreate?: (buffer: GPUBuffer) => void) {
    this.#device = device;
    this.#onCreate = onCreate;
  }

  /** A buffer of at least `bytes` bytes with the given usage; its contents are undefined. */
  acquire(bytes: number, usage: GPUBufferUsageFlags, label = "pooled"): GPUBuffer {
    const size = sizeClass(bytes);
    const key = `${usage}:${size}`;
    const list = this.#free.get(key);
    const reused = list?.pop();
    if (reused) {
      this.#stats.reused++;
      this.#stats.liveBytes += size;
      return reused;
    }
    const buffer = this.#device.createBuffer({ size, usage, label });
    this.#onCreate?.(buffer);
    this.#owned.add(buffer);
    this.#stats.created++;
    this.#stats.allocatedBytes += size;
    this.#stats.liveBytes += size;
    return buffer;
  }

  /** Returns a buffer obtained from {@link acquire}; its last use must already be recorded. */
  release(buffer: GPUBuffer): void {
    if (!this.#owned.has(buffer)) {
      throw new Error(`BufferPool.release: buffer "${buffer.label}" is not from this pool`);
    }
    const key = `${buffer.usage}:${buffer.size}`;
    let list = this.#free.get(key);
    if (!list) this.#free.set(key, list = []);
    if (list.includes(buffer)) throw new Error(`BufferPool.release: buffer "${buffer.label}" released twice`);
    list.push(buffer);
    this.#stats.liveBytes -= buffer.size;
  }

  /** Destroys every free buffer (live ones stay valid). */
  trim(): void {
    for (const list of this.#free.values()) {
      for (const b of list) {
        this.#owned.delete(b);
        this.#stats.allocatedBytes -= b.size;
        b.destroy();
      }
    }
    this.#free.clear();
  }

  /** A snapshot of the pool's counters. */
  stats(): PoolStats {
    return { ...this.#stats };
  }
}
