/**
 * Pruning rounds: which sequences are due (from their per-layer lengths alone, no readback), one readback of
 * every due sequence's positions and scores (with whatever else the caller reads in the same transfer: the
 * sampled ids, or logits rows), the policies' decisions, and one batched compaction for all of them.
 */
import type { GpuContext } from "../gpu/context.ts";
import { type Compaction, SequenceKv } from "../kv/cache.ts";
import type { LayerView } from "../kv/policy.ts";
import type { SequenceState } from "../model/forward.ts";
import type { KvLayout } from "../ops/kv_layout.ts";
import { kvRedundancy, type RedundancyEntry, redundancyLayout } from "../ops/kv_redundancy.ts";

/** One pruning round, as written to the trace. */
export interface PruneRound {
  /** Decode step after which the round ran (0 = after prefill). */
  step: number;
  /** Kept tokens per layer after the round. */
  kept: number[];
  /** Hoyer sparsity per layer (policies that compute it). */
  hoyer: number[] | null;
  /** Per-layer shrink triggers after the round (Lethe). */
  trigger: number[] | null;
}

/** A sequence at a round check: after prefill, or after decode step `step`. */
export interface RoundCheck {
  seq: SequenceState;
  /** Decode step just recorded (0 after prefill). */
  step: number;
  afterPrefill: boolean;
}

/** Bytes read in the same transfer as the rounds' data, ahead of it (sampled ids, logits rows). */
export interface ReadHead {
  buffer: GPUBuffer;
  bytes: number;
}

/** Whether a round is due now: every pruning policy after prefill; during decode, as the policy decides. */
export function roundDue(c: RoundCheck): boolean {
  return c.afterPrefill ? c.seq.policy.prunes : c.seq.policy.wantsRound(c.step, c.seq.kv.lens());
}

/**
 * Runs every due round of `checks` from one readback. `head`, when given, is read in the same transfer ahead
 * of the rounds' data and returned; without it nothing is read unless a round is due. With `align`, when any
 * round is due, every sequence whose policy accepts an early round prunes too (`KvPolicy.mayRoundEarly`): the
 * batch's rounds then fall on the same steps, and the steps between them need no readback.
 */
export async function readAndPrune(
  ctx: GpuContext,
  checks: RoundCheck[],
  head?: ReadHead,
  align = false,
): Promise<{ head: ArrayBuffer | null; rounds: (PruneRound | null)[] }> {
  const due = checks.map(roundDue);
  if (align && due.some((d) => d)) {
    checks.forEach((c, i) =>
      due[i] ||= !c.afterPrefill && c.seq.policy.mayRoundEarly(c.step, c.seq.kv.lens())
    );
  }
  if (!head && !due.some((d) => d)) return { head: null, rounds: checks.map(() => null) };
  const dueIdx = checks.map((_, i) => i).filter((i) => due[i]);
  const plan = SequenceKv.planViews(ctx, dueIdx.map((i) => checks[i].seq.kv));
  const headBytes = head ? Math.ceil(head.bytes / 4) * 4 : 0;
  const viewBytes = dueIdx.length > 0 ? plan.bytes : 0;
  const red = planRedundancy(ctx, dueIdx.map((i) => checks[i].seq));
  const bytes = headBytes + viewBytes + red.bytes;
  const staging = ctx.pool.acquire(
    bytes,
    GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  );
  if (head) ctx.copy(head.buffer, 0, staging, 0, headBytes);
  if (dueIdx.length > 0) plan.record(staging, headBytes);
  red.record(staging, headBytes + viewBytes);
  const data = await ctx.read(staging, 0, bytes);
  ctx.pool.release(staging);
  const views = dueIdx.length > 0 ? plan.parse(data, headBytes) : [];
  red.parse(data, headBytes + viewBytes, views);
  const done = applyRounds(ctx, dueIdx.map((i, j) => ({ ...checks[i], views: views[j] })));
  const rounds: (PruneRound | null)[] = checks.map(() => null);
  dueIdx.forEach((i, j) => rounds[i] = done[j]);
  return { head: head ? data.slice(0, head.bytes) : null, rounds };
}

/**
 * Key redundancy for the due sequences whose policy asks for it (`KvPolicy.keyRedundancy`): computed on the
 * GPU from the cached keys, copied into the round's staging buffer, attached to their layer views.
 */
function planRedundancy(ctx: GpuContext, seqs: SequenceState[]): {
  bytes: number;
  record(staging: GPUBuffer, offset: number): void;
  parse(data: ArrayBuffer, offset: number, views: LayerView[][]): void;
} {
  const want = seqs.map((s, j) => ({ s, j })).filter((x) => x.s.policy.keyRedundancy !== null);
  const layers = want.flatMap(({ s }) => s.kv.layers);
  const heads = want.length ? want[0].s.kv.shape.nKvHeads : 1;
  const { offsets, floats } = redundancyLayout(layers, heads);
  const entries: RedundancyEntry[] = layers.map((L, e) => ({
    k: L.region.kBuffer,
    base: L.region.base,
    len: L.len,
    offset: offsets[e],
  }));
  return {
    bytes: floats * 4,
    record(staging: GPUBuffer, offset: number): void {
      if (floats === 0) return;
      const out = ctx.pool.acquire(
        floats * 4,
        GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
        "kv-redundancy",
      );
      // One call per threshold and storage format (sequences of one batch may differ); each entry writes only
      // its own range.
      const groups = new Map<string, { layout: KvLayout; threshold: number; list: RedundancyEntry[] }>();
      let e = 0;
      for (const { s } of want) {
        const threshold = s.policy.keyRedundancy!;
        const key = `${threshold}/${s.kv.layout.dtype}`;
        const g = groups.get(key) ?? { layout: s.kv.layout, threshold, list: [] };
        for (const _ of s.kv.layers) g.list.push(entries[e++]);
        groups.set(key, g);
      }
      for (const g of groups.values()) kvRedundancy(ctx, g.list, g.layout, g.threshold, out);
      ctx.copy(out, 0, staging, offset, floats * 4);
      ctx.pool.release(out);
    },
    parse(data: ArrayBuffer, offset: number, views: LayerView[][]): void {
      let e = 0;
      for (const { s, j } of want) {
        s.kv.layers.forEach((L, l) => {
          const at = offset + offsets[e++] * 4;
          views[j][l].redundancy = new Float32Array(data.slice(at, at + heads * L.len * 4));
        });
      }
    },
  };
}

/**
 * Decides several rounds on positions and scores already read back, then records all their compactions
 * together (one upload, few dispatches). A round after prefill that changes nothing is not reported.
 */
export function applyRounds(
  ctx: GpuContext,
  list: (RoundCheck & { views: LayerView[] })[],
): (PruneRound | null)[] {
  const items: Compaction[] = [];
  const decided = list.map(({ seq, step, afterPrefill, views }) => {
    const L = views.length;
    const decision = afterPrefill ? seq.policy.afterPrefill(views) : seq.policy.round(step, views);
    let changed = false;
    decision.keep.forEach((keep, l) => {
      if (!keep) return;
      // Room to grow before the next round: up to the layer's cap, or a little for uncapped policies.
      const cap = seq.policy.decodeCap(l, L);
      const headroom = cap !== null ? Math.max(0, cap - keep.length) : seq.policy.roundHeadroom;
      items.push({ kv: seq.kv, layer: l, keep, headroom });
      changed = true;
    });
    return { decision, changed };
  });
  if (items.length > 0) SequenceKv.compactMany(ctx, items);
  return list.map(({ seq, step, afterPrefill }, i) => {
    const { decision, changed } = decided[i];
    if (!changed && afterPrefill) return null;
    return { step, kept: seq.kv.lens(), hoyer: decision.hoyer ?? null, trigger: decision.trigger ?? null };
  });
}
