/**
 * Pruning rounds: which sequences are due (from their per-layer lengths alone, no readback), one readback of
 * every due sequence's positions and scores (with whatever else the caller reads in the same transfer: the
 * sampled ids, or logits rows), the policies' decisions, and one batched compaction for all of them.
 */
import type { GpuContext } from "../gpu/context.ts";
import { type Compaction, SequenceKv } from "../kv/cache.ts";
import type { LayerView } from "../kv/policy.ts";
import type { SequenceState } from "../model/forward.ts";

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
  const bytes = headBytes + (dueIdx.length > 0 ? plan.bytes : 0);
  const staging = ctx.pool.acquire(
    bytes,
    GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  );
  if (head) ctx.copy(head.buffer, 0, staging, 0, headBytes);
  if (dueIdx.length > 0) plan.record(staging, headBytes);
  const data = await ctx.read(staging, 0, bytes);
  ctx.pool.release(staging);
  const views = dueIdx.length > 0 ? plan.parse(data, headBytes) : [];
  const done = applyRounds(ctx, dueIdx.map((i, j) => ({ ...checks[i], views: views[j] })));
  const rounds: (PruneRound | null)[] = checks.map(() => null);
  dueIdx.forEach((i, j) => rounds[i] = done[j]);
  return { head: head ? data.slice(0, head.bytes) : null, rounds };
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
