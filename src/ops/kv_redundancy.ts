/**
 * R-KV's key redundancy on the GPU (wgsl/kv_redundancy.wgsl): per cached token and KV head, the mean cosine
 * similarity of its key to every other key of the layer, where each token's newest near-duplicate is not
 * charged for it. Run at pruning rounds only, on the K rows where they live in the arena (no copy of K).
 */
import code from "../../wgsl/kv_redundancy.wgsl" with { type: "text" };
import { type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
import type { KvLayout } from "./kv_layout.ts";
import { batchesBy } from "../util/group.ts";

const NORMS = { name: "kv_redundancy_norms", code, entryPoint: "norms" };
const DUPS = { name: "kv_redundancy_dups", code, entryPoint: "dups" };
const COLUMNS = { name: "kv_redundancy_columns", code, entryPoint: "columns" };
/** Entries one dispatch takes (its table lives in the uniforms). */
const ENTRIES_MAX = 64;
const WG = 64;

/** One layer of one sequence: slots [base, base + len) of the K buffer `k` (a shard's, as a region names it). */
export interface RedundancyEntry {
  /** The K buffer holding the slots (`KvRegion.kBuffer`): stored rows [slots, layout.words]. */
  k: GPUBuffer;
  base: number;
  len: number;
  /** Where the entry's `heads × len` results start in the output, in floats ({@link redundancyLayout}). */
  offset: number;
}

const DTYPE_CODE = { f32: 0, f16: 1, int8: 2 } as const;

/** Consecutive output ranges for entries of these lengths: entry i at offsets[i], `heads × len` floats. */
export function redundancyLayout(
  entries: { len: number }[],
  heads: number,
): { offsets: number[]; floats: number } {
  const offsets: number[] = [];
  let floats = 0;
  for (const e of entries) {
    offsets.push(floats);
    floats += heads * e.len;
  }
  return { offsets, floats };
}

/**
 * Records the redundancy of every entry into `out` (f32: entry e's head h, token j at e.offset + h·len + j; the
 * ranges must not overlap). Keys are read in the cache's stored format `layout` (f32, f16 or int8 rows, decoded
 * as attention decodes them). `threshold` is the cosine above which two keys are near-duplicates.
 */
export function kvRedundancy(
  ctx: GpuContext,
  entries: RedundancyEntry[],
  layout: KvLayout,
  threshold: number,
  out: GPUBuffer,
): void {
  const { nKvHeads: heads, headDim } = layout;
  const floats = Math.max(0, ...entries.map((e) => e.offset + heads * e.len));
  if (floats === 0) return;
  if (out.size < floats * 4) {
    throw new Error(`kvRedundancy: out holds ${out.size} bytes, needs ${floats * 4}`);
  }
  const invNorm = ctx.pool.acquire(floats * 4, STORAGE_USAGE, "kv-redundancy-norms");
  const dup = ctx.pool.acquire(floats * 4, STORAGE_USAGE, "kv-redundancy-dups");
  const indexed = entries.filter((e) => e.len > 0).map((e) => ({ e, off: e.offset }));
  for (const part of batchesBy(indexed, (x) => x.e.k, ENTRIES_MAX)) {
    const u = new Uint32Array(8 + ENTRIES_MAX * 4);
    u.set([heads, headDim, layout.words, DTYPE_CODE[layout.dtype]]);
    new Float32Array(u.buffer)[4] = threshold;
    part.forEach((x, i) => u.set([x.e.base, x.e.len, x.off, 0], 8 + i * 4));
    const x = Math.ceil((heads * Math.max(...part.map((p) => p.e.len))) / WG);
    // Each pass binds the buffers it uses (a pipeline's automatic layout holds only those): K and the norms,
    // then the duplicates, then the output.
    const k = part[0].e.k;
    ctx.dispatch(NORMS, [k, invNorm], [x, 1, part.length], u);
    ctx.dispatch(DUPS, [k, invNorm, dup], [x, 1, part.length], u);
    ctx.dispatch(COLUMNS, [k, invNorm, dup, out], [x, 1, part.length], u);
  }
  ctx.pool.release(invNorm);
  ctx.pool.release(dup);
}
