/**
 * The KV cache of one sequence: per layer, K and V after RoPE ([capacity, nKvHeads·headDim] values, token-major,
 * stored as f16, f32 or int8 rows: src/ops/kv_layout.ts),
 * the original position of every kept token (u32) and its policy score (f32). Layers hold different numbers of
 * tokens once a policy prunes them. Each layer's storage is a region of the context's shared {@link KvArena},
 * so that a batch of sequences can be written, staged and scored with one dispatch per layer.
 *
 * Capacity grows by 1.5× (a GPU move into a larger region, never a reallocation per step) and shrinks when a
 * pruning round compacts a layer. Memory is accounted exactly: bytes allocated and bytes live, per layer.
 * The cache keeps this bookkeeping and derives decode-time evictions from each row's policy; the kernels it
 * records (write, evict, gather) are dispatched by src/ops/kv.ts.
 */
import { type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
import {
  type EvictProtect,
  KV_WRITE_BATCH_MAX,
  kvGather,
  type KvMove,
  kvWrite,
  kvWriteBatch,
} from "../ops/kv.ts";
import {
  DEFAULT_KV_DTYPE,
  type KvDtype,
  type KvLayout,
  kvLayout,
  kvTokenLayerBytes,
} from "../ops/kv_layout.ts";
import { batchesBy } from "../util/group.ts";
import { KvArena, type KvBinding, type KvRegion } from "./arena.ts";
import type { KvPolicy, KvPolicyOptions, LayerView } from "./policy.ts";

export type { EvictProtect } from "../ops/kv.ts";
export type { KvDtype, KvLayout } from "../ops/kv_layout.ts";

/** The per-layer geometry of a KV cache and how it stores K/V. */
export interface KvShape {
  layers: number;
  nKvHeads: number;
  headDim: number;
  /** Storage format of K and V (default {@link DEFAULT_KV_DTYPE}, f16). */
  dtype?: KvDtype;
}

/** The stored-row layout of a cache of `shape`. */
export function layoutOf(shape: KvShape): KvLayout {
  return kvLayout(shape.dtype ?? DEFAULT_KV_DTYPE, shape.nKvHeads, shape.headDim);
}

/** One layer's storage: a region of the arena, `len` slots of it valid. */
export class LayerKv {
  readonly region: KvRegion;
  len = 0;
  constructor(region: KvRegion) {
    this.region = region;
  }
  /** Slots held. */
  get capacity(): number {
    return this.region.capacity;
  }
  /** K: stored rows [capacity, layout.words] (a range of the arena's buffer). */
  get k(): KvBinding {
    return this.region.k;
  }
  /** V: stored rows [capacity, layout.words]. */
  get v(): KvBinding {
    return this.region.v;
  }
  /** Original positions: u32 [capacity]. */
  get pos(): KvBinding {
    return this.region.pos;
  }
  /** Policy scores: f32 [capacity]. */
  get score(): KvBinding {
    return this.region.score;
  }
}

/** Bytes one cached token costs in one layer: K and V rows (in the shape's dtype) plus position and score. */
export function bytesPerToken(shape: KvShape): number {
  return kvTokenLayerBytes(layoutOf(shape));
}

/** The KV cache of one sequence. */
export class SequenceKv {
  readonly shape: KvShape;
  readonly layers: LayerKv[] = [];
  /** Values per K (or V) row: nKvHeads · headDim. */
  readonly row: number;
  /** How K and V rows are stored. */
  readonly layout: KvLayout;
  /** Peaks since creation (bytes). */
  peakAllocated = 0;
  peakLive = 0;

  /** The shared storage the layers' regions come from. */
  readonly arena: KvArena;

  readonly #ctx: GpuContext;

  /** A cache with room for `initialCapacity` tokens per layer, in `arena` (default: the context's shared one). */
  constructor(ctx: GpuContext, shape: KvShape, initialCapacity = 64, arena?: KvArena) {
    this.#ctx = ctx;
    this.shape = shape;
    this.row = shape.nKvHeads * shape.headDim;
    this.layout = layoutOf(shape);
    this.arena = arena ?? KvArena.of(ctx, shape.layers, this.layout);
    const a = this.arena.layout;
    if (a.dtype !== this.layout.dtype || a.words !== this.layout.words || a.values !== this.row) {
      throw new Error(
        `arena rows of ${a.values} ${a.dtype} values, cache rows of ${this.row} ${this.layout.dtype} values`,
      );
    }
    const cap = this.arena.roundCapacity(initialCapacity);
    for (let l = 0; l < shape.layers; l++) this.layers.push(this.#alloc(cap, l));
    this.#track();
  }

  /** Bytes allocated per layer. */
  allocatedPerLayer(): number[] {
    return this.layers.map((l) => l.capacity * bytesPerToken(this.shape));
  }

  /** Bytes holding valid tokens per layer. */
  livePerLayer(): number[] {
    return this.layers.map((l) => l.len * bytesPerToken(this.shape));
  }

  /** Total bytes allocated. */
  allocatedBytes(): number {
    return this.allocatedPerLayer().reduce((a, b) => a + b, 0);
  }

  /** Total bytes live. */
  liveBytes(): number {
    return this.livePerLayer().reduce((a, b) => a + b, 0);
  }

  /** Valid tokens per layer. */
  lens(): number[] {
    return this.layers.map((l) => l.len);
  }

  /** Makes room for `needed` slots in `layer`, growing by at least 1.5× (copies the valid part on the GPU). */
  ensure(layer: number, needed: number): void {
    const L = this.layers[layer];
    if (needed <= L.capacity) return;
    this.#resize(layer, this.arena.roundCapacity(Math.max(needed, Math.ceil(L.capacity * 1.5))));
  }

  /**
   * Records the append of `count` rows of K/V (rows `srcRow`.. of f32 [*, row] buffers, encoded as the cache's
   * layout) at the layer's end, with positions pos, pos+1, …
   */
  append(layer: number, kSrc: GPUBuffer, vSrc: GPUBuffer, srcRow: number, count: number, pos: number): void {
    this.ensure(layer, this.layers[layer].len + count);
    const L = this.layers[layer];
    kvWrite(this.#ctx, kSrc, vSrc, srcRow, count, this.layout, L, L.len, pos);
    L.len += count;
    this.#track();
  }

  /**
   * Records many layers' compactions (of one or many caches) with one upload of the keep lists and one gather
   * dispatch per pair of arena shards, instead of an upload and a dispatch per layer and sequence.
   */
  static compactMany(ctx: GpuContext, items: Compaction[]): void {
    for (const { kv, layer, keep } of items) {
      const len = kv.layers[layer].len;
      for (let i = 0; i < keep.length; i++) {
        if (keep[i] >= len || (i > 0 && keep[i] <= keep[i - 1])) {
          throw new Error(
            `compact: keep list must be ascending slots below ${len} (layer ${layer}, index ${i})`,
          );
        }
      }
    }
    // Every fresh region first: freeing an old one before all gathers are recorded could hand its slots
    // (a source still to be read) to a later item.
    const fresh = items.map((it) =>
      it.kv.#alloc(it.kv.arena.roundCapacity(it.keep.length + it.headroom), it.layer)
    );
    const total = items.reduce((n, it) => n + it.keep.length, 0);
    if (total > 0) {
      const all = new Uint32Array(total);
      const moves: KvMove[] = [];
      let off = 0;
      items.forEach((it, i) => {
        all.set(it.keep, off);
        if (it.keep.length > 0) {
          const src = it.kv.layers[it.layer].region;
          moves.push({
            src,
            dst: fresh[i].region,
            count: it.keep.length,
            keepOff: off,
            row: it.kv.layout.words,
          });
        }
        off += it.keep.length;
      });
      const keepBuf = ctx.upload(all, "kv-keep");
      kvGather(ctx, moves, keepBuf, false);
      ctx.destroyLater(keepBuf);
    }
    items.forEach((it, i) => {
      fresh[i].len = it.keep.length;
      it.kv.#release(it.layer, it.kv.layers[it.layer]);
      it.kv.layers[it.layer] = fresh[i];
      it.kv.#track();
    });
  }

  /** Reads every layer's positions and scores back in one transfer (pruning rounds only, never per step). */
  async views(): Promise<LayerView[]> {
    const plan = SequenceKv.planViews(this.#ctx, [this]);
    const staging = this.#ctx.pool.acquire(
      plan.bytes,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    );
    plan.record(staging, 0);
    const data = await this.#ctx.read(staging, 0, plan.bytes);
    this.#ctx.pool.release(staging);
    return plan.parse(data, 0)[0];
  }

  /**
   * Plans the readback of the positions and scores of every layer of `caches`: one pair of copies per layer
   * and arena shard (covering the caches' regions in it), not per layer and cache. A server batches its due
   * rounds and its sampled ids into one readback this way.
   */
  static planViews(ctx: GpuContext, caches: SequenceKv[]): ViewsPlan {
    // One span per shard (a shard's position buffer belongs to one layer).
    const spans: { pos: GPUBuffer; score: GPUBuffer; lo: number; hi: number; at: number }[] = [];
    const where = caches.map((kv) =>
      kv.layers.map((L) => {
        const R = L.region;
        let i = spans.findIndex((x) => x.pos === R.posBuffer);
        if (i < 0) {
          spans.push({ pos: R.posBuffer, score: R.scoreBuffer, lo: R.base, hi: R.base + L.len, at: 0 });
          i = spans.length - 1;
        }
        spans[i].lo = Math.min(spans[i].lo, R.base);
        spans[i].hi = Math.max(spans[i].hi, R.base + L.len);
        return { span: i, base: R.base, len: L.len };
      })
    );
    let bytes = 0;
    for (const x of spans) {
      x.at = bytes;
      bytes += (x.hi - x.lo) * 8;
    }
    return {
      bytes: Math.max(8, bytes),
      record(dst: GPUBuffer, offset: number): void {
        for (const x of spans) {
          const n = x.hi - x.lo;
          if (n === 0) continue;
          ctx.copy(x.pos, x.lo * 4, dst, offset + x.at, n * 4);
          ctx.copy(x.score, x.lo * 4, dst, offset + x.at + n * 4, n * 4);
        }
      },
      parse(data: ArrayBuffer, offset: number): LayerView[][] {
        return where.map((layers) =>
          layers.map(({ span, base, len }) => {
            const x = spans[span];
            const p0 = offset + x.at + (base - x.lo) * 4;
            const s0 = p0 + (x.hi - x.lo) * 4;
            return {
              len,
              positions: new Uint32Array(data.slice(p0, p0 + len * 4)),
              scores: new Float32Array(data.slice(s0, s0 + len * 4)),
            };
          })
        );
      },
    };
  }

  /** A deep copy on the GPU (same capacities, lengths and contents); benchmarks fork a prefilled cache with it. */
  clone(): SequenceKv {
    const copy = new SequenceKv(this.#ctx, this.shape, 16, this.arena);
    this.layers.forEach((L, l) => {
      copy.#release(l, copy.layers[l]);
      const fresh = copy.#alloc(L.capacity, l);
      if (L.len > 0) this.#move(L, fresh, L.len);
      fresh.len = L.len;
      copy.layers[l] = fresh;
    });
    copy.peakAllocated = copy.allocatedBytes();
    copy.peakLive = copy.liveBytes();
    return copy;
  }

  /** Frees every layer's region. */
  destroy(): void {
    this.layers.forEach((L, l) => this.#release(l, L));
    this.layers.length = 0;
  }

  /**
   * Records, for several sequences at once, one new K/V row each (row `srcRow` of f32 [*, row] buffers) in
   * `layer` at position `pos`: appended at the layer's end — or, for a row whose policy caps the layer and
   * whose layer is at that cap, over the slot the GPU evicts (the lowest score, or the oldest position, among
   * slots with sink ≤ position < pos − recentWindow + 1; `len` unchanged). One evict dispatch (if any row
   * evicts) and one write dispatch per arena shard, instead of one or two per sequence.
   */
  static appendBatch(
    ctx: GpuContext,
    layer: number,
    kSrc: GPUBuffer,
    vSrc: GPUBuffer,
    rows: AppendRow[],
  ): void {
    const evicts = rows.map((r) => r.kv.#eviction(layer, r));
    rows.forEach((r, i) => {
      if (!evicts[i]) r.kv.ensure(layer, r.kv.layers[layer].len + 1);
    });
    // Batches per destination shard, after every growth above has settled the regions.
    const items = rows.map((r, i) => ({ r, evict: evicts[i] }));
    for (const part of batchesBy(items, (x) => x.r.kv.layers[layer].region.kBuffer, KV_WRITE_BATCH_MAX)) {
      const R = part[0].r.kv.layers[layer].region;
      kvWriteBatch(
        ctx,
        kSrc,
        vSrc,
        part[0].r.kv.layout,
        R,
        part.map(({ r, evict }) => {
          const L = r.kv.layers[layer];
          return { srcRow: r.srcRow, base: L.region.base, len: L.len, pos: r.pos, evict };
        }),
      );
      for (const { r, evict } of part) {
        if (!evict) r.kv.layers[layer].len += 1;
        r.kv.#track();
      }
    }
  }

  /** What the evictor protects when `row` lands in `layer` at its policy's cap; undefined: append. */
  #eviction(layer: number, row: AppendRow): EvictProtect | undefined {
    const p = row.policy;
    if (!p) return undefined;
    const layers = this.shape.layers;
    const cap = p.decodeCap(layer, layers);
    if (cap === null || this.layers[layer].len < cap) return undefined;
    return {
      sink: p.options.sink,
      recentFrom: row.pos - p.recentWindow(layer, layers) + 1,
      byPosition: p.evictBy === "position",
    };
  }

  #alloc(capacity: number, layer: number): LayerKv {
    return new LayerKv(this.arena.alloc(layer, capacity));
  }

  /** Records the move of `count` slots of `src` to the front of `dst` (another region). */
  #move(src: LayerKv, dst: LayerKv, count: number): void {
    // The keep binding is unused by a plain move; any small buffer serves.
    const none = this.#ctx.pool.acquire(4, STORAGE_USAGE, "kv-no-keep");
    kvGather(
      this.#ctx,
      [{ src: src.region, dst: dst.region, count, keepOff: 0, row: this.layout.words }],
      none,
      true,
    );
    this.#ctx.pool.release(none);
  }

  #resize(layer: number, capacity: number): void {
    const old = this.layers[layer];
    const fresh = this.#alloc(capacity, layer);
    if (old.len > 0) this.#move(old, fresh, old.len);
    fresh.len = old.len;
    this.#release(layer, old);
    this.layers[layer] = fresh;
    this.#track();
  }

  #release(layer: number, L: LayerKv): void {
    this.arena.free(layer, L.region);
  }

  #track(): void {
    this.peakAllocated = Math.max(this.peakAllocated, this.allocatedBytes());
    this.peakLive = Math.max(this.peakLive, this.liveBytes());
  }
}

/** One layer's compaction for {@link SequenceKv.compactMany}: keep these slots (ascending), then `headroom`. */
export interface Compaction {
  kv: SequenceKv;
  layer: number;
  keep: Uint32Array;
  headroom: number;
}

/** What {@link SequenceKv.planViews} returns. */
export interface ViewsPlan {
  /** Bytes the copies write. */
  bytes: number;
  /** Records the copies into `dst` from byte `offset` (after the work that updated the scores). */
  record(dst: GPUBuffer, offset: number): void;
  /** Each cache's views from what `record` wrote, while the caches' lengths are unchanged. */
  parse(data: ArrayBuffer, offset: number): LayerView[][];
}

/** The part of a {@link KvPolicy} that decides a decode-time eviction (any KvPolicy is one). */
export type EvictionPolicy = Pick<KvPolicy, "decodeCap" | "recentWindow" | "evictBy"> & {
  readonly options: Pick<KvPolicyOptions, "sink">;
};

/** One sequence's new row for {@link SequenceKv.appendBatch}. */
export interface AppendRow {
  kv: SequenceKv;
  /** Row of the source K/V buffers. */
  srcRow: number;
  /** Original position of the new token. */
  pos: number;
  /**
   * The sequence's policy: where it caps the layer (`decodeCap`) and the layer holds that many tokens, the
   * row overwrites the slot the GPU evicts (`evictBy`, protecting `options.sink` and `recentWindow`). None:
   * the row is appended.
   */
  policy?: EvictionPolicy;
}
