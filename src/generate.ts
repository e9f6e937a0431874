/**
 * Generation: prefill, the decode loop, sampling on the GPU, stop conditions, streaming text, KV policy
 * rounds and statistics. `Engine` is the library's entry point (also used by the CLI).
 */
import { GpuContext, STORAGE_USAGE } from "./gpu/context.ts";
import { KvArena } from "./kv/arena.ts";
import { bytesPerToken, type Compaction, SequenceKv } from "./kv/cache.ts";
import { DEFAULT_KV_OPTIONS, type KvPolicy, type KvPolicyOptions, type LetheOptions } from "./kv/policy.ts";
import { loadKvDefaults } from "./kv/defaults.ts";
import { type KvOptions, type KvSettings, resolveKvOptions } from "./kv/options.ts";
export { resolveKvOptions };
export type { KvOptions, KvSettings };
import type { LayerView, PolicyName } from "./kv/policy.ts";
import { createPolicy } from "./kv/policies/mod.ts";
import { Forward, type SequenceState } from "./model/forward.ts";
import { GpuModel } from "./model/model.ts";
import { sampleRows } from "./ops/sample.ts";
import { IncrementalDecoder, Tokenizer } from "../tokenizer/mod.ts";

/** How the next token is chosen. temperature 0 → greedy (argmax). */
export interface SamplingOptions {
  temperature: number;
  /** Keep the k most likely tokens (0 = off). */
  topK: number;
  /** Keep the smallest set of tokens whose probability mass reaches p (1 = off). */
  topP: number;
  /** RNG seed: the same seed gives the same output. */
  seed: number;
}

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

/** Options of {@link Engine.generate}. */
export interface GenerateOptions {
  maxTokens?: number;
  sampling?: Partial<SamplingOptions>;
  kv?: KvSettings;
  /** Stop when the decoded text contains any of these (the stop string is not returned). */
  stop?: string[];
  /** Stop at these token ids (default: the model's EOS ids). */
  eos?: number[];
  /** Called with each piece of text as soon as it is final (never splits a UTF-8 character). */
  onText?: (text: string) => void;
  /** Called with each generated token id. */
  onToken?: (id: number) => void;
  /** Called after each pruning round. */
  onPrune?: (round: PruneRound) => void;
  /** Called after every decode step with the sequence's cache (tests check invariants here). */
  onStep?: (step: number, kv: SequenceKv) => void | Promise<void>;
}

/** Statistics of one generation (field names as in the CLI's JSON). */
export interface GenerationStats {
  prefill_tokens: number;
  decode_tokens: number;
  prefill_tok_s: number;
  decode_tok_s: number;
  weights_bytes: number;
  kv_policy: PolicyName;
  /** Peak bytes allocated for the KV cache (K, V, positions, scores). */
  kv_bytes_peak: number;
  /** Peak bytes holding valid tokens. */
  kv_bytes_live_peak: number;
  /** What FullKV would have held at the end (every token in every layer). */
  kv_bytes_full_equivalent: number;
  kv_tokens_per_layer: number[];
  prune_rounds: number;
  hoyer_per_layer: number[] | null;
}

/** The outcome of one generation. */
export interface GenerationResult {
  promptIds: number[];
  ids: number[];
  text: string;
  finishReason: "stop" | "eos" | "length";
  stats: GenerationStats;
}

/** The default sampling: greedy. */
export const DEFAULT_SAMPLING: SamplingOptions = { temperature: 0, topK: 0, topP: 1, seed: 0 };

/** Builds the policy for a generation from partial options over `defaults`. */
export function buildPolicy(kv: KvSettings = {}, defaults: KvPolicyOptions = DEFAULT_KV_OPTIONS): KvPolicy {
  return createPolicy(kv.policy ?? "full", resolveKvOptions(kv, defaults));
}

/** Holds back text that could still become the start of a stop string. */
class StopFilter {
  #pending = "";
  #emitted = "";
  readonly #stops: string[];
  readonly #hold: number;
  stopped = false;

  constructor(stops: string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
    this.#hold = Math.max(0, ...this.#stops.map((s) => s.length - 1));
  }

  /** Adds text; returns what is safe to show now. */
  push(text: string): string {
    if (this.stopped) return "";
    this.#pending += text;
    for (const s of this.#stops) {
      const at = (this.#emitted.slice(-this.#hold) + this.#pending).indexOf(s);
      if (at >= 0) {
        const cut = at - Math.min(this.#hold, this.#emitted.length);
        const out = this.#pending.slice(0, Math.max(0, cut));
        this.stopped = true;
        this.#pending = "";
        this.#emitted += out;
        return out;
      }
    }
    const safe = Math.max(0, this.#pending.length - this.#hold);
    // Never cut a surrogate pair.
    let end = safe;
    if (end > 0 && end < this.#pending.length && /[\uD800-\uDBFF]/.test(this.#pending[end - 1])) end--;
    const out = this.#pending.slice(0, end);
    this.#pending = this.#pending.slice(end);
    this.#emitted += out;
    return out;
  }

  /** Ends the stream. */
  flush(): string {
    const out = this.stopped ? "" : this.#pending;
    this.#pending = "";
    this.#emitted += out;
    return out;
  }

  get text(): string {
    return this.#emitted;
  }
}

/** A loaded model ready to generate. */
export class Engine {
  readonly ctx: GpuContext;
  readonly model: GpuModel;
  readonly forward: Forward;
  /** Null for models that ship without a tokenizer.json (then prompts are token ids). */
  readonly tokenizer: Tokenizer | null;
  /** KV settings wherever a generation gives none: the model's kv_defaults.json over the project's. */
  readonly kvDefaults: KvPolicyOptions;
  #ids: GPUBuffer;

  constructor(
    ctx: GpuContext,
    model: GpuModel,
    tokenizer: Tokenizer | null,
    kvDefaults: KvPolicyOptions = DEFAULT_KV_OPTIONS,
  ) {
    this.ctx = ctx;
    this.model = model;
    this.tokenizer = tokenizer;
    this.kvDefaults = kvDefaults;
    this.forward = new Forward(ctx, model);
    this.#ids = ctx.createBuffer(4 * 64, "sampled-ids");
  }

  /**
   * Loads a Hugging Face model directory (config.json, safetensors, optional tokenizer.json). Unless
   * `warmup` is false, runs a tiny prefill and decode so every pipeline is compiled before the first timing.
   */
  static async load(
    dir: string,
    options: { ctx?: GpuContext; progress?: boolean; warmup?: boolean } = {},
  ): Promise<Engine> {
    const ctx = options.ctx ?? await GpuContext.create();
    const model = await GpuModel.load(ctx, dir, { progress: options.progress });
    let tokenizer: Tokenizer | null = null;
    try {
      await Deno.stat(`${dir}/tokenizer.json`);
      tokenizer = await Tokenizer.fromFile(`${dir}/tokenizer.json`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const engine = new Engine(ctx, model, tokenizer, await loadKvDefaults(dir));
    if (options.warmup ?? true) await engine.warmup();
    return engine;
  }

  /** Compiles the prefill (matmul) and decode (matvec) pipelines and the sampler by running them once. */
  async warmup(): Promise<void> {
    const seq = this.newSequence({ policy: "full" }, 16);
    try {
      const prompt = Array.from({ length: 9 }, (_, i) => i % this.model.config.vocabSize);
      await this.sampleIds(this.forward.prefill(seq, prompt), 1, { ...DEFAULT_SAMPLING, temperature: 1 }, 0);
      await this.sampleIds(this.forward.decode([seq], [0]), 1, DEFAULT_SAMPLING, 1);
    } finally {
      seq.kv.destroy();
    }
  }

  /** Encodes a prompt (raw text, special tokens recognised), adding BOS when the tokenizer asks for it. */
  encode(text: string): number[] {
    if (!this.tokenizer) {
      throw new Error(`model ${this.model.dir} has no tokenizer.json: pass token ids instead`);
    }
    return this.tokenizer.encode(text, { addSpecialTokens: true });
  }

  /**
   * A fresh sequence with its own KV cache and policy. The cache starts with room for `expectedTokens`, but no
   * more than a budgeted policy will hold after the prompt (`promptTokens`) — pruned caches never allocate
   * what they will not keep.
   */
  newSequence(kv: KvSettings = {}, expectedTokens = 64, promptTokens = 0): SequenceState {
    const c = this.model.config;
    const policy = buildPolicy(kv, this.kvDefaults);
    if (policy.name !== "full" && policy.name !== "snapkv") {
      const caps = Array.from({ length: c.numLayers }, (_, l) => policy.decodeCap(l, c.numLayers) ?? 0);
      const keep = Math.max(policy.options.budget + policy.roundHeadroom, ...caps);
      expectedTokens = Math.min(expectedTokens, Math.max(promptTokens, keep));
    }
    const cache = new SequenceKv(this.ctx, {
      layers: c.numLayers,
      nKvHeads: c.numKvHeads,
      headDim: c.headDim,
    }, expectedTokens);
    return { kv: cache, policy, pos: 0 };
  }

  /** The shared KV storage this engine's sequences take their regions from. */
  kvArena(): KvArena {
    const c = this.model.config;
    return KvArena.of(this.ctx, c.numLayers, c.numKvHeads * c.headDim);
  }

  /** Samples one id per logits row on the GPU and reads back only the ids. */
  async sampleIds(logits: GPUBuffer, rows: number, s: SamplingOptions, step: number): Promise<number[]> {
    return [...await this.ctx.readU32(this.#sample(logits, rows, s, step), 0, rows)];
  }

  /**
   * Samples one id per logits row (row i belongs to `seqs[i]`, at decode step `step`) and runs the pruning
   * rounds due after this step, reading the ids and the rounds' positions and scores back in one transfer —
   * a second readback per round would cost a full GPU round trip (~10 ms on CPU adapters).
   */
  async sampleAndPrune(
    logits: GPUBuffer,
    seqs: SequenceState[],
    s: SamplingOptions,
    step: number,
  ): Promise<{ ids: number[]; rounds: (PruneRound | null)[] }> {
    const rows = seqs.length;
    const ids = this.#sample(logits, rows, s, step);
    const { head, rounds } = await this.readAndPrune(seqs, seqs.map(() => step), {
      buffer: ids,
      bytes: rows * 4,
    });
    return { ids: [...new Uint32Array(head!, 0, rows)], rounds };
  }

  /**
   * Samples one id per logits row into the engine's GPU id buffer and starts reading the ids back without
   * waiting for them. Record the next decode step on `ids` (the embedding reads it directly), then await
   * `read`: the readback's round trip overlaps that step's GPU work.
   */
  sampleAhead(
    logits: GPUBuffer,
    rows: number,
    s: SamplingOptions,
    step: number,
  ): { ids: GPUBuffer; read: Promise<number[]> } {
    const ids = this.#sample(logits, rows, s, step);
    return { ids, read: this.ctx.readU32(ids, 0, rows).then((a) => [...a]) };
  }

  /**
   * Rows `rows` of a logits buffer ([*, vocab] f32) copied together, in that order, into a pooled buffer — the
   * rows of a step recorded ahead whose sequences are still running. Release it to `ctx.pool` once its reader
   * is recorded.
   */
  pickLogitsRows(logits: GPUBuffer, rows: number[]): GPUBuffer {
    const bytes = this.model.config.vocabSize * 4;
    const out = this.ctx.pool.acquire(rows.length * bytes, STORAGE_USAGE, "logits-rows");
    rows.forEach((r, i) => this.ctx.copy(logits, r * bytes, out, i * bytes, bytes));
    return out;
  }

  /** Records sampling of one id per logits row into the sampled-ids buffer (grown to `rows`); returns it. */
  #sample(logits: GPUBuffer, rows: number, s: SamplingOptions, step: number): GPUBuffer {
    if (rows * 4 > this.#ids.size) {
      this.ctx.destroyLater(this.#ids);
      this.#ids = this.ctx.createBuffer(4 * Math.max(rows, 2 * this.#ids.size / 4), "sampled-ids");
    }
    sampleRows(this.ctx, { logits, rows, vocab: this.model.config.vocabSize }, { ...s, step }, this.#ids);
    return this.#ids;
  }

  /** Runs a pruning round if the policy wants one; returns it (for the trace) or null. */
  async maybePrune(seq: SequenceState, step: number, afterPrefill: boolean): Promise<PruneRound | null> {
    if (!this.wantsPrune(seq, step, afterPrefill)) return null;
    return this.applyPrune(seq, step, afterPrefill, await seq.kv.views());
  }

  /**
   * `maybePrune` for many sequences after the same decode step, with one readback for all the rounds that
   * are due (one per sequence would stall the GPU queue once each).
   */
  async pruneMany(seqs: SequenceState[], step: number): Promise<(PruneRound | null)[]> {
    return (await this.readAndPrune(seqs, seqs.map(() => step))).rounds;
  }

  /**
   * Runs every due round of `seqs` (sequence i at decode step `steps[i]`) from one readback. `head`, when given,
   * is read in the same transfer ahead of the rounds' data and returned (the server's sampled ids); without it
   * nothing is read unless a round is due. With `align`, when any round is due, every sequence whose policy
   * accepts an early round prunes too (`KvPolicy.mayRoundEarly`): the batch's rounds then fall on the same steps.
   */
  async readAndPrune(
    seqs: SequenceState[],
    steps: number[],
    head?: { buffer: GPUBuffer; bytes: number },
    align = false,
  ): Promise<{ head: ArrayBuffer | null; rounds: (PruneRound | null)[] }> {
    const due = seqs.map((s, i) => this.wantsPrune(s, steps[i], false));
    if (align && due.some((d) => d)) {
      seqs.forEach((s, i) => due[i] ||= s.policy.mayRoundEarly(steps[i], s.kv.lens()));
    }
    if (!head && !due.some((d) => d)) return { head: null, rounds: seqs.map(() => null) };
    const dueIdx = seqs.map((_, i) => i).filter((i) => due[i]);
    const plan = SequenceKv.planViews(this.ctx, dueIdx.map((i) => seqs[i].kv));
    const headBytes = head?.bytes ?? 0;
    const bytes = headBytes + (dueIdx.length > 0 ? plan.bytes : 0);
    const staging = this.ctx.pool.acquire(
      bytes,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    );
    if (head) this.ctx.copy(head.buffer, 0, staging, 0, head.bytes);
    if (dueIdx.length > 0) plan.record(staging, headBytes);
    const data = await this.ctx.read(staging, 0, bytes);
    this.ctx.pool.release(staging);
    const views = dueIdx.length > 0 ? plan.parse(data, headBytes) : [];
    const done = this.#applyRounds(
      dueIdx.map((i, j) => ({ seq: seqs[i], step: steps[i], afterPrefill: false, views: views[j] })),
    );
    const rounds: (PruneRound | null)[] = seqs.map(() => null);
    dueIdx.forEach((i, j) => rounds[i] = done[j]);
    return { head: head ? data.slice(0, head.bytes) : null, rounds };
  }

  /** Whether a pruning round is due (decided from the per-layer lengths alone, no readback). */
  wantsPrune(seq: SequenceState, step: number, afterPrefill: boolean): boolean {
    // FullKV never compacts; skip its readback. Every other policy decides from the cache's positions and scores.
    return afterPrefill ? seq.policy.name !== "full" : seq.policy.wantsRound(step, seq.kv.lens());
  }

  /** Runs the round on positions and scores already read back (`views`, as `seq.kv.views()` returns them). */
  applyPrune(seq: SequenceState, step: number, afterPrefill: boolean, views: LayerView[]): PruneRound | null {
    return this.#applyRounds([{ seq, step, afterPrefill, views }])[0];
  }

  /** Decides several rounds, then records all their compactions together (one upload, few dispatches). */
  #applyRounds(
    list: { seq: SequenceState; step: number; afterPrefill: boolean; views: LayerView[] }[],
  ): (PruneRound | null)[] {
    const L = this.model.config.numLayers;
    const items: Compaction[] = [];
    const decided = list.map(({ seq, step, afterPrefill, views }) => {
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
    if (items.length > 0) SequenceKv.compactMany(this.ctx, items);
    return list.map(({ seq, step, afterPrefill }, i) => {
      const { decision, changed } = decided[i];
      if (!changed && afterPrefill) return null;
      return { step, kept: seq.kv.lens(), hoyer: decision.hoyer ?? null, trigger: decision.trigger ?? null };
    });
  }

  /** Generates a continuation of `prompt` (text, or token ids). */
  async generate(prompt: string | number[], options: GenerateOptions = {}): Promise<GenerationResult> {
    const c = this.model.config;
    const promptIds = typeof prompt === "string" ? this.encode(prompt) : prompt;
    if (promptIds.length === 0) throw new Error("the prompt is empty");
    for (const id of promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
        throw new Error(`prompt token id ${id} is outside the vocabulary [0, ${c.vocabSize})`);
      }
    }
    const maxTokens = options.maxTokens ?? 256;
    if (promptIds.length + maxTokens > c.maxPositionEmbeddings) {
      throw new Error(
        `prompt (${promptIds.length}) + max tokens (${maxTokens}) exceeds the model's context of ${c.maxPositionEmbeddings}`,
      );
    }
    const sampling: SamplingOptions = { ...DEFAULT_SAMPLING, ...options.sampling };
    const eos = new Set(options.eos ?? c.eosTokenIds);
    const seq = this.newSequence(options.kv, promptIds.length + Math.min(maxTokens, 256), promptIds.length);
    const decoder = this.tokenizer
      ? new IncrementalDecoder(this.tokenizer, { skipSpecialTokens: true })
      : null;
    const stop = new StopFilter(options.stop ?? []);
    const emit = (t: string) => {
      if (t) options.onText?.(t);
    };
    const ids: number[] = [];
    let rounds = 0;
    let hoyer: number[] | null = null;
    let finishReason: GenerationResult["finishReason"] = "length";
    try {
      // Prefill.
      const t0 = performance.now();
      let logits = this.forward.prefill(seq, promptIds);
      const [next] = await this.sampleIds(logits, 1, sampling, 0);
      const prefillMs = performance.now() - t0;
      const pruned = await this.maybePrune(seq, 0, true);
      if (pruned) {
        rounds++;
        hoyer = pruned.hoyer ?? hoyer;
        options.onPrune?.(pruned);
      }
      // Decode. Token k (k = 1…) is accepted (pushed, EOS / stop / max checked), then fed to decode step k.
      // When no pruning round is due after step k, step k's sampled id stays on the GPU and step k + 1 is
      // recorded on it before the id is read back: the readback's round trip (~10 ms on CPU adapters) overlaps
      // the next step's work. If token k + 1 ends the generation, that step is discarded (its KV append
      // included: the cache's peaks are restored) — the output is the same as one synchronous step at a time.
      const t1 = performance.now();
      const accept = (token: number, k: number): boolean => {
        ids.push(token);
        options.onToken?.(token);
        if (eos.has(token)) {
          finishReason = "eos";
          return false;
        }
        if (decoder) emit(stop.push(decoder.push(token)));
        if (stop.stopped) {
          finishReason = "stop";
          return false;
        }
        return k < maxTokens;
      };
      if (accept(next, 1)) {
        logits = this.forward.decode([seq], [next]);
        for (let step = 1;; step++) {
          await options.onStep?.(step, seq.kv);
          if (this.wantsPrune(seq, step, false)) {
            const sampled = await this.sampleAndPrune(logits, [seq], sampling, step);
            const round = sampled.rounds[0];
            if (round) {
              rounds++;
              hoyer = round.hoyer ?? hoyer;
              options.onPrune?.(round);
            }
            if (!accept(sampled.ids[0], step + 1)) break;
            logits = this.forward.decode([seq], sampled.ids);
            continue;
          }
          const ahead = this.sampleAhead(logits, 1, sampling, step);
          // Speculative step k + 1 (unless token k + 1 is the last one allowed anyway).
          const speculate = step + 1 < maxTokens;
          const peaks = [seq.kv.peakAllocated, seq.kv.peakLive];
          if (speculate) {
            logits = this.forward.decode([seq], ahead.ids);
            this.ctx.flush();
          }
          const token = (await ahead.read)[0];
          if (!accept(token, step + 1)) {
            if (speculate) [seq.kv.peakAllocated, seq.kv.peakLive] = peaks;
            break;
          }
        }
      }
      const decodeMs = performance.now() - t1;
      if (decoder && !stop.stopped) emit(stop.push(decoder.flush()));
      emit(stop.flush());
      const decodeSteps = Math.max(0, ids.length - 1);
      const full = (promptIds.length + decodeSteps) * c.numLayers * bytesPerToken(seq.kv.shape);
      return {
        promptIds,
        ids,
        text: decoder ? stop.text : "",
        finishReason,
        stats: {
          prefill_tokens: promptIds.length,
          decode_tokens: ids.length,
          prefill_tok_s: promptIds.length / (prefillMs / 1000),
          decode_tok_s: decodeSteps > 0 ? decodeSteps / (decodeMs / 1000) : 0,
          weights_bytes: this.model.weightBytes,
          kv_policy: seq.policy.name,
          kv_bytes_peak: seq.kv.peakAllocated,
          kv_bytes_live_peak: seq.kv.peakLive,
          kv_bytes_full_equivalent: full,
          kv_tokens_per_layer: seq.kv.lens(),
          prune_rounds: rounds,
          hoyer_per_layer: hoyer,
        },
      };
    } finally {
      seq.kv.destroy();
    }
  }

  /** Frees GPU memory held by the engine (the model's weights stay until the device is destroyed). */
  destroy(): void {
    this.forward.destroy();
    this.ctx.destroyLater(this.#ids);
  }
}
