/**
 * KV-cache maintenance on the GPU: writing new K/V rows (appended, or over a slot the GPU evicts) and moving
 * slots between regions of the KV arena (compaction, growth, cloning). The cache (src/kv/cache.ts) keeps the
 * bookkeeping — regions, lengths, what to evict under which policy; these ops only turn shapes into uniforms
 * and dispatches. Layouts: see wgsl/kv.wgsl (K and V stored rows of `layout.words` u32 words, token-major, in
 * the format of src/ops/kv_layout.ts; positions u32 [slots], scores f32 [slots], one set of four buffers per
 * arena shard).
 */
import writeCode from "../../wgsl/kv.wgsl" with { type: "text" };
import evictCode from "../../wgsl/kv_evict.wgsl" with { type: "text" };
import gatherCode from "../../wgsl/kv_gather.wgsl" with { type: "text" };
import { type Binding, type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
import type { KernelSource } from "../gpu/pipelines.ts";
import { batchesBy } from "../util/group.ts";
import type { KvLayout } from "./kv_layout.ts";

const DT_CODE = { f32: 0, f16: 1, int8: 2 } as const;
const writeKernels = new Map<string, KernelSource>();
/** The write kernel for one storage layout (its sizes are compile-time constants). */
function writeKernel(layout: KvLayout, entryPoint: "write" | "write_batch"): KernelSource {
  const key = `${layout.dtype}/${layout.nKvHeads}/${layout.headDim}/${entryPoint}`;
  let k = writeKernels.get(key);
  if (!k) {
    const header = `const DT: u32 = ${DT_CODE[layout.dtype]}u;\nconst ROW: u32 = ${layout.values}u;\n` +
      `const W: u32 = ${layout.words}u;\nconst NKV: u32 = ${layout.nKvHeads}u;\nconst HD: u32 = ${layout.headDim}u;\n` +
      `const UNITS: u32 = ${writeUnits(layout)}u;\n`;
    k = {
      name: `kv_${entryPoint}_${layout.dtype}_kv${layout.nKvHeads}_d${layout.headDim}`,
      code: header + writeCode,
      entryPoint,
    };
    writeKernels.set(key, k);
  }
  return k;
}

/** Threads per written row: one per stored word (f32, f16), one per head (int8: the head shares a scale). */
function writeUnits(layout: KvLayout): number {
  return layout.dtype === "int8" ? layout.nKvHeads : layout.values / (layout.dtype === "f16" ? 2 : 1);
}
const EVICT = { name: "kv_evict", code: evictCode };
const GATHER = { name: "kv_gather", code: gatherCode, entryPoint: "main" };
/** Moves within one shard: its buffers bound once (WebGPU forbids a buffer in two writable bindings). */
const GATHER_SAME = { name: "kv_gather_same", code: gatherCode, entryPoint: "main_same" };
/** Sequences one batched write takes (its table lives in the dispatch's uniforms; see wgsl/kv.wgsl). */
export const KV_WRITE_BATCH_MAX = 64;
/** Moves one gather dispatch takes (see wgsl/kv_gather.wgsl). */
const GATHER_MAX = 64;

/**
 * Slots [base, …) of one arena shard, seen through the shard's four buffers (K, V [slots, words];
 * positions u32 and scores f32 [slots]). A `KvRegion` of src/kv/arena.ts is one.
 */
export interface KvSlots {
  readonly kBuffer: GPUBuffer;
  readonly vBuffer: GPUBuffer;
  readonly posBuffer: GPUBuffer;
  readonly scoreBuffer: GPUBuffer;
  readonly base: number;
}

/** What the evictor must not choose: positions below `sink` or from `recentFrom` on. */
export interface EvictProtect {
  sink: number;
  recentFrom: number;
  /** Evict the oldest position instead of the lowest score (StreamingLLM). */
  byPosition: boolean;
}

/** Where {@link kvWrite} writes: one region's K, V, positions and scores (bound on their own). */
export interface KvWriteTarget {
  k: Binding;
  v: Binding;
  pos: Binding;
  score: Binding;
}

/**
 * Records the write of `count` rows of K/V (rows `srcRow`.. of f32 [*, layout.values] buffers) into slots
 * `slot`.. of `dst`, encoded as `layout`, with positions pos, pos + 1, … and scores 0.
 */
export function kvWrite(
  ctx: GpuContext,
  kSrc: GPUBuffer,
  vSrc: GPUBuffer,
  srcRow: number,
  count: number,
  layout: KvLayout,
  dst: KvWriteTarget,
  slot: number,
  pos: number,
): void {
  const [x, y] = ctx.grid(Math.ceil((count * writeUnits(layout)) / 256));
  ctx.dispatch(
    writeKernel(layout, "write"),
    [kSrc, vSrc, dst.k, dst.v, dst.pos, dst.score],
    [x, y],
    new Uint32Array([count, srcRow, slot, pos]),
  );
}

/** One row of {@link kvWriteBatch}: a sequence's layer holding slots [base, base + len) of the shard. */
export interface KvWriteEntry {
  /** Row of the source buffers. */
  srcRow: number;
  base: number;
  len: number;
  /** Original position of the new token. */
  pos: number;
  /** Overwrite the slot the evictor picks among [base, base + len) instead of writing slot base + len. */
  evict?: EvictProtect;
}

/**
 * Records one new K/V row for each of up to {@link KV_WRITE_BATCH_MAX} sequences whose layer lives in the
 * shard `dst` (row `srcRow` of f32 [*, layout.values] buffers, encoded as `layout`; score 0): one evict
 * dispatch when some entry evicts, then one write dispatch.
 */
export function kvWriteBatch(
  ctx: GpuContext,
  kSrc: GPUBuffer,
  vSrc: GPUBuffer,
  layout: KvLayout,
  dst: KvSlots,
  entries: KvWriteEntry[],
): void {
  if (entries.length > KV_WRITE_BATCH_MAX) {
    throw new Error(`kvWriteBatch takes at most ${KV_WRITE_BATCH_MAX} entries, got ${entries.length}`);
  }
  // Victims first: entry b of the evict table writes victims[b], which write entry b reads.
  const victims = ctx.pool.acquire(KV_WRITE_BATCH_MAX * 4, STORAGE_USAGE, "kv-victims");
  if (entries.some((e) => e.evict)) {
    const u = new Uint32Array(KV_WRITE_BATCH_MAX * 8);
    entries.forEach((e, b) => {
      const p = e.evict;
      if (p) u.set([e.base, e.len, p.sink, Math.max(0, p.recentFrom), p.byPosition ? 1 : 0], b * 8);
    });
    ctx.dispatch(EVICT, [dst.posBuffer, dst.scoreBuffer, victims], [entries.length], u);
  }
  const u = new Uint32Array(4 + KV_WRITE_BATCH_MAX * 4);
  u.set([entries.length]);
  entries.forEach((e, b) => u.set([e.srcRow, e.base + e.len, e.pos, e.evict ? 1 : 0], 4 + b * 4));
  const [x, y] = ctx.grid(Math.ceil((entries.length * writeUnits(layout)) / 256));
  ctx.dispatch(
    writeKernel(layout, "write_batch"),
    [kSrc, vSrc, dst.kBuffer, dst.vBuffer, dst.posBuffer, dst.scoreBuffer, victims],
    [x, y],
    u,
  );
  ctx.pool.release(victims);
}

/** One region-to-region move of {@link kvGather}: `count` slots of `src` to the front of `dst`. */
export interface KvMove {
  src: KvSlots;
  dst: KvSlots;
  count: number;
  /** u32 words per stored K (or V) row of the shards (moves copy bits, whatever the format). */
  row: number;
  /** Where this move's keep list starts in the keep buffer (ignored by an identity move). */
  keepOff: number;
}

/**
 * Records region-to-region moves: one dispatch per pair of source and destination
 * shards (up to 64 moves each), slot keep[keepOff + j] (or j when `identity`; `keep` is then any small
 * buffer) of `src` → slot j of `dst`, K, V, position and score.
 */
export function kvGather(
  ctx: GpuContext,
  moves: KvMove[],
  keep: GPUBuffer,
  identity: boolean,
): void {
  const ids = new Map<GPUBuffer, number>();
  const id = (b: GPUBuffer) => {
    if (!ids.has(b)) ids.set(b, ids.size);
    return ids.get(b)!;
  };
  const pairOf = (m: KvMove) => `${id(m.src.kBuffer)}/${id(m.dst.kBuffer)}`;
  for (const part of batchesBy(moves, pairOf, GATHER_MAX)) {
    const row = part[0].row;
    const u = new Uint32Array(4 + GATHER_MAX * 4);
    u.set([row, identity ? 1 : 0]);
    part.forEach((m, i) => u.set([m.src.base, m.dst.base, m.count, m.keepOff], 4 + i * 4));
    const a = part[0].src, b = part[0].dst;
    const [x, y] = ctx.grid(Math.ceil((Math.max(...part.map((m) => m.count)) * row) / 256));
    const same = a.kBuffer === b.kBuffer;
    ctx.dispatch(
      same ? GATHER_SAME : GATHER,
      same ? [keep, a.kBuffer, a.vBuffer, a.posBuffer, a.scoreBuffer] : [
        keep,
        a.kBuffer,
        a.vBuffer,
        a.posBuffer,
        a.scoreBuffer,
        b.kBuffer,
        b.vBuffer,
        b.posBuffer,
        b.scoreBuffer,
      ],
      [x, y, part.length],
      u,
    );
  }
}
