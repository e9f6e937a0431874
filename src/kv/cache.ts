/**
 * The KV cache of one sequence: per layer, K and V after RoPE (f32 [capacity, nKvHeads·headDim], token-major),
 * the original position of every kept token (u32) and its policy score (f32). Layers hold different numbers of
 * tokens once a policy prunes them.
 *
 * Capacity grows by 1.5× (GPU copies into a larger buffer, never a reallocation per step) and shrinks when a
 * pruning round compacts a layer. Memory is accounted exactly: bytes allocated and bytes live, per layer.
 */
import writeCode from "../../wgsl/kv.wgsl" with { type: "text" };
import evictCode from "../../wgsl/kv_evict.wgsl" with { type: "text" };
import gatherCode from "../../wgsl/kv_gather.wgsl" with { type: "text" };
import type { GpuContext } from "../gpu/context.ts";
import type { LayerView } from "./policy.ts";

const WRITE = { name: "kv_write", code: writeCode, entryPoint: "write" };
const EVICT = { name: "kv_evict", code: evictCode };
const GATHER = { name: "kv_gather", code: gatherCode };

/** The per-layer geometry of a KV cache. */
export interface KvShape {
  layers: number;
  nKvHeads: number;
  headDim: number;
}

/** One layer's storage. `len` slots are valid. */
export interface LayerKv {
  k: GPUBuffer;
  v: GPUBuffer;
  pos: GPUBuffer;
  score: GPUBuffer;
  capacity: number;
  len: number;
}

/** Bytes one cached token costs in one layer: K and V rows plus position and score. */
export function bytesPerToken(shape: KvShape): number {
  return 2 * shape.nKvHeads * shape.headDim * 4 + 8;
}

const round16 = (n: number) => Math.max(16, Math.ceil(n / 16) * 16);

/** The KV cache of one sequence. */
export class SequenceKv {
  readonly shape: KvShape;
  readonly layers: LayerKv[] = [];
  /** Floats per K (or V) row. */
  readonly row: number;
  /** u32 [layers]: the slot the evictor chose, per layer. */
  readonly victims: GPUBuffer;
  /** Peaks since creation (bytes). */
  peakAllocated = 0;
  peakLive = 0;

  readonly #ctx: GpuContext;

  constructor(ctx: GpuContext, shape: KvShape, initialCapacity = 64) {
    this.#ctx = ctx;
    this.shape = shape;
    this.row = shape.nKvHeads * shape.headDim;
    const maxRows = Math.floor(ctx.maxBinding / (this.row * 4));
    if (maxRows < 1) throw new Error("a single KV row exceeds the storage binding limit");
    for (let l = 0; l < shape.layers; l++) this.layers.push(this.#alloc(round16(initialCapacity), l));
    this.victims = ctx.createBuffer(shape.layers * 4, "kv-victims");
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
    this.#resize(layer, round16(Math.max(needed, Math.ceil(L.capacity * 1.5))));
  }

  /**
   * Records the append of `count` rows of K/V (rows `srcRow`.. of f32 [*, row] buffers) at the layer's end,
   * with positions pos, pos+1, …
   */
  append(layer: number, kSrc: GPUBuffer, vSrc: GPUBuffer, srcRow: number, count: number, pos: number): void {
    this.ensure(layer, this.layers[layer].len + count);
    const L = this.layers[layer];
    this.#write(layer, kSrc, vSrc, srcRow, count, L.len, pos, false);
    L.len += count;
    this.#track();
  }

  /**
   * Records the overwrite of one evicted slot by a new token: the GPU picks the victim — the lowest score (or
   * position) among slots with sink ≤ position < recentFrom — and writes the row there. `len` is unchanged.
   */
  appendEvicting(
    layer: number,
    kSrc: GPUBuffer,
    vSrc: GPUBuffer,
    srcRow: number,
    pos: number,
    protect: { sink: number; recentFrom: number; byPosition: boolean },
  ): void {
    const L = this.layers[layer];
    this.#ctx.dispatch(
      EVICT,
      [L.pos, L.score, this.victims],
      [1],
      new Uint32Array([
        L.len,
        protect.sink,
        Math.max(0, protect.recentFrom),
        protect.byPosition ? 1 : 0,
        layer,
        0,
        0,
        0,
      ]),
    );
    this.#write(layer, kSrc, vSrc, srcRow, 1, 0, pos, true);
  }

  /** Keeps only the slots in `keep` (ascending) of `layer`, compacted to the front; capacity shrinks to fit. */
  compact(layer: number, keep: Uint32Array, headroom = 16): void {
    const old = this.layers[layer];
    for (let i = 0; i < keep.length; i++) {
      if (keep[i] >= old.len || (i > 0 && keep[i] <= keep[i - 1])) {
        throw new Error(
          `compact: keep list must be ascending slots below ${old.len} (layer ${layer}, index ${i})`,
        );
      }
    }
    const fresh = this.#alloc(round16(keep.length + headroom), layer);
    if (keep.length > 0) {
      const keepBuf = this.#ctx.upload(keep, "kv-keep");
      const [x, y] = this.#ctx.grid(Math.ceil((keep.length * this.row) / 256));
      this.#ctx.dispatch(
        GATHER,
        [keepBuf, old.k, old.v, old.pos, old.score, fresh.k, fresh.v, fresh.pos, fresh.score],
        [x, y],
        new Uint32Array([this.row, keep.length, 0, 0]),
      );
      this.#ctx.destroyLater(keepBuf);
    }
    fresh.len = keep.length;
    this.#release(old);
    this.layers[layer] = fresh;
    this.#track();
  }

  /** Reads every layer's positions and scores back in one transfer (pruning rounds only, never per step). */
  async views(): Promise<LayerView[]> {
    const bytes = this.viewBytes();
    const staging = this.#ctx.pool.acquire(
      bytes,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    );
    this.copyViews(staging, 0);
    const data = await this.#ctx.read(staging, 0, bytes);
    this.#ctx.pool.release(staging);
    return this.parseViews(data, 0);
  }

  /** Bytes `copyViews` writes: a position and a score per live token (at least 8, so a copy is never empty). */
  viewBytes(): number {
    return Math.max(8, this.layers.reduce((s, L) => s + L.len, 0) * 8);
  }

  /**
   * Records copies of every layer's positions then scores into `dst` at `offset` (after whatever is already
   * recorded, e.g. the decode step that updated the scores). A server batches many sequences' copies into one
   * readback this way; `parseViews` unpacks them while the lengths are unchanged.
   */
  copyViews(dst: GPUBuffer, offset: number): void {
    let off = offset;
    for (const L of this.layers) {
      if (L.len === 0) continue;
      this.#ctx.copy(L.pos, 0, dst, off, L.len * 4);
      this.#ctx.copy(L.score, 0, dst, off + L.len * 4, L.len * 4);
      off += L.len * 8;
    }
  }

  /** Unpacks what `copyViews` wrote at `offset` of `data`. */
  parseViews(data: ArrayBuffer, offset: number): LayerView[] {
    let off = offset;
    return this.layers.map((L) => {
      const positions = new Uint32Array(data.slice(off, off + L.len * 4));
      const scores = new Float32Array(data.slice(off + L.len * 4, off + L.len * 8));
      off += L.len * 8;
      return { len: L.len, positions, scores };
    });
  }

  /** A deep copy on the GPU (same capacities, lengths and contents); benchmarks fork a prefilled cache with it. */
  clone(): SequenceKv {
    const copy = new SequenceKv(this.#ctx, this.shape, 16);
    this.layers.forEach((L, l) => {
      copy.#release(copy.layers[l]);
      const fresh = copy.#alloc(L.capacity, l);
      const rowBytes = this.row * 4;
      if (L.len > 0) {
        this.#ctx.copy(L.k, 0, fresh.k, 0, L.len * rowBytes);
        this.#ctx.copy(L.v, 0, fresh.v, 0, L.len * rowBytes);
        this.#ctx.copy(L.pos, 0, fresh.pos, 0, L.len * 4);
        this.#ctx.copy(L.score, 0, fresh.score, 0, L.len * 4);
      }
      fresh.len = L.len;
      copy.layers[l] = fresh;
    });
    copy.peakAllocated = copy.allocatedBytes();
    copy.peakLive = copy.liveBytes();
    return copy;
  }

  /** Frees every buffer. */
  destroy(): void {
    for (const L of this.layers) this.#release(L);
    this.layers.length = 0;
    this.#ctx.destroyLater(this.victims);
  }

  #write(
    layer: number,
    kSrc: GPUBuffer,
    vSrc: GPUBuffer,
    srcRow: number,
    count: number,
    slot: number,
    pos: number,
    useVictim: boolean,
  ): void {
    const L = this.layers[layer];
    const [x, y] = this.#ctx.grid(Math.ceil((count * this.row) / 256));
    this.#ctx.dispatch(
      WRITE,
      [kSrc, vSrc, L.k, L.v, L.pos, L.score, this.victims],
      [x, y],
      new Uint32Array([this.row, count, srcRow, slot, pos, useVictim ? 1 : 0, layer, 0]),
    );
  }

  #alloc(capacity: number, layer: number): LayerKv {
    const rowBytes = this.row * 4;
    if (capacity * rowBytes > this.#ctx.maxBinding) {
      throw new Error(
        `KV cache layer ${layer} would need ${capacity} tokens (${
          capacity * rowBytes
        } bytes per K/V buffer), over the ` +
          `adapter's storage binding limit ${this.#ctx.maxBinding}`,
      );
    }
    return {
      k: this.#ctx.createBuffer(capacity * rowBytes, `kv-k${layer}`),
      v: this.#ctx.createBuffer(capacity * rowBytes, `kv-v${layer}`),
      pos: this.#ctx.createBuffer(capacity * 4, `kv-pos${layer}`),
      score: this.#ctx.createBuffer(capacity * 4, `kv-score${layer}`),
      capacity,
      len: 0,
    };
  }

  #resize(layer: number, capacity: number): void {
    const old = this.layers[layer];
    const fresh = this.#alloc(capacity, layer);
    if (old.len > 0) {
      const rowBytes = this.row * 4;
      this.#ctx.copy(old.k, 0, fresh.k, 0, old.len * rowBytes);
      this.#ctx.copy(old.v, 0, fresh.v, 0, old.len * rowBytes);
      this.#ctx.copy(old.pos, 0, fresh.pos, 0, old.len * 4);
      this.#ctx.copy(old.score, 0, fresh.score, 0, old.len * 4);
    }
    fresh.len = old.len;
    this.#release(old);
    this.layers[layer] = fresh;
    this.#track();
  }

  #release(L: LayerKv): void {
    for (const b of [L.k, L.v, L.pos, L.score]) this.#ctx.destroyLater(b);
  }

  #track(): void {
    this.peakAllocated = Math.max(this.peakAllocated, this.allocatedBytes());
    this.peakLive = Math.max(this.peakLive, this.liveBytes());
  }
}
