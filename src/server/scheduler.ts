/**
 * Continuous batching over one engine: a single loop owns the GPU. Every step it (1) drops cancelled
 * sequences and frees their KV, (2) admits queued requests while the KV pool has room (each is prefilled,
 * sampled and pruned alone), (3) makes sure the next decode step fits the pool — preempting the youngest
 * sequences if it would not — and (4) decodes one token for every active sequence in one `forward.decode`
 * call, sampling each row with the request's own settings.
 *
 * Memory: the pool is a byte cap on KV allocated (K, V, positions, scores) over all sequences. Admission uses
 * each request's projected peak: exact for `full` (its cache is allocated once for prompt + max_tokens),
 * an estimate from the budget for pruning policies. Before every decode step the exact growth of that step
 * is computed; if it would pass the cap, the youngest sequence is preempted: its KV is freed and it goes back
 * to the head of the queue with the tokens it has generated, and is recomputed (prefill of prompt + generated
 * tokens) when memory allows. A sequence alone that cannot grow ends with finish_reason "length". Nothing
 * ever writes past the cap or into another sequence's cache.
 *
 * Per-request results equal `Engine.generate` with the same options (same sampling step numbering, same
 * pruning rounds), as long as the sequence is not preempted and it decodes alone or with `alignRounds` off.
 * Aligned rounds (the default) move a sequence's rounds earlier by up to the round interval to share a step
 * with the batch's other rounds; between two such steps nothing is read back but the sampled ids, and each step
 * is recorded while the previous one's ids are in flight.
 */
import {
  DEFAULT_SAMPLING,
  type Engine,
  type KvSettings,
  resolveKvOptions,
  type SamplingOptions,
} from "../generate.ts";
import { STORAGE_USAGE } from "../gpu/context.ts";
import { bytesPerToken } from "../kv/cache.ts";
import type { SequenceState } from "../model/forward.ts";
import { sampleRows } from "../ops/sample.ts";
import { IncrementalDecoder } from "../../tokenizer/mod.ts";
import { StopStrings } from "./text.ts";

/** Why a generation ended (OpenAI's names; "stop" covers EOS and stop strings). */
export type FinishReason = "stop" | "length";

/** What the scheduler reports about a job. */
export type JobEvent =
  | { type: "token"; id: number; text: string }
  | { type: "done"; finishReason: FinishReason; promptTokens: number; completionTokens: number }
  | { type: "error"; message: string };

/** One generation request as the scheduler takes it. */
export interface JobRequest {
  promptIds: number[];
  maxTokens: number;
  sampling: SamplingOptions;
  kv: KvSettings;
  stop: string[];
  /** Stop token ids (default: the model's EOS ids). */
  eos?: number[];
  onEvent: (e: JobEvent) => void;
}

/** Server-wide scheduler settings. */
export interface SchedulerOptions {
  /** Byte cap on KV allocated over all sequences. */
  kvMemory: number;
  /** Most sequences decoding together. */
  maxBatch: number;
  /**
   * Line up the batch's pruning rounds (default true): when one sequence's round is due, every sequence that may
   * prune early does so too, so the steps between rounds are recorded ahead without a readback. Off, each
   * request's output equals `Engine.generate`'s even while it shares the batch.
   */
  alignRounds?: boolean;
}

/** Counters and gauges for /metrics. */
export interface SchedulerMetrics {
  active: number;
  queued: number;
  kvBytesLive: number;
  kvBytesAllocated: number;
  /** GPU bytes of the shared KV arena: the sequences' regions plus free space held for reuse. */
  kvArenaBytes: number;
  kvBytesPeak: number;
  kvBytesCap: number;
  promptTokensTotal: number;
  generatedTokensTotal: number;
  decodeStepsTotal: number;
  /** Decode steps recorded before the previous step's ids were read back. */
  decodeStepsAheadTotal: number;
  pruneRoundsTotal: number;
  preemptionsTotal: number;
  requestsFinishedTotal: number;
  requestsCancelledTotal: number;
  requestsFailedTotal: number;
  /** Generated tokens per second over the last ~10 s. */
  tokensPerSecond: number;
  /** Largest batch decoded so far. */
  maxBatchSeen: number;
  /** Largest queue seen so far. */
  maxQueuedSeen: number;
}

interface Job {
  readonly id: number;
  readonly req: JobRequest;
  readonly eos: Set<number>;
  readonly decoder: IncrementalDecoder | null;
  readonly stop: StopStrings;
  /** Projected peak KV bytes (grows to the largest seen after a preemption). */
  reserve: number;
  seq: SequenceState | null;
  /** Generated ids; the last one is fed at the next decode step. */
  ids: number[];
  /** Decode steps done (the sampling step of the next token is step + 1). */
  step: number;
  cancelled: boolean;
  finished: boolean;
}

/** A handle the HTTP layer keeps to cancel its request. */
export interface JobHandle {
  readonly id: number;
  cancel(): void;
}

/** The continuous-batching loop. */
export class Scheduler {
  readonly engine: Engine;
  readonly options: SchedulerOptions;
  readonly #queue: Job[] = [];
  readonly #active: Job[] = [];
  #nextId = 1;
  #wake: (() => void) | null = null;
  #closed = false;
  #loop: Promise<void>;
  /** u32 ids, one per 256 bytes (storage binding offsets must be 256-aligned). */
  #ids: GPUBuffer;
  /** A decode step already recorded for these jobs on their GPU-resident sampled ids (see #decodeStep). */
  #ahead: { jobs: Job[]; logits: GPUBuffer } | null = null;
  #idsRows = 0;
  readonly #rate: { t: number; n: number }[] = [];
  readonly #m = {
    kvBytesPeak: 0,
    promptTokensTotal: 0,
    generatedTokensTotal: 0,
    decodeStepsTotal: 0,
    decodeStepsAheadTotal: 0,
    pruneRoundsTotal: 0,
    preemptionsTotal: 0,
    requestsFinishedTotal: 0,
    requestsCancelledTotal: 0,
    requestsFailedTotal: 0,
    maxBatchSeen: 0,
    maxQueuedSeen: 0,
  };

  constructor(engine: Engine, options: SchedulerOptions) {
    this.engine = engine;
    this.options = options;
    this.#ids = this.#idsBuffer(Math.max(1, options.maxBatch));
    this.#loop = this.#run();
  }

  /** KV bytes one token costs over all layers. */
  get tokenBytes(): number {
    const c = this.engine.model.config;
    return c.numLayers * bytesPerToken({ layers: c.numLayers, nKvHeads: c.numKvHeads, headDim: c.headDim });
  }

  /**
   * The KV a request needs to start (its first allocation, all layers): more than the pool → it can never run.
   * For `full` this is the whole generation (its cache is allocated once); for the others the prompt.
   */
  minimumBytes(promptTokens: number, maxTokens: number, kv: KvSettings): number {
    const full = (kv.policy ?? "full") === "full";
    return this.#roundCap(full ? promptTokens + maxTokens : promptTokens + 16) * this.tokenBytes;
  }

  /** Queues a request; events arrive through `onEvent`. */
  submit(req: JobRequest): JobHandle {
    const c = this.engine.model.config;
    const job: Job = {
      id: this.#nextId++,
      req,
      eos: new Set(req.eos ?? c.eosTokenIds),
      decoder: this.engine.tokenizer
        ? new IncrementalDecoder(this.engine.tokenizer, { skipSpecialTokens: true })
        : null,
      stop: new StopStrings(req.stop),
      reserve: this.#projectedBytes(req),
      seq: null,
      ids: [],
      step: 0,
      cancelled: false,
      finished: false,
    };
    this.#queue.push(job);
    this.#m.maxQueuedSeen = Math.max(this.#m.maxQueuedSeen, this.#queue.length);
    this.#kick();
    return { id: job.id, cancel: () => this.#cancel(job) };
  }

  /** Slots a cache region of `n` tokens takes (the KV arena rounds capacities to its alignment). */
  #roundCap(n: number): number {
    return this.engine.kvArena().roundCapacity(n);
  }

  /** Current counters. */
  metrics(): SchedulerMetrics {
    let live = 0;
    let allocated = 0;
    for (const j of this.#active) {
      if (!j.seq) continue;
      live += j.seq.kv.liveBytes();
      allocated += j.seq.kv.allocatedBytes();
    }
    const now = performance.now();
    while (this.#rate.length > 0 && now - this.#rate[0].t > 10_000) this.#rate.shift();
    let tps = 0;
    if (this.#rate.length > 1) {
      const span = (now - this.#rate[0].t) / 1000;
      const n = this.#rate.slice(1).reduce((s, r) => s + r.n, 0);
      tps = span > 0 ? n / span : 0;
    }
    return {
      active: this.#active.length,
      queued: this.#queue.length,
      kvBytesLive: live,
      kvBytesAllocated: allocated,
      kvArenaBytes: this.engine.kvArena().allocatedBytes(),
      kvBytesCap: this.options.kvMemory,
      tokensPerSecond: tps,
      ...this.#m,
    };
  }

  /** Stops the loop after the current step; pending requests get an error. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#kick();
    await this.#loop;
    for (const j of [...this.#queue, ...this.#active]) this.#fail(j, "server shutting down");
    this.#queue.length = 0;
    this.#active.length = 0;
    this.engine.ctx.destroyLater(this.#ids);
  }

  #kick(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #cancel(job: Job): void {
    if (job.finished || job.cancelled) return;
    job.cancelled = true;
    // Settle the request's handler (its client is gone, so nobody reads this).
    job.req.onEvent({ type: "error", message: "cancelled: the client disconnected" });
    const q = this.#queue.indexOf(job);
    if (q >= 0) {
      // Queued jobs hold no KV: drop now.
      this.#queue.splice(q, 1);
      this.#release(job);
      this.#m.requestsCancelledTotal++;
    }
    // Active jobs are dropped by the loop at the next step boundary (their KV may be in recorded GPU work).
    this.#kick();
  }

  /** Projected peak KV bytes of a request (see the module comment). */
  #projectedBytes(req: JobRequest): number {
    const total = req.promptIds.length + req.maxTokens;
    const full = this.#roundCap(total) * this.tokenBytes;
    const policy = req.kv.policy ?? "full";
    if (policy === "full" || policy === "snapkv") return full;
    const { budget, lethe } = resolveKvOptions(req.kv, this.engine.kvDefaults);
    // Lethe compacts to below budget − interval per layer on average and leaves `interval` slots of headroom,
    // so a layer rarely grows past budget + interval; capped policies may overshoot their cap by the 1.5×
    // growth step.
    const perLayer = policy === "lethe"
      ? budget +
        Math.max(
          1,
          Math.min(lethe.interval, Math.floor(budget / 4)),
        ) +
        16
      : Math.ceil(budget * 1.5) + 16;
    const steady = this.#roundCap(perLayer) * this.tokenBytes;
    const prefill = this.#roundCap(req.promptIds.length + 16) * this.tokenBytes;
    return Math.min(full, Math.max(steady, prefill));
  }

  /** Initial cache capacity: the whole generation for full (no growth), the prompt plus a little otherwise. */
  #initialCapacity(job: Job, tokens: number): number {
    const policy = job.req.kv.policy ?? "full";
    if (policy === "full") return job.req.promptIds.length + job.req.maxTokens;
    return tokens + 16;
  }

  #allocated(): number {
    let s = 0;
    for (const j of this.#active) if (j.seq) s += j.seq.kv.allocatedBytes();
    return s;
  }

  #reserved(): number {
    let s = 0;
    for (const j of this.#active) s += Math.max(j.reserve, j.seq ? j.seq.kv.allocatedBytes() : 0);
    return s;
  }

  #idsBuffer(rows: number): GPUBuffer {
    this.#idsRows = rows;
    return this.engine.ctx.createBuffer(rows * 256, "server-ids");
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      try {
        this.#reap();
        // A step recorded ahead whose jobs have all left is void.
        if (this.#active.length === 0) this.#ahead = null;
        // Admission waits while a step is recorded ahead (it holds only the jobs it was recorded for).
        if (!this.#ahead) await this.#admit();
        this.#reap();
        if (this.#active.length === 0) {
          if (this.#queue.length > 0 && this.#closed === false) {
            // Submitted while this pass was past its admission (e.g. during the await above): admit it next pass.
            if (this.#head()?.fits) continue;
            // Nothing active and the head still does not fit: it never will (checked at submit), so fail it.
            const head = this.#queue.shift()!;
            this.#fail(head, "the request needs more KV memory than the server's pool");
            continue;
          }
          await new Promise<void>((r) => (this.#wake = r));
          continue;
        }
        // A step recorded ahead had its growth checked against the pool when it was recorded.
        if (!this.#ahead) this.#fitStep();
        if (this.#active.length === 0) continue;
        await this.#decodeStep();
      } catch (e) {
        // A failure inside a step: fail the sequences involved, keep serving.
        this.#ahead = null;
        const msg = e instanceof Error ? e.message : String(e);
        console.error(`scheduler: step failed: ${msg}`);
        for (const j of this.#active.splice(0)) this.#fail(j, `generation failed: ${msg}`);
      }
    }
  }

  /** Removes cancelled active jobs and frees their KV. */
  #reap(): void {
    for (let i = this.#active.length - 1; i >= 0; i--) {
      const j = this.#active[i];
      if (j.cancelled || j.finished) {
        this.#active.splice(i, 1);
        if (j.cancelled && !j.finished) this.#m.requestsCancelledTotal++;
        this.#release(j);
      }
    }
  }

  #release(job: Job): void {
    job.seq?.kv.destroy();
    job.seq = null;
  }

  #fail(job: Job, message: string): void {
    this.#release(job);
    if (job.finished) return;
    job.finished = true;
    this.#m.requestsFailedTotal++;
    job.req.onEvent({ type: "error", message });
  }

  /** The queue's head, its prompt (plus the tokens it had generated, if preempted) and whether it fits now. */
  #head(): { job: Job; tokens: number[]; resumed: boolean; fits: boolean } | null {
    if (this.#queue.length === 0 || this.#active.length >= this.options.maxBatch || this.#closed) return null;
    const job = this.#queue[0];
    const resumed = job.ids.length > 0;
    const tokens = resumed ? job.req.promptIds.concat(job.ids.slice(0, -1)) : job.req.promptIds;
    const prefillBytes = this.#roundCap(this.#initialCapacity(job, tokens.length)) * this.tokenBytes;
    const need = Math.max(job.reserve, prefillBytes);
    // The head waits while others run and it does not fit (FIFO: no overtaking, so big requests are not starved).
    const fits = !(this.#active.length > 0 && this.#reserved() + need > this.options.kvMemory) &&
      this.#allocated() + prefillBytes <= this.options.kvMemory;
    return { job, tokens, resumed, fits };
  }

  /** Prefills queued jobs while the batch and the pool have room. */
  async #admit(): Promise<void> {
    for (let head = this.#head(); head?.fits; head = this.#head()) {
      const { job, tokens, resumed } = head;
      this.#queue.shift();
      const seq = this.engine.newSequence(job.req.kv, this.#initialCapacity(job, tokens.length));
      job.seq = seq;
      this.#active.push(job);
      this.#m.maxBatchSeen = Math.max(this.#m.maxBatchSeen, this.#active.length);
      try {
        const logits = this.engine.forward.prefill(seq, tokens);
        if (!resumed) {
          this.#m.promptTokensTotal += tokens.length;
          sampleRows(
            this.engine.ctx,
            { logits, rows: 1, vocab: this.engine.model.config.vocabSize },
            { ...job.req.sampling, step: 0 },
            { buffer: this.#ids, offset: 0, size: 4 },
          );
          const [next] = await this.engine.ctx.readU32(this.#ids, 0, 1);
          if (await this.engine.maybePrune(seq, 0, true)) this.#m.pruneRoundsTotal++;
          this.#accept(job, next);
        } else {
          if (await this.engine.maybePrune(seq, 0, true)) this.#m.pruneRoundsTotal++;
        }
      } catch (e) {
        this.#active.splice(this.#active.indexOf(job), 1);
        this.#fail(job, `prefill failed: ${e instanceof Error ? e.message : String(e)}`);
      }
      this.#track();
    }
  }

  /** Bytes the next decode step would allocate for `job` (layers at capacity grow by 1.5×). */
  #growth(job: Job): number {
    const seq = job.seq!;
    const c = this.engine.model.config;
    const bpt = bytesPerToken(seq.kv.shape);
    let g = 0;
    seq.kv.layers.forEach((L, l) => {
      const cap = seq.policy.decodeCap(l, c.numLayers);
      if (cap !== null && L.len >= cap) return;
      if (L.len + 1 > L.capacity) {
        g += (this.#roundCap(Math.max(L.len + 1, Math.ceil(L.capacity * 1.5))) - L.capacity) * bpt;
      }
    });
    return g;
  }

  /** Preempts the youngest sequences until the next step fits the pool. */
  #fitStep(): void {
    for (;;) {
      const need = this.#allocated() + this.#active.reduce((s, j) => s + this.#growth(j), 0);
      if (need <= this.options.kvMemory) return;
      if (this.#active.length === 1) {
        // Alone and still too big: it cannot continue.
        const j = this.#active.pop()!;
        this.#finish(j, "length");
        this.#release(j);
        return;
      }
      const victim = this.#active.pop()!;
      this.#release(victim);
      victim.reserve = Math.max(victim.reserve, need - this.#allocated());
      this.#queue.unshift(victim);
      this.#m.preemptionsTotal++;
    }
  }

  /**
   * One decode step for every active job. Its logits come from a step recorded ahead when there is one (the
   * rows of the jobs still running), else from a fresh `forward.decode`. When no queued request could be
   * admitted now, no job's pruning round is due and the next step's growth fits the pool, the next step is
   * recorded on the GPU-resident sampled ids before they are read back — the readback's round trip overlaps
   * it — and kept for the next call; a job that turns out to have finished leaves its row unused.
   */
  async #decodeStep(): Promise<void> {
    const jobs = this.#active.slice();
    const B = jobs.length;
    if (B > this.#idsRows) {
      this.engine.ctx.destroyLater(this.#ids);
      this.#ids = this.#idsBuffer(B);
    }
    const vocab = this.engine.model.config.vocabSize;
    let logits: GPUBuffer;
    let picked: GPUBuffer | null = null;
    const ahead = this.#ahead;
    this.#ahead = null;
    if (ahead && ahead.jobs.length === B && ahead.jobs.every((j, b) => j === jobs[b])) logits = ahead.logits;
    else if (ahead) {
      logits = picked = this.engine.pickLogitsRows(
        ahead.logits,
        jobs.map((j) => ahead.jobs.indexOf(j)),
      );
    } else {
      logits = this.engine.forward.decode(
        jobs.map((j) => j.seq!),
        jobs.map((j) => j.ids[j.ids.length - 1]),
      );
    }
    // All greedy (the common case for reasoning): one argmax over every row, ids packed at the buffer's start.
    // Otherwise one sampling dispatch per row (each request has its own temperature, top-p and seed), each id
    // at its own 256-byte slot (storage binding offsets must be aligned).
    const greedy = jobs.every((j) => !(j.req.sampling.temperature > 0));
    const stride = greedy ? 1 : 64;
    if (greedy) {
      sampleRows(this.engine.ctx, { logits, rows: B, vocab }, { ...DEFAULT_SAMPLING, step: 0 }, {
        buffer: this.#ids,
        offset: 0,
        size: B * 4,
      });
    } else {
      jobs.forEach((j, b) => {
        sampleRows(
          this.engine.ctx,
          { logits, rows: 1, vocab, offset: b * vocab },
          { ...j.req.sampling, step: j.step + 1 },
          { buffer: this.#ids, offset: b * 256, size: 4 },
        );
      });
    }
    if (picked) this.engine.ctx.pool.release(picked);
    const live = jobs.filter((j) => !j.cancelled);
    // Not when a queued request could be admitted now: admission waits while a step is recorded ahead.
    const recordAhead = live.length === B && !this.#head()?.fits && !this.#closed &&
      !jobs.some((j) => this.engine.wantsPrune(j.seq!, j.step + 1, false)) &&
      this.#allocated() + jobs.reduce((n, j) => n + this.#growth(j), 0) <= this.options.kvMemory;
    if (recordAhead) {
      // The next step's input: the ids packed (per-row sampling left each at its own 256-byte slot).
      let packed = this.#ids;
      if (!greedy) {
        packed = this.engine.ctx.pool.acquire(B * 4, STORAGE_USAGE, "server-ids-packed");
        for (let b = 0; b < B; b++) this.engine.ctx.copy(this.#ids, b * 256, packed, b * 4, 4);
      }
      const read = this.engine.ctx.read(packed, 0, B * 4);
      this.#ahead = { jobs, logits: this.engine.forward.decode(jobs.map((j) => j.seq!), packed) };
      if (packed !== this.#ids) this.engine.ctx.pool.release(packed);
      this.#m.decodeStepsAheadTotal++;
      this.engine.ctx.flush();
      this.#acceptStep(jobs, new Uint32Array(await read), 1);
      return;
    }
    // One readback per step: the sampled ids, then the positions and scores of every live sequence whose
    // pruning round is due after this step (each round read on its own stalled the whole batch once per sequence).
    const { head, rounds } = await this.engine.readAndPrune(
      live.map((j) => j.seq!),
      live.map((j) => j.step + 1),
      { buffer: this.#ids, bytes: B * 256 },
      this.options.alignRounds ?? true,
    );
    this.#m.pruneRoundsTotal += rounds.filter((r) => r !== null).length;
    this.#acceptStep(jobs, new Uint32Array(head!, 0, B * 64), stride);
  }

  /** Counts a finished step and hands job b the id at `raw[b * stride]`. */
  #acceptStep(jobs: Job[], raw: Uint32Array, stride: number): void {
    const B = jobs.length;
    this.#m.decodeStepsTotal++;
    const now = performance.now();
    this.#rate.push({ t: now, n: B });
    while (this.#rate.length > 1 && now - this.#rate[0].t > 10_000) this.#rate.shift();
    for (let b = 0; b < B; b++) {
      const j = jobs[b];
      j.step++;
      if (j.cancelled) continue;
      this.#accept(j, raw[b * stride]);
    }
    this.#track();
  }

  /** Takes a sampled token: emits its text, and ends the job on EOS, a stop string or max_tokens. */
  #accept(job: Job, id: number): void {
    job.ids.push(id);
    this.#m.generatedTokensTotal++;
    if (job.eos.has(id)) {
      job.req.onEvent({ type: "token", id, text: "" });
      return this.#finish(job, "stop");
    }
    let text = "";
    if (job.decoder) text = job.stop.push(job.decoder.push(id));
    job.req.onEvent({ type: "token", id, text });
    if (job.stop.stopped) return this.#finish(job, "stop");
    if (job.ids.length >= job.req.maxTokens) this.#finish(job, "length");
  }

  #finish(job: Job, reason: FinishReason): void {
    if (job.finished) return;
    if (job.decoder && !job.stop.stopped) {
      const rest = job.stop.push(job.decoder.flush()) + job.stop.flush();
      if (rest) job.req.onEvent({ type: "token", id: -1, text: rest });
    }
    job.finished = true;
    this.#m.requestsFinishedTotal++;
    job.req.onEvent({
      type: "done",
      finishReason: reason,
      promptTokens: job.req.promptIds.length,
      completionTokens: job.ids.length,
    });
  }

  #track(): void {
    this.#m.kvBytesPeak = Math.max(this.#m.kvBytesPeak, this.#allocated());
  }
}
