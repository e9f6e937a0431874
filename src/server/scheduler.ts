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
import type { Engine } from "../engine/engine.ts";
import type { DecodeRunner, RunnerRow } from "../engine/runner.ts";
import type { SamplingOptions, TokenLogprobs } from "../engine/sampler.ts";
import { StopStrings } from "../engine/stop.ts";
import { bytesPerToken, type KvDtype } from "../kv/cache.ts";
import type { KvSettings } from "../kv/options.ts";
import { IncrementalDecoder } from "../../tokenizer/mod.ts";

/** Why a generation ended (OpenAI's names; "stop" covers EOS and stop strings). */
export type FinishReason = "stop" | "length";

/**
 * What the scheduler reports about a job; `index` is the choice (0 … n − 1) it concerns. A token event with
 * id −1 carries text held back until the end (no token).
 */
export type JobEvent =
  | { type: "token"; index: number; id: number; text: string; logprobs?: TokenLogprobs | null }
  | {
    type: "done";
    index: number;
    finishReason: FinishReason;
    promptTokens: number;
    completionTokens: number;
  }
  | {
    type: "error";
    index: number;
    message: string;
    /**
     * Why, when it is not an engine failure: `request_timeout` (its deadline passed while it was queued),
     * `shutting_down` (the scheduler closed), `cancelled` (the client went away).
     */
    code?: "request_timeout" | "shutting_down" | "cancelled";
  };

/** Thrown by {@link Scheduler.submit} when {@link SchedulerOptions.maxQueue} requests already wait. */
export class QueueFullError extends Error {
  constructor(readonly queued: number) {
    super(`${queued} requests are already waiting for admission; try again later`);
  }
}

/** One generation request as the scheduler takes it. */
export interface JobRequest {
  /** The prompt's token ids. */
  promptIds: number[];
  /** Most tokens generated. */
  maxTokens: number;
  /** How each token is chosen (choice i draws with seed + i, mod 2^32). */
  sampling: SamplingOptions;
  /**
   * Choices (default 1): the prompt is prefilled once and its cache copied on the GPU for the others, which
   * then decode in the batch like any sequence. Each choice's events carry its `index`.
   */
  n?: number;
  /** Report each token's logprob and this many top ids (0–20); null/undefined: none. */
  logprobs?: number | null;
  /** KV policy and settings; the rest come from the engine's defaults. */
  kv: KvSettings;
  /** Stop at the earliest of these strings in the decoded text (the stop string is not emitted). */
  stop: string[];
  /** Stop token ids (default: the model's EOS ids). */
  eos?: number[];
  /** Receives each choice's tokens, then exactly one `done` or `error` per choice. */
  onEvent: (e: JobEvent) => void;
  /**
   * Wall-clock deadline (`performance.now()` time): past it an active job ends with finish reason "length" (its
   * KV freed at the next step boundary) and a queued one with an error of code `request_timeout`.
   */
  deadline?: number;
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
  /**
   * Most requests waiting for admission; {@link Scheduler.submit} throws {@link QueueFullError} past it
   * (default: no bound).
   */
  maxQueue?: number;
}

/** Counters and gauges for /metrics. */
export interface SchedulerMetrics {
  /** Sequences in the decode batch. */
  active: number;
  /** Requests waiting for admission (KV pool or batch full, or preempted). */
  queued: number;
  /** KV bytes holding valid tokens, over all sequences. */
  kvBytesLive: number;
  /** KV bytes allocated, over all sequences. */
  kvBytesAllocated: number;
  /** GPU bytes of the shared KV arena: the sequences' regions plus free space held for reuse. */
  kvArenaBytes: number;
  /** Most KV bytes allocated at once since start. */
  kvBytesPeak: number;
  /** The pool's byte cap ({@link SchedulerOptions.kvMemory}). */
  kvBytesCap: number;
  /** Prompt tokens prefilled (a preempted request's recompute not counted). */
  promptTokensTotal: number;
  /** Tokens generated. */
  generatedTokensTotal: number;
  /** Batched decode steps. */
  decodeStepsTotal: number;
  /** Decode steps recorded before the previous step's ids were read back. */
  decodeStepsAheadTotal: number;
  /** KV pruning rounds run, over all sequences. */
  pruneRoundsTotal: number;
  /** Sequences preempted because the KV pool ran short. */
  preemptionsTotal: number;
  /** Requests that finished (stop or length). */
  requestsFinishedTotal: number;
  /** Requests whose client went away. */
  requestsCancelledTotal: number;
  /** Requests ended with an error: an engine failure, too big for the pool, or pending at shutdown. */
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
  /** Its choice number, and every choice of its request (itself included). */
  readonly index: number;
  readonly group: Job[];
  readonly eos: Set<number>;
  readonly decoder: IncrementalDecoder | null;
  readonly stop: StopStrings;
  /** Projected peak KV bytes (grows to the largest seen after a preemption). */
  reserve: number;
  /** Whether its policy ever prunes (decided once at submit: admission asks every step). */
  readonly prunes: boolean;
  /** How its K/V are stored (its arena and bytes per token). */
  readonly dtype: KvDtype;
  /** Its row in the runner's batch while it holds a cache (step counts survive a preemption). */
  row: RunnerRow;
  /** Whether `row.seq` is a live cache (false while queued). */
  admitted: boolean;
  /** Generated ids; the last one is fed at the next decode step. */
  ids: number[];
  cancelled: boolean;
  finished: boolean;
}

/** A handle the HTTP layer keeps to cancel its request. */
export interface JobHandle {
  /** The job's number, unique within the scheduler. */
  readonly id: number;
  /** Drops the request with an `error` event; its KV is freed by the next step. No-op once it ended. */
  cancel(): void;
}

/** The continuous-batching loop. */
export class Scheduler {
  /** The engine it runs; nothing else may use it while the scheduler is open. */
  readonly engine: Engine;
  /** The settings it was created with. */
  readonly options: SchedulerOptions;
  readonly #queue: Job[] = [];
  readonly #active: Job[] = [];
  #nextId = 1;
  #wake: (() => void) | null = null;
  #closed = false;
  #loop: Promise<void>;
  /** Decode steps, decode ahead and pruning rounds: the scheduler only says who is in the batch. */
  readonly #runner: DecodeRunner;
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

  /** Starts the loop on `engine`; it idles until a request is submitted. */
  constructor(engine: Engine, options: SchedulerOptions) {
    this.engine = engine;
    this.options = options;
    this.#runner = engine.createRunner();
    this.#loop = this.#run();
  }

  /** KV bytes one token costs over all layers in the engine's default KV dtype. */
  get tokenBytes(): number {
    return this.engine.kvTokenBytes();
  }

  /**
   * The KV a request needs to start (its first allocation, all layers): more than the pool → it can never run.
   * For a policy that never prunes this is the whole generation (its cache is allocated once); else the prompt.
   */
  minimumBytes(promptTokens: number, maxTokens: number, kv: KvSettings): number {
    return Scheduler.minimumBytes(this.engine, promptTokens, maxTokens, kv);
  }

  /** {@link Scheduler.minimumBytes} for `engine`, before any scheduler runs on it (startup checks). */
  static minimumBytes(engine: Engine, promptTokens: number, maxTokens: number, kv: KvSettings): number {
    const policy = engine.policy(kv);
    const dtype = policy.options.dtype;
    return engine.kvSlots(policy.prunes ? promptTokens + 16 : promptTokens + maxTokens, dtype) *
      engine.kvTokenBytes(dtype);
  }

  /** Whether {@link SchedulerOptions.maxQueue} requests already wait (the next submit would throw). */
  get queueFull(): boolean {
    return this.#queue.length >= (this.options.maxQueue ?? Infinity);
  }

  /** Whether no request is queued or running (a draining server may stop). */
  get idle(): boolean {
    return this.#queue.length === 0 && this.#active.length === 0;
  }

  /**
   * Queues a request (its n choices queue together and are admitted together); events arrive through
   * `onEvent`. Throws {@link QueueFullError} when the queue is full.
   */
  submit(req: JobRequest): JobHandle {
    if (this.queueFull) throw new QueueFullError(this.#queue.length);
    const n = req.n ?? 1;
    if (!(Number.isInteger(n) && n >= 1)) {
      throw new RangeError(`Scheduler.submit: n must be an integer ≥ 1, got ${n}`);
    }
    const c = this.engine.model.config;
    // The request's policy, built once: its reservation and whether it prunes never change.
    const policy = this.engine.policy(req.kv);
    const group: Job[] = [];
    const id = this.#nextId++;
    for (let i = 0; i < n; i++) {
      group.push({
        id,
        req,
        index: i,
        group,
        eos: new Set(req.eos ?? c.eosTokenIds),
        decoder: this.engine.tokenizer
          ? new IncrementalDecoder(this.engine.tokenizer, { skipSpecialTokens: true })
          : null,
        stop: new StopStrings(req.stop),
        reserve: this.#projectedBytes(req, policy.reserveTokens(c.numLayers), policy.options.dtype),
        dtype: policy.options.dtype,
        prunes: policy.prunes,
        row: {
          seq: null as never,
          // Each choice its own RNG stream: seed + i (choice 0 draws what n = 1 would).
          sampling: { ...req.sampling, seed: (req.sampling.seed + i) >>> 0 },
          step: 0,
          next: 0,
          logprobs: req.logprobs,
        },
        admitted: false,
        ids: [],
        cancelled: false,
        finished: false,
      });
    }
    this.#queue.push(...group);
    this.#m.maxQueuedSeen = Math.max(this.#m.maxQueuedSeen, this.#queue.length);
    this.#kick();
    return { id, cancel: () => group.forEach((j) => this.#cancel(j)) };
  }

  /** Slots a cache region of `n` tokens takes in the arena of `dtype` (capacities round to its alignment). */
  #roundCap(n: number, dtype: KvDtype): number {
    return this.engine.kvSlots(n, dtype);
  }

  /** Current counters. */
  metrics(): SchedulerMetrics {
    let live = 0;
    let allocated = 0;
    for (const j of this.#active) {
      if (!j.admitted) continue;
      live += j.row.seq.kv.liveBytes();
      allocated += j.row.seq.kv.allocatedBytes();
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
      kvArenaBytes: this.engine.kvArenaBytes(),
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
    for (const j of [...this.#queue, ...this.#active]) this.#fail(j, "server shutting down", "shutting_down");
    this.#queue.length = 0;
    this.#active.length = 0;
    this.#runner.destroy();
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
    job.req.onEvent({
      type: "error",
      index: job.index,
      message: "cancelled: the client disconnected",
      code: "cancelled",
    });
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

  /** Projected peak KV bytes of a request whose policy reserves `perLayer` tokens (see the module comment). */
  #projectedBytes(req: JobRequest, perLayer: number | null, dtype: KvDtype): number {
    const bytes = this.engine.kvTokenBytes(dtype);
    const full = this.#roundCap(req.promptIds.length + req.maxTokens, dtype) * bytes;
    if (perLayer === null) return full;
    const steady = this.#roundCap(perLayer, dtype) * bytes;
    const prefill = this.#roundCap(req.promptIds.length + 16, dtype) * bytes;
    return Math.min(full, Math.max(steady, prefill));
  }

  /** Initial cache capacity: the whole generation when nothing is ever pruned (no growth), else the prompt + a little. */
  #initialCapacity(job: Job, tokens: number): number {
    if (!job.prunes) return job.req.promptIds.length + job.req.maxTokens;
    return tokens + 16;
  }

  #allocated(): number {
    let s = 0;
    for (const j of this.#active) if (j.admitted) s += j.row.seq.kv.allocatedBytes();
    return s;
  }

  #reserved(): number {
    let s = 0;
    for (const j of this.#active) s += Math.max(j.reserve, j.admitted ? j.row.seq.kv.allocatedBytes() : 0);
    return s;
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      try {
        this.#expire();
        this.#reap();
        // A step recorded ahead whose jobs have all left is void.
        if (this.#active.length === 0) this.#runner.discardAhead();
        // Admission waits while a step is recorded ahead (it holds only the jobs it was recorded for).
        if (!this.#runner.hasAhead) await this.#admit();
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
          // close() may have run while this pass awaited admission (its kick found no waiter then).
          if (!this.#closed) await new Promise<void>((r) => (this.#wake = r));
          continue;
        }
        // A step recorded ahead had its growth checked against the pool when it was recorded.
        if (!this.#runner.hasAhead) this.#fitStep();
        if (this.#active.length === 0) continue;
        await this.#decodeStep();
      } catch (e) {
        // A failure inside a step: fail the sequences involved, keep serving.
        this.#runner.discardAhead();
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
    if (job.admitted) job.row.seq.kv.destroy();
    this.#runner.release(job.row);
    job.admitted = false;
  }

  #fail(job: Job, message: string, code?: "request_timeout" | "shutting_down"): void {
    this.#release(job);
    if (job.finished) return;
    job.finished = true;
    this.#m.requestsFailedTotal++;
    job.req.onEvent({ type: "error", index: job.index, message, ...(code ? { code } : {}) });
  }

  /** Ends jobs past their deadline: queued ones fail (`request_timeout`), active ones finish with "length". */
  #expire(): void {
    const now = performance.now();
    for (let i = this.#queue.length - 1; i >= 0; i--) {
      const j = this.#queue[i];
      if (j.req.deadline === undefined || now < j.req.deadline || j.cancelled) continue;
      this.#queue.splice(i, 1);
      // A preempted job has tokens already: it ends as an active one would.
      if (j.ids.length > 0) this.#finish(j, "length");
      else this.#fail(j, "the request timed out waiting for admission", "request_timeout");
      this.#release(j);
    }
    // Finished active jobs leave the batch (and free their KV) at the next #reap, like any finished job.
    for (const j of this.#active) {
      if (j.req.deadline !== undefined && now >= j.req.deadline && !j.cancelled) this.#finish(j, "length");
    }
  }

  /**
   * The queue's head, its prompt (plus the tokens it had generated, if preempted), the other fresh choices of its
   * request queued right behind it (admitted with it: prefilled once, then forked), and whether they fit now.
   */
  #head(): { job: Job; tokens: number[]; resumed: boolean; forks: Job[]; fits: boolean } | null {
    if (this.#queue.length === 0 || this.#active.length >= this.options.maxBatch || this.#closed) return null;
    const job = this.#queue[0];
    const resumed = job.ids.length > 0;
    const tokens = resumed ? job.req.promptIds.concat(job.ids.slice(0, -1)) : job.req.promptIds;
    const forks: Job[] = [];
    if (!resumed) {
      for (let i = 1; i < this.#queue.length; i++) {
        const f = this.#queue[i];
        if (f.group !== job.group || f.ids.length > 0) break;
        forks.push(f);
      }
    }
    const k = 1 + forks.length;
    const prefillBytes = this.#roundCap(this.#initialCapacity(job, tokens.length), job.dtype) *
      this.engine.kvTokenBytes(job.dtype);
    const need = k * Math.max(job.reserve, prefillBytes);
    // The head waits while others run and it does not fit (FIFO: no overtaking, so big requests are not starved).
    // A request's choices join together: past maxBatch only when the batch is otherwise empty.
    const fits = !(this.#active.length > 0 && this.#active.length + k > this.options.maxBatch) &&
      !(this.#active.length > 0 && this.#reserved() + need > this.options.kvMemory) &&
      this.#allocated() + k * prefillBytes <= this.options.kvMemory;
    return { job, tokens, resumed, forks, fits };
  }

  /** Prefills queued jobs while the batch and the pool have room. */
  async #admit(): Promise<void> {
    for (let head = this.#head(); head?.fits; head = this.#head()) {
      const { job, tokens, resumed, forks } = head;
      this.#queue.splice(0, 1 + forks.length);
      job.row.seq = this.engine.newSequence(job.req.kv, this.#initialCapacity(job, tokens.length));
      const all = [job, ...forks];
      for (const j of all) {
        j.admitted = j === job;
        this.#active.push(j);
      }
      this.#m.maxBatchSeen = Math.max(this.#m.maxBatchSeen, this.#active.length);
      try {
        // A resumed job recomputes its cache; its next token is the last one it generated.
        const first = await this.#runner.prefill(job.row, tokens, {
          sample: !resumed,
          forks: forks.map((f) => f.row),
          counts: { prompt: job.req.promptIds, generated: job.ids },
        });
        for (const f of forks) f.admitted = true;
        if (first.round) this.#m.pruneRoundsTotal++;
        if (!resumed) {
          this.#m.promptTokensTotal += tokens.length;
          this.#accept(job, first.id!, first.logprobs);
          forks.forEach((f, i) => {
            this.#accept(f, first.forks[i].id, first.forks[i].logprobs);
            f.row.next = f.ids[f.ids.length - 1];
          });
        }
        job.row.next = job.ids[job.ids.length - 1];
      } catch (e) {
        for (const j of all) {
          this.#active.splice(this.#active.indexOf(j), 1);
          this.#fail(j, `prefill failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      this.#track();
    }
  }

  /** Bytes the next decode step would allocate for `job` (layers at capacity grow by 1.5×). */
  #growth(job: Job): number {
    const seq = job.row.seq;
    const c = this.engine.model.config;
    const bpt = bytesPerToken(seq.kv.shape);
    let g = 0;
    seq.kv.layers.forEach((L, l) => {
      const cap = seq.policy.decodeCap(l, c.numLayers);
      if (cap !== null && L.len >= cap) return;
      if (L.len + 1 > L.capacity) {
        g += (this.#roundCap(Math.max(L.len + 1, Math.ceil(L.capacity * 1.5)), job.dtype) - L.capacity) * bpt;
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
   * One decode step for every active job, through the runner. When no queued request could be admitted now, no
   * job's pruning round is due and the next step's growth fits the pool, the runner records the next step on the
   * GPU-resident sampled ids before they are read back, and uses it at the next call; a job that turns out to
   * have finished leaves its row unused.
   */
  async #decodeStep(): Promise<void> {
    const jobs = this.#active.slice();
    const result = await this.#runner.step(jobs.map((j) => j.row), {
      align: this.options.alignRounds ?? true,
      // Cancelled jobs are dropped at the next step boundary; their rounds would be wasted.
      prunes: (row) => !jobs.find((j) => j.row === row)!.cancelled,
      // Not when a queued request could be admitted now: admission waits while a step is recorded ahead.
      mayRecordAhead: () =>
        jobs.every((j) => !j.cancelled) && !this.#head()?.fits && !this.#closed &&
        this.#allocated() + jobs.reduce((n, j) => n + this.#growth(j), 0) <= this.options.kvMemory,
    });
    if (result.ahead) this.#m.decodeStepsAheadTotal++;
    this.#m.pruneRoundsTotal += result.rounds.filter((r) => r !== null).length;
    this.#m.decodeStepsTotal++;
    const now = performance.now();
    this.#rate.push({ t: now, n: jobs.length });
    while (this.#rate.length > 1 && now - this.#rate[0].t > 10_000) this.#rate.shift();
    jobs.forEach((j, b) => {
      if (j.cancelled) return;
      this.#accept(j, result.ids[b], result.logprobs[b]);
      j.row.next = result.ids[b];
    });
    this.#track();
  }

  /** Takes a sampled token: emits its text, and ends the job on EOS, a stop string or max_tokens. */
  #accept(job: Job, id: number, logprobs: TokenLogprobs | null = null): void {
    job.ids.push(id);
    this.#m.generatedTokensTotal++;
    const index = job.index;
    if (job.eos.has(id)) {
      job.req.onEvent({ type: "token", index, id, text: "", logprobs });
      return this.#finish(job, "stop");
    }
    let text = "";
    if (job.decoder) text = job.stop.push(job.decoder.push(id));
    job.req.onEvent({ type: "token", index, id, text, logprobs });
    if (job.stop.stopped) return this.#finish(job, "stop");
    if (job.ids.length >= job.req.maxTokens) this.#finish(job, "length");
  }

  #finish(job: Job, reason: FinishReason): void {
    if (job.finished) return;
    if (job.decoder && !job.stop.stopped) {
      const rest = job.stop.push(job.decoder.flush()) + job.stop.flush();
      if (rest) job.req.onEvent({ type: "token", index: job.index, id: -1, text: rest });
    }
    job.finished = true;
    this.#m.requestsFinishedTotal++;
    job.req.onEvent({
      type: "done",
      index: job.index,
      finishReason: reason,
      promptTokens: job.req.promptIds.length,
      completionTokens: job.ids.length,
    });
  }

  #track(): void {
    this.#m.kvBytesPeak = Math.max(this.#m.kvBytesPeak, this.#allocated());
  }
}
