/**
 * KvArena: per-layer storage shared by every sequence's KV cache on one context.
 *
 * Why: with one set of buffers per sequence and layer, every batched decode step paid per sequence for the
 * KV write, the staging of K/V for attention and the score update — each a separate dispatch or copy,
 * ~0.1 ms apiece on CPU adapters whatever its size. With every sequence's layer-l tokens in the same four
 * buffers (K, V [slots, words] stored rows in the arena's {@link KvLayout}; positions u32 [slots]; scores f32
 * [slots]), a whole batch is one write, one staging and one score pass per layer. An arena holds one storage
 * format: sequences with another KV dtype use another arena.
 *
 * A sequence's layer holds a contiguous region of slots [base, base + capacity). Regions start on an
 * alignment that keeps every byte offset a valid storage-binding offset, so one region can still be bound on
 * its own. A shard (one buffer set) grows by ×1.5 when no free range fits; past the storage-binding limit a
 * new shard starts. Memory is accounted by region (what sequences hold) and by shard (what is allocated);
 * when the last region of a shard is freed its buffers are destroyed.
 */
import type { GpuContext } from "../gpu/context.ts";
import { type KvLayout, kvTokenLayerBytes } from "../ops/kv_layout.ts";

/** A byte range of a buffer, as bound by kernels. */
export interface KvBinding {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** One buffer set of a layer's arena (internal to {@link KvArena}; exported for its type only). */
export interface KvShard {
  k: GPUBuffer;
  v: GPUBuffer;
  pos: GPUBuffer;
  score: GPUBuffer;
  slots: number;
  /** Free ranges [start, end), sorted by start, never adjacent. */
  free: [number, number][];
  used: number;
}

const shardOf = new WeakMap<KvRegion, KvShard>();

/** A region of one layer's arena: slots [base, base + capacity) of one shard. */
export class KvRegion {
  readonly base: number;
  readonly capacity: number;
  readonly #shard: KvShard;
  /** How K and V rows are stored. */
  readonly layout: KvLayout;
  /** @internal Regions come from {@link KvArena.alloc}. */
  constructor(shard: KvShard, layout: KvLayout, base: number, capacity: number) {
    this.#shard = shard;
    this.layout = layout;
    this.base = base;
    this.capacity = capacity;
    shardOf.set(this, shard);
  }
  /** The shard's K buffer (all sequences), for batched kernels; slot s of this region is `base + s`. */
  get kBuffer(): GPUBuffer {
    return this.#shard.k;
  }
  get vBuffer(): GPUBuffer {
    return this.#shard.v;
  }
  get posBuffer(): GPUBuffer {
    return this.#shard.pos;
  }
  get scoreBuffer(): GPUBuffer {
    return this.#shard.score;
  }
  /** K of this region: stored rows [capacity, layout.words] (u32 words). */
  get k(): KvBinding {
    const w = this.layout.words * 4;
    return { buffer: this.#shard.k, offset: this.base * w, size: this.capacity * w };
  }
  /** V of this region: stored rows [capacity, layout.words]. */
  get v(): KvBinding {
    const w = this.layout.words * 4;
    return { buffer: this.#shard.v, offset: this.base * w, size: this.capacity * w };
  }
  /** Positions of this region: u32 [capacity]. */
  get pos(): KvBinding {
    return { buffer: this.#shard.pos, offset: this.base * 4, size: this.capacity * 4 };
  }
  /** Scores of this region: f32 [capacity]. */
  get score(): KvBinding {
    return { buffer: this.#shard.score, offset: this.base * 4, size: this.capacity * 4 };
  }
}

const arenas = new WeakMap<GpuContext, Map<string, KvArena>>();

/** Per-layer shared KV storage for caches of one geometry and storage format on one context. */
export class KvArena {
  /** How K and V rows are stored. */
  readonly layout: KvLayout;
  /** u32 words per stored K (or V) row. */
  readonly row: number;
  /** Region starts are multiples of this many slots. */
  readonly align: number;
  /** Most slots one shard may hold (its K buffer within one storage binding). */
  readonly maxSlots: number;
  readonly #ctx: GpuContext;
  readonly #layers: KvShard[][];

  /**
   * An arena for `layers` layers of K/V rows stored as `layout`. `maxSlots` caps a shard below what the storage
   * binding limit allows (tests use it to reach the multi-shard path).
   */
  constructor(ctx: GpuContext, layers: number, layout: KvLayout, maxSlots?: number) {
    this.#ctx = ctx;
    this.layout = layout;
    const row = layout.words;
    this.row = row;
    const minAlign = ctx.gpu.limits.minStorageBufferOffsetAlignment;
    let a = 16;
    while ((a * 4) % minAlign !== 0 || (a * row * 4) % minAlign !== 0) a += 16;
    this.align = a;
    const byBinding = Math.floor(ctx.maxBinding / (row * 4) / a) * a;
    this.maxSlots = Math.min(byBinding, Math.floor((maxSlots ?? byBinding) / a) * a);
    if (this.maxSlots < a) throw new Error("a single KV row exceeds the storage binding limit");
    this.#layers = Array.from({ length: layers }, () => []);
  }

  /** The arena shared by caches of `layers` layers stored as `layout` on `ctx` (created on first use). */
  static of(ctx: GpuContext, layers: number, layout: KvLayout): KvArena {
    let byShape = arenas.get(ctx);
    if (!byShape) arenas.set(ctx, byShape = new Map());
    const key = `${layers}/${layout.nKvHeads}/${layout.headDim}/${layout.dtype}`;
    let arena = byShape.get(key);
    if (!arena) byShape.set(key, arena = new KvArena(ctx, layers, layout));
    return arena;
  }

  /** Capacity rounded up to the region alignment. */
  roundCapacity(n: number): number {
    return Math.max(this.align, Math.ceil(n / this.align) * this.align);
  }

  /** A region of `capacity` slots (a multiple of `align`) in `layer`; grows or adds a shard when none fits. */
  alloc(layer: number, capacity: number): KvRegion {
    if (capacity % this.align !== 0) {
      throw new Error(`region capacity ${capacity} is not a multiple of ${this.align}`);
    }
    if (capacity > this.maxSlots) {
      throw new Error(
        `KV cache layer ${layer} would need ${capacity} tokens (${capacity * this.row * 4} bytes per K/V ` +
          `buffer), over the adapter's storage binding limit ${this.#ctx.maxBinding}`,
      );
    }
    const shards = this.#layers[layer];
    for (const s of shards) {
      const base = take(s, capacity);
      if (base !== null) return new KvRegion(s, this.layout, base, capacity);
    }
    // Grow the last shard if the binding limit allows, else start a new one.
    const last = shards[shards.length - 1];
    if (last) {
      const tail = last.free.length > 0 && last.free[last.free.length - 1][1] === last.slots
        ? last.free[last.free.length - 1][1] - last.free[last.free.length - 1][0]
        : 0;
      const want = Math.max(Math.ceil(last.slots * 1.5), last.slots - tail + capacity);
      const slots = Math.min(this.maxSlots, Math.ceil(want / this.align) * this.align);
      if (slots - last.slots + tail >= capacity) {
        this.#grow(layer, last, slots);
        return new KvRegion(last, this.layout, take(last, capacity)!, capacity);
      }
    }
    const s = this.#shard(layer, Math.min(this.maxSlots, Math.max(capacity, 16 * this.align)));
    shards.push(s);
    return new KvRegion(s, this.layout, take(s, capacity)!, capacity);
  }

  /** Returns a region's slots; work already recorded on them still runs first (queue order). */
  free(layer: number, r: KvRegion): void {
    const s = shardOf.get(r)!;
    give(s, r.base, r.base + r.capacity);
    if (s.used === 0) {
      for (const b of [s.k, s.v, s.pos, s.score]) this.#ctx.destroyLater(b);
      const shards = this.#layers[layer];
      shards.splice(shards.indexOf(s), 1);
    }
  }

  /** Bytes of every shard's buffers. */
  allocatedBytes(): number {
    let slots = 0;
    for (const shards of this.#layers) for (const s of shards) slots += s.slots;
    return slots * kvTokenLayerBytes(this.layout);
  }

  /** Slots held by regions, per layer. */
  usedSlots(): number[] {
    return this.#layers.map((shards) => shards.reduce((n, s) => n + s.used, 0));
  }

  #buffers(layer: number, slots: number) {
    const rowBytes = this.row * 4;
    return {
      k: this.#ctx.createBuffer(slots * rowBytes, `kv-k${layer}`),
      v: this.#ctx.createBuffer(slots * rowBytes, `kv-v${layer}`),
      pos: this.#ctx.createBuffer(slots * 4, `kv-pos${layer}`),
      score: this.#ctx.createBuffer(slots * 4, `kv-score${layer}`),
    };
  }

  #shard(layer: number, slots: number): KvShard {
    return { ...this.#buffers(layer, slots), slots, free: [[0, slots]], used: 0 };
  }

  /** Replaces a shard's buffers by larger ones holding the same contents (regions keep their slots). */
  #grow(layer: number, s: KvShard, slots: number): void {
    const fresh = this.#buffers(layer, slots);
    const rowBytes = this.row * 4;
    const ctx = this.#ctx;
    ctx.copy(s.k, 0, fresh.k, 0, s.slots * rowBytes);
    ctx.copy(s.v, 0, fresh.v, 0, s.slots * rowBytes);
    ctx.copy(s.pos, 0, fresh.pos, 0, s.slots * 4);
    ctx.copy(s.score, 0, fresh.score, 0, s.slots * 4);
    for (const b of [s.k, s.v, s.pos, s.score]) ctx.destroyLater(b);
    Object.assign(s, fresh);
    give(s, s.slots, slots, false);
    s.slots = slots;
  }
}

/** First fit: takes `n` slots from the shard's free list, or returns null. */
function take(s: KvShard, n: number): number | null {
  for (let i = 0; i < s.free.length; i++) {
    const [a, b] = s.free[i];
    if (b - a < n) continue;
    if (b - a === n) s.free.splice(i, 1);
    else s.free[i] = [a + n, b];
    s.used += n;
    return a;
  }
  return null;
}

/** Returns [a, b) to the free list, merging neighbours. */
function give(s: KvShard, a: number, b: number, used = true): void {
  if (used) s.used -= b - a;
  let i = 0;
  while (i < s.free.length && s.free[i][0] < a) i++;
  s.free.splice(i, 0, [a, b]);
  if (i + 1 < s.free.length && s.free[i][1] === s.free[i + 1][0]) {
    s.free[i][1] = s.free[i + 1][1];
    s.free.splice(i + 1, 1);
  }
  if (i > 0 && s.free[i - 1][1] === s.free[i][0]) {
    s.free[i - 1][1] = s.free[i][1];
    s.free.splice(i, 1);
  }
}
