/**
 * One generation: prefill, the decode loop over the runner (decode ahead, pruning rounds), stop conditions
 * (EOS, stop strings, max tokens), streamed text and statistics. `Engine.generate` is this function.
 */
import { bytesPerToken, type KvDtype, type SequenceKv } from "../kv/cache.ts";
import type { KvSettings } from "../kv/options.ts";
import type { PolicyName } from "../kv/policy.ts";
import { IncrementalDecoder } from "../../tokenizer/mod.ts";
import type { Engine } from "./engine.ts";
import type { PruneRound } from "./rounds.ts";
import type { RunnerRow } from "./runner.ts";
import { checkSampling, DEFAULT_SAMPLING, type SamplingOptions } from "./sampler.ts";
import { StopStrings } from "./stop.ts";

/** Options of {@link Engine.generate}. */
export interface GenerateOptions {
  /** Most tokens generated (default 256). */
  maxTokens?: number;
  /** Default greedy. */
  sampling?: Partial<SamplingOptions>;
  /** KV policy and settings; what is left out comes from the model's kv_defaults.json, else the defaults. */
  kv?: KvSettings;
  /** Stop at the earliest of these strings in the decoded text (the stop string is not returned). */
  stop?: string[];
  /** Stop at these token ids (default: the model's EOS ids). */
  eos?: number[];
  /** Called with each piece of text as soon as it is final (never splits a UTF-8 character). */
  onText?: (text: string) => void;
  /** Called with each generated token id. */
  onToken?: (id: number) => void;
  /** Called after each pruning round. */
  onPrune?: (round: PruneRound) => void;
  /**
   * Called after every decode step with the sequence's cache (tests check invariants here).
   * @internal
   */
  onStep?: (step: number, kv: SequenceKv) => void | Promise<void>;
}

/** Statistics of one generation (field names as in the CLI's JSON). */
export interface GenerationStats {
  /** Prompt tokens prefilled. */
  prefill_tokens: number;
  /** Tokens generated (the one sampled after prefill and the EOS that ended it included). */
  decode_tokens: number;
  /** Prompt tokens per second of the prefill (the first token's sampling included). */
  prefill_tok_s: number;
  /** Decode steps per second after the first token (0 when there were none). */
  decode_tok_s: number;
  /** Bytes of the model's weights on the GPU (a tied embedding counted once). */
  weights_bytes: number;
  /** The KV policy that ran. */
  kv_policy: PolicyName;
  /** Peak bytes allocated for the KV cache (K, V, positions, scores). */
  kv_bytes_peak: number;
  /** Peak bytes holding valid tokens. */
  kv_bytes_live_peak: number;
  /**
   * What FullKV with f16 K/V — what serving engines keep — would have held at the end (every token in every
   * layer): every KV ratio is stated against it, whatever this run's `kv_dtype`.
   */
  kv_bytes_full_equivalent: number;
  /** How this run stored K and V. */
  kv_dtype: KvDtype;
  /** Tokens held in each layer's cache at the end. */
  kv_tokens_per_layer: number[];
  /** Pruning rounds run (the prefill's counted when it pruned anything). */
  prune_rounds: number;
  /** Hoyer sparsity per layer from the last round that computed it; null if none did. */
  hoyer_per_layer: number[] | null;
}

/** The outcome of one generation. */
export interface GenerationResult {
  /** The prompt's token ids (encoded, or as given). */
  promptIds: number[];
  /** Generated ids (the EOS that ended it included). */
  ids: number[];
  /** Generated text, stop string excluded ("" when the model has no tokenizer). */
  text: string;
  /** Why it ended: a stop string, an EOS id, or max tokens. */
  finishReason: "stop" | "eos" | "length";
  /** Timing and KV statistics. */
  stats: GenerationStats;
}

/** Checks a prompt against the vocabulary and the context; returns its ids. */
function promptIdsOf(engine: Engine, prompt: string | number[], maxTokens: number): number[] {
  const c = engine.model.config;
  const ids = typeof prompt === "string" ? engine.encode(prompt) : prompt;
  if (ids.length === 0) throw new Error("the prompt is empty");
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
      throw new Error(`prompt token id ${id} is outside the vocabulary [0, ${c.vocabSize})`);
    }
  }
  if (ids.length + maxTokens > c.maxPositionEmbeddings) {
    throw new Error(
      `prompt (${ids.length}) + max tokens (${maxTokens}) exceeds the model's context of ${c.maxPositionEmbeddings}`,
    );
  }
  return ids;
}

/** Generates a continuation of `prompt` (text, or token ids). */
export async function generate(
  engine: Engine,
  prompt: string | number[],
  options: GenerateOptions = {},
): Promise<GenerationResult> {
  const c = engine.model.config;
  const maxTokens = options.maxTokens ?? 256;
  const promptIds = promptIdsOf(engine, prompt, maxTokens);
  const sampling = { ...DEFAULT_SAMPLING, ...options.sampling };
  checkSampling(sampling);
  const eos = new Set(options.eos ?? c.eosTokenIds);
  const seq = engine.newSequence(options.kv, promptIds.length + Math.min(maxTokens, 256), promptIds.length);
  const row: RunnerRow = { seq, sampling, step: 0, next: 0 };
  const runner = engine.createRunner();
  const decoder = engine.tokenizer
    ? new IncrementalDecoder(engine.tokenizer, { skipSpecialTokens: true })
    : null;
  const stop = new StopStrings(options.stop ?? []);
  const emit = (t: string) => {
    if (t) options.onText?.(t);
  };
  const ids: number[] = [];
  let rounds = 0;
  let hoyer: number[] | null = null;
  let finishReason: GenerationResult["finishReason"] = "length";
  const counted = (round: PruneRound | null) => {
    if (!round) return;
    rounds++;
    hoyer = round.hoyer ?? hoyer;
    options.onPrune?.(round);
  };
  // Token k (k = 1…) is accepted: pushed, then EOS, stop strings and max tokens checked.
  const accept = (token: number): boolean => {
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
    return ids.length < maxTokens;
  };
  try {
    const t0 = performance.now();
    const first = await runner.prefill(row, promptIds);
    const prefillMs = performance.now() - t0;
    counted(first.round);
    const t1 = performance.now();
    if (accept(first.id!)) {
      for (row.next = first.id!;; row.next = ids[ids.length - 1]) {
        const r = await runner.step([row], {
          // Step k + 1 is worth recording ahead unless token k + 1 is the last one allowed anyway.
          mayRecordAhead: () => row.step + 1 < maxTokens,
          onStep: (x) => options.onStep?.(x.step, x.seq.kv),
        });
        counted(r.rounds[0]);
        if (!accept(r.ids[0])) break;
      }
      runner.leave(row);
    }
    const decodeMs = performance.now() - t1;
    if (decoder && !stop.stopped) emit(stop.push(decoder.flush()));
    emit(stop.flush());
    const decodeSteps = Math.max(0, ids.length - 1);
    const full = (promptIds.length + decodeSteps) * c.numLayers *
      bytesPerToken({ ...seq.kv.shape, dtype: "f16" });
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
        weights_bytes: engine.model.weightBytes,
        kv_policy: seq.policy.name,
        kv_dtype: seq.kv.layout.dtype,
        kv_bytes_peak: seq.kv.peakAllocated,
        kv_bytes_live_peak: seq.kv.peakLive,
        kv_bytes_full_equivalent: full,
        kv_tokens_per_layer: seq.kv.lens(),
        prune_rounds: rounds,
        hoyer_per_layer: hoyer,
      },
    };
  } finally {
    runner.release(row);
    runner.destroy();
    seq.kv.destroy();
  }
}
