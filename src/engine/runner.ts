/**
 * The model runner: one batched decode step for a set of sequences — `forward.decode` → per-row sampling on the
 * GPU → either the next step recorded ahead of the id readback, or one readback of the ids with the pruning
 * rounds due after this step. `Engine.generate`, the evaluation (task and fidelity runs) and the server's
 * scheduler all decode through it; the scheduler decides only who is in the batch.
 *
 * Decode ahead hides the readback's round trip (~10 ms on CPU adapters, the largest fixed cost of a small
 * model's step): while no round is due, step k's ids stay on the GPU, step k + 1 is recorded on them and
 * submitted, and only then are ids k awaited — the GPU computes step k + 1 while the caller detokenizes and
 * checks ids k. The invariants, all kept here:
 *  - never across a round: a compaction would land one step late, on a cache the next step already attended;
 *  - a step recorded ahead is used by the next `step` call for the rows still in the batch (their logits rows
 *    copied together when some rows left); a row that leaves instead gets its cache peaks back as they were
 *    before that step (`leave`), so outputs, rounds and KV statistics equal a synchronous loop;
 *  - the caller decides whether recording ahead is allowed (`StepOptions.mayRecordAhead`, asked after this
 *    step's decode is recorded, so it sees this step's cache growth).
 */
import { type GpuContext, STORAGE_USAGE } from "../gpu/context.ts";
import type { Forward, SequenceState } from "../model/forward.ts";
import { type PruneRound, readAndPrune, type RoundCheck, roundDue } from "./rounds.ts";
import { Sampler, type SamplingOptions, type TokenLogprobs, usesBias, usesPenalties } from "./sampler.ts";

/** One sequence of the runner's batch. */
export interface RunnerRow {
  seq: SequenceState;
  /** How its tokens are sampled. */
  sampling: SamplingOptions;
  /** Decode steps done; the next `step` call runs step `step + 1` (its sampling step number). */
  step: number;
  /** The token the next step feeds (the last one accepted). */
  next: number;
  /** Report each sampled token's logprob and this many top ids (0–20); null/undefined: none. */
  logprobs?: number | null;
  /**
   * Its token counts on the GPU when its sampling has penalties (made by `prefill`, freed by `release`).
   * @internal
   */
  counts?: GPUBuffer | null;
  /**
   * Its logit bias on the GPU when its sampling has one (made by `prefill`, freed by `release`).
   * @internal
   */
  bias?: GPUBuffer | null;
}

/** What {@link DecodeRunner.prefill} gives back. */
export interface PrefillResult {
  /** The first token (null with `sample: false` or `readLogits`). */
  id: number | null;
  /** Its logprobs, when the row asks. */
  logprobs: TokenLogprobs | null;
  /** The last token's logits, with `readLogits`. */
  logits: Float32Array | null;
  /** The policy's round after prefill, if one ran. */
  round: PruneRound | null;
  /** Each fork's first token and logprobs (sampled from the same logits row). */
  forks: { id: number; logprobs: TokenLogprobs | null }[];
}

/** Options of {@link DecodeRunner.step}. */
export interface StepOptions {
  /**
   * Asked when no round is due after this step: may the next step be recorded now, on the GPU-resident ids?
   * (False when the caller will not feed all of these rows next: the last token allowed, a waiting admission.)
   */
  mayRecordAhead?: () => boolean;
  /** Line up the batch's rounds (see `readAndPrune`). */
  align?: boolean;
  /** Rows whose rounds run (default all; the server leaves out rows cancelled mid-step). */
  prunes?: (row: RunnerRow) => boolean;
  /** Called for each row once its step is recorded (the cache holds the step's token), before sampling. */
  onStep?: (row: RunnerRow) => void | Promise<void>;
  /** Read each row's logits back (f32 [vocab]) instead of sampling: teacher forcing feeds its own tokens. */
  readLogits?: boolean;
}

/** What one step gives back. */
export interface StepResult {
  /** Row b's sampled id (empty with `readLogits`). */
  ids: number[];
  /** Row b's logprobs, for rows that ask (else null). */
  logprobs: (TokenLogprobs | null)[];
  /** Row b's logits, with `readLogits`. */
  logits: Float32Array[] | null;
  /** Row b's pruning round after this step, if one ran. */
  rounds: (PruneRound | null)[];
  /** Whether the next step was recorded ahead of this step's readback. */
  ahead: boolean;
}

/** A step recorded ahead: its rows, logits, and each row's cache peaks from before it. */
interface Ahead {
  rows: RunnerRow[];
  logits: GPUBuffer;
  peaks: Map<RunnerRow, [number, number]>;
}

/** Runs prefills and batched decode steps over one forward pass and sampler. */
export class DecodeRunner {
  readonly #ctx: GpuContext;
  readonly #forward: Forward;
  readonly #sampler: Sampler;
  readonly #vocab: number;
  #ahead: Ahead | null = null;

  constructor(ctx: GpuContext, forward: Forward, vocab: number) {
    this.#ctx = ctx;
    this.#forward = forward;
    this.#vocab = vocab;
    this.#sampler = new Sampler(ctx, vocab);
  }

  /** Whether a step is recorded ahead (its rows must be the next step's, or leave). */
  get hasAhead(): boolean {
    return this.#ahead !== null;
  }

  /**
   * Prefills `tokens` for the row's sequence, samples its first token (step 0) unless `sample` is false, and runs
   * the policy's round after prefill — one readback for both. With `readLogits` the last token's logits are read
   * back instead of sampled.
   *
   * `forks` (n > 1 choices of one prompt): after the prefill and its round, each fork's `seq` becomes a copy of
   * the row's — its KV cache copied region to region on the GPU, its policy's state cloned — and its first token
   * is sampled from the same logits row with its own sampling (seed), in the same readback.
   *
   * `counts`: what a row with penalties counts as prompt and as generated (default: `tokens` are the prompt; a
   * resumed sequence passes its prompt and every token it generated).
   */
  async prefill(
    row: RunnerRow,
    tokens: number[],
    o: {
      sample?: boolean;
      readLogits?: boolean;
      forks?: RunnerRow[];
      counts?: { prompt: number[]; generated: number[] };
    } = {},
  ): Promise<PrefillResult> {
    const forks = o.forks ?? [];
    const all = [row, ...forks];
    for (const r of all) {
      this.release(r);
      if (usesPenalties(r.sampling)) {
        r.counts = this.#sampler.counts(o.counts?.prompt ?? tokens, o.counts?.generated ?? []);
      }
      if (usesBias(r.sampling)) r.bias = this.#sampler.bias(r.sampling.logitBias!);
    }
    const logits = this.#forward.prefill(row.seq, tokens);
    const check: RoundCheck = { seq: row.seq, step: 0, afterPrefill: true };
    const none = { logprobs: null, forks: [] };
    if (o.readLogits) {
      if (forks.length > 0) throw new Error("DecodeRunner.prefill: readLogits takes no forks");
      const { head, rounds } = await readAndPrune(this.#ctx, [check], {
        buffer: logits,
        bytes: this.#vocab * 4,
      });
      return { ...none, id: null, logits: new Float32Array(head!), round: rounds[0] };
    }
    if (o.sample === false) {
      if (forks.length > 0) throw new Error("DecodeRunner.prefill: forks are sampled");
      const { rounds } = await readAndPrune(this.#ctx, [check]);
      return { ...none, id: null, logits: null, round: rounds[0] };
    }
    const ids = this.#sampler.record(
      logits,
      all.map((r) => ({
        sampling: r.sampling,
        step: 0,
        logitsRow: 0,
        logprobs: r.logprobs,
        counts: r.counts,
        bias: r.bias,
      })),
    );
    const { head, rounds } = await readAndPrune(this.#ctx, [check], {
      buffer: ids.buffer,
      bytes: Sampler.bytes(ids),
    });
    const got = Sampler.parse(ids, head!);
    const lps = Sampler.parseLogprobs(ids, head!);
    // After the round: the copies start from the compacted cache, as the row does.
    for (const f of forks) {
      f.seq = { kv: row.seq.kv.clone(), policy: row.seq.policy.clone(), pos: row.seq.pos };
    }
    return {
      id: got[0],
      logprobs: lps[0],
      logits: null,
      round: rounds[0],
      forks: forks.map((_, i) => ({ id: got[i + 1], logprobs: lps[i + 1] })),
    };
  }

  /**
   * Frees what the runner made for `row` (its token counts, its logit bias). Call when its sequence ends or is
   * preempted.
   */
  release(row: RunnerRow): void {
    if (row.counts) this.#ctx.destroyLater(row.counts);
    if (row.bias) this.#ctx.destroyLater(row.bias);
    row.counts = null;
    row.bias = null;
  }

  /**
   * One decode step for `rows` (each feeds `row.next`, or the token of a step recorded ahead), then the rounds
   * due after it; each row's `step` advances by one. See the module comment for decode ahead.
   */
  async step(rows: RunnerRow[], o: StepOptions = {}): Promise<StepResult> {
    const B = rows.length;
    if (B === 0) throw new Error("DecodeRunner.step: no rows");
    const ahead = this.#ahead;
    this.#ahead = null;
    let logits: GPUBuffer;
    let picked: GPUBuffer | null = null;
    if (ahead && ahead.rows.length === B && ahead.rows.every((r, b) => r === rows[b])) logits = ahead.logits;
    else if (ahead) {
      const at = rows.map((r) => ahead.rows.indexOf(r));
      if (at.some((i) => i < 0)) {
        throw new Error("DecodeRunner.step: a row joined while a step was recorded ahead");
      }
      logits = picked = this.#pickRows(ahead.logits, at);
    } else logits = this.#forward.decode(rows.map((r) => r.seq), rows.map((r) => r.next));
    for (const r of rows) {
      r.step++;
      if (o.onStep) await o.onStep(r);
    }
    // Decided once: a row cancelled while the readback is in flight keeps its place in the results.
    const mask = rows.map((r) => o.prunes?.(r) ?? true);
    const checks = rows.filter((_, b) => mask[b]).map((r): RoundCheck => ({
      seq: r.seq,
      step: r.step,
      afterPrefill: false,
    }));
    if (o.readLogits) {
      const bytes = this.#vocab * 4;
      const { head, rounds } = await readAndPrune(
        this.#ctx,
        checks,
        { buffer: logits, bytes: B * bytes },
        o.align,
      );
      if (picked) this.#ctx.pool.release(picked);
      return {
        ids: [],
        logprobs: rows.map(() => null),
        logits: rows.map((_, b) => new Float32Array(head!, b * bytes, this.#vocab)),
        rounds: this.#byRow(mask, rounds),
        ahead: false,
      };
    }
    const sampled = this.#sampler.record(
      logits,
      rows.map((r) => ({
        sampling: r.sampling,
        step: r.step,
        logprobs: r.logprobs,
        counts: r.counts,
        bias: r.bias,
      })),
    );
    // The sampling is recorded: the picked rows' buffer can go back to the pool.
    if (picked) this.#ctx.pool.release(picked);
    if (!checks.some(roundDue) && (o.mayRecordAhead?.() ?? false)) {
      const packed = this.#sampler.packed(sampled);
      // The ids (and logprob records) as sampled: the next step's sampling rewrites them only after this read.
      const read = this.#ctx.read(sampled.buffer, 0, Sampler.bytes(sampled));
      const peaks = new Map(
        rows.map((r) => [r, [r.seq.kv.peakAllocated, r.seq.kv.peakLive] as [number, number]]),
      );
      this.#ahead = { rows, logits: this.#forward.decode(rows.map((r) => r.seq), packed.buffer), peaks };
      packed.release();
      this.#ctx.flush();
      const data = await read;
      return {
        ids: Sampler.parse(sampled, data),
        logprobs: Sampler.parseLogprobs(sampled, data),
        logits: null,
        rounds: rows.map(() => null),
        ahead: true,
      };
    }
    const { head, rounds } = await readAndPrune(
      this.#ctx,
      checks,
      { buffer: sampled.buffer, bytes: Sampler.bytes(sampled) },
      o.align,
    );
    return {
      ids: Sampler.parse(sampled, head!),
      logprobs: Sampler.parseLogprobs(sampled, head!),
      logits: null,
      rounds: this.#byRow(mask, rounds),
      ahead: false,
    };
  }

  /**
   * A row leaves the batch. If a step was recorded ahead for it, that step's token is not part of its output:
   * its cache peaks return to what they were before the step.
   */
  leave(row: RunnerRow): void {
    const saved = this.#ahead?.peaks.get(row);
    if (saved) [row.seq.kv.peakAllocated, row.seq.kv.peakLive] = saved;
  }

  /** Forgets a step recorded ahead (its rows all left, or a step failed). */
  discardAhead(): void {
    this.#ahead = null;
  }

  /** Frees the runner's GPU buffers. */
  destroy(): void {
    this.#ahead = null;
    this.#sampler.destroy();
  }

  /** Rounds of the pruning rows, spread back over all rows. */
  #byRow(mask: boolean[], rounds: (PruneRound | null)[]): (PruneRound | null)[] {
    let i = 0;
    return mask.map((m) => (m ? rounds[i++] : null));
  }

  /** Logits rows `at` of a step recorded ahead, copied together in that order into a pooled buffer. */
  #pickRows(logits: GPUBuffer, at: number[]): GPUBuffer {
    const bytes = this.#vocab * 4;
    const out = this.#ctx.pool.acquire(at.length * bytes, STORAGE_USAGE, "logits-rows");
    at.forEach((r, i) => this.#ctx.copy(logits, r * bytes, out, i * bytes, bytes));
    return out;
  }
}
