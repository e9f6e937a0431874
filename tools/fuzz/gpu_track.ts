/**
 * Counts the GPU buffers and textures a context creates and destroys, so that the fuzzer can tell what a case
 * left behind. Wraps the device's createBuffer/createTexture (an own property shadowing the prototype's) and
 * each object's destroy; buffers the pool creates are marked so that its free lists are not counted as leaks.
 */
import type { GpuContext } from "../../src/gpu/context.ts";

/** A live object and what it is. */
interface Tracked {
  object: GPUBuffer | GPUTexture;
  label: string;
  bytes: number;
  /** Created by the buffer pool (recycled, not owned by a case). */
  pooled: boolean;
  /** Creation sequence number. */
  serial: number;
}

const TEXEL_BYTES: Record<string, number> = { rgba32uint: 16, rgba32float: 16, r32float: 4, r32uint: 4 };

/** Live-object bookkeeping for one context. */
export class GpuTracker {
  readonly #live = new Map<GPUBuffer | GPUTexture, Tracked>();
  #serial = 0;

  /** Instruments `ctx` (once). */
  constructor(ctx: GpuContext) {
    const device = ctx.device;
    const createBuffer = device.createBuffer.bind(device);
    const createTexture = device.createTexture.bind(device);
    let inPool = false;
    const track = <T extends GPUBuffer | GPUTexture>(object: T, label: string, bytes: number): T => {
      const entry: Tracked = { object, label, bytes, pooled: inPool, serial: ++this.#serial };
      this.#live.set(object, entry);
      const destroy = object.destroy.bind(object);
      object.destroy = () => {
        this.#live.delete(object);
        destroy();
      };
      return object;
    };
    device.createBuffer = (d: GPUBufferDescriptor): GPUBuffer =>
      track(createBuffer(d), d.label ?? "", Number(d.size));
    device.createTexture = (d: GPUTextureDescriptor): GPUTexture => {
      const size = d.size as number[] | GPUExtent3DDict;
      const [w, h, z] = Array.isArray(size)
        ? [size[0] ?? 1, size[1] ?? 1, size[2] ?? 1]
        : [size.width, size.height ?? 1, size.depthOrArrayLayers ?? 1];
      return track(createTexture(d), d.label ?? "", w * h * z * (TEXEL_BYTES[d.format] ?? 4));
    };
    const pool = ctx.pool;
    const acquire = pool.acquire.bind(pool);
    pool.acquire = (bytes: number, usage: GPUBufferUsageFlags, label?: string): GPUBuffer => {
      inPool = true;
      try {
        return acquire(bytes, usage, label);
      } finally {
        inPool = false;
      }
    };
  }

  /** A mark: objects created after it are the case's. */
  mark(): number {
    return this.#serial;
  }

  /** Objects created after `mark` and still alive (pool-owned ones left out). */
  since(mark: number): Tracked[] {
    return [...this.#live.values()].filter((t) => t.serial > mark && !t.pooled);
  }

  /** Labels of the objects alive now that were created up to `mark` (pool's left out). */
  labelsUpTo(mark: number): Set<string> {
    const out = new Set<string>();
    for (const t of this.#live.values()) if (t.serial <= mark && !t.pooled) out.add(t.label);
    return out;
  }

  /** Number of live objects (pool's included). */
  get liveCount(): number {
    return this.#live.size;
  }
}

/** Labels of a model's own objects: weight tensors (and their chunks and textures), RoPE frequencies. */
export function isModelObject(label: string): boolean {
  return /^(model\.|lm_head\.|rope_inv_freq)/.test(label);
}

/** `ctx.liveBuffers()` when another engineer's GpuContext has it: a count, or the size of what it returns. */
export function liveBuffers(ctx: GpuContext): number | null {
  const fn = (ctx as unknown as { liveBuffers?: () => unknown }).liveBuffers;
  if (typeof fn !== "function") return null;
  const v = fn.call(ctx);
  if (typeof v === "number") return v;
  if (Array.isArray(v)) return v.length;
  if (v instanceof Map || v instanceof Set) return v.size;
  if (v !== null && typeof v === "object") {
    const o = v as { count?: unknown; buffers?: unknown; length?: unknown; size?: unknown };
    for (const x of [o.count, o.buffers, o.length, o.size]) if (typeof x === "number") return x;
  }
  return null;
}
