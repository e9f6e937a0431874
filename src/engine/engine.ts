/**
 * The engine: a loaded model on a GPU context, its tokenizer and KV defaults, and what it makes — sequences
 * (a KV cache under a policy) and runners (batched decode steps). Generation, sampling, pruning rounds and
 * KV options live in their own files beside this one.
 */
import { GpuContext } from "../gpu/context.ts";
import { type GpuPath, parseGpuPath } from "../gpu/device.ts";
import type { LoadProgress } from "../io/progress.ts";
import { type ModelSource, resolveModelSource, sourcePath } from "../io/source.ts";
import { KvArena } from "../kv/arena.ts";
import { KV_DTYPES, type KvDtype, kvLayout } from "../ops/kv_layout.ts";
import { bytesPerToken, SequenceKv } from "../kv/cache.ts";
import { loadKvDefaults } from "../kv/defaults.ts";
import { checkKvValue, DEFAULT_POLICY, kvSetting, type KvSettings, resolveKvOptions } from "../kv/options.ts";
import { DEFAULT_KV_OPTIONS, type KvPolicy, type KvPolicyOptions } from "../kv/policy.ts";
import { createPolicy } from "../kv/policies/mod.ts";
import { Forward, type SequenceState } from "../model/forward.ts";
import type { ModelConfig } from "../model/config.ts";
import { GpuModel, type WeightsOption } from "../model/model.ts";
import { Tokenizer } from "../../tokenizer/mod.ts";
import { generate, type GenerateOptions, type GenerationResult } from "./generate.ts";
import { DecodeRunner } from "./runner.ts";
import { DEFAULT_SAMPLING } from "./sampler.ts";

/** Options of {@link Engine.load}. */
export interface EngineLoadOptions {
  /**
   * The GPU context to load onto (default: a new one on the first adapter).
   * @internal
   */
  ctx?: GpuContext;
  /**
   * Progress while weights upload: a callback given every tensor (and once more with `done` when all are on
   * the GPU); true for the terminal bar (registered by the Deno entry; nothing elsewhere), false for none.
   * Default: the terminal bar when the checkpoint is over 8 MB and stderr is a terminal.
   */
  progress?: boolean | ((p: LoadProgress) => void);
  /** Compile every pipeline before returning (default true). */
  warmup?: boolean;
  /**
   * Milliseconds to wait for a WebGPU adapter when no `ctx` is given (default 15 s): without a working driver
   * the search can otherwise spin for minutes; past it the load fails with a NoGpuError saying what to install.
   */
  adapterTimeoutMs?: number;
  /**
   * Texture or storage-buffer kernels for a context made here (default "auto": textures on a CPU adapter,
   * storage buffers on a GPU; "storage" runs a CPU adapter the way a real GPU or browser would). With `ctx`,
   * the context's own path stands and a different explicit one is an error.
   */
  gpuPath?: GpuPath;
  /**
   * How weight matrices are held: "stored" (default: as the checkpoint stores them, a quantized checkpoint
   * included), or "q8" / "q4" to quantize a float checkpoint while loading (groups of 32, f16 scales; the
   * embedding and LM head too): about 1/2 and 1/4 of bf16's bytes, and as much less to read per token.
   */
  weights?: WeightsOption;
}

/** A loaded model ready to generate. */
export class Engine {
  /**
   * The GPU context (device, buffer pool, pipelines, recorder).
   * @internal
   */
  readonly ctx: GpuContext;
  /**
   * The weights on the GPU.
   * @internal
   */
  readonly model: GpuModel;
  /**
   * The decoder pass.
   * @internal
   */
  readonly forward: Forward;
  /** Null for models that ship without a tokenizer.json (then prompts are token ids). */
  readonly tokenizer: Tokenizer | null;
  /** KV settings wherever a generation gives none: the model's kv_defaults.json over the project's. */
  readonly kvDefaults: KvPolicyOptions;
  /** Whether {@link Engine.load} made the context (then {@link destroy} destroys it too). */
  #ownsCtx = false;
  #destroyed = false;

  /** Wraps a model already on the GPU; {@link Engine.load} is the usual way to get an engine. */
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
  }

  /**
   * Loads a Hugging Face model (config.json, safetensors, optional tokenizer.json and kv_defaults.json) from
   * a {@link ModelSource}, an http(s) base URL, or a local directory (with the Deno entry, `deno.ts`). Unless
   * `warmup` is false, runs a tiny prefill and decode so every pipeline is compiled before the first timing.
   */
  static async load(model: string | ModelSource, options: EngineLoadOptions = {}): Promise<Engine> {
    const source = resolveModelSource(model);
    const ownsCtx = options.ctx === undefined;
    const gpuPath = parseGpuPath(options.gpuPath ?? "auto", "gpuPath");
    if (options.ctx && gpuPath !== "auto" && (gpuPath === "texture") !== options.ctx.gpu.useTextures) {
      throw new Error(
        `gpuPath "${gpuPath}" differs from the given ctx's path (useTextures ${options.ctx.gpu.useTextures})`,
      );
    }
    const ctx = options.ctx ??
      await GpuContext.create({ adapterTimeoutMs: options.adapterTimeoutMs, gpuPath });
    let gpuModel: GpuModel | null = null;
    let engine: Engine | null = null;
    try {
      gpuModel = await GpuModel.load(ctx, source, { progress: options.progress, weights: options.weights });
      const tokenizer = await source.size("tokenizer.json") === null
        ? null
        : await Tokenizer.fromSource(source);
      // A tokenizer whose ids run past the model's embedding (a foreign or corrupt tokenizer.json) would fail
      // mid-generation: refuse it here, naming both files.
      if (tokenizer && tokenizer.vocabSize > gpuModel.config.vocabSize) {
        throw new Error(
          `${sourcePath(source, "tokenizer.json")}: token ids reach ${tokenizer.vocabSize - 1}, beyond ${
            sourcePath(source, "config.json")
          }'s vocab_size ${gpuModel.config.vocabSize}`,
        );
      }
      engine = new Engine(ctx, gpuModel, tokenizer, await loadKvDefaults(source));
      engine.#ownsCtx = ownsCtx;
      if (options.warmup ?? true) await engine.warmup();
      return engine;
    } catch (e) {
      // A failed load leaves nothing behind: the weights (and a context made here) go with it.
      if (engine) engine.destroy();
      else {
        ctx.flush();
        gpuModel?.destroy(ctx);
        if (ownsCtx) ctx.destroy();
      }
      throw e;
    }
  }

  /** Compiles the prefill (matmul) and decode (matvec) pipelines and both samplers by running them once. */
  async warmup(): Promise<void> {
    const seq = this.newSequence({ policy: "full" }, 16);
    const runner = this.createRunner();
    try {
      const prompt = Array.from({ length: 9 }, (_, i) => i % this.model.config.vocabSize);
      const row = { seq, sampling: { ...DEFAULT_SAMPLING, temperature: 1 }, step: 0, next: 0 };
      await runner.prefill(row, prompt);
      row.sampling = DEFAULT_SAMPLING;
      await runner.step([row]);
    } finally {
      runner.destroy();
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

  /** The model's configuration (architecture, sizes, context length, special token ids). */
  get config(): ModelConfig {
    return this.model.config;
  }

  /** Model weight bytes on the GPU. */
  get weightBytes(): number {
    return this.model.weightBytes;
  }

  /**
   * The policy for KV settings (what they leave out comes from {@link kvDefaults}); bad settings throw.
   * @internal
   */
  policy(kv: KvSettings = {}): KvPolicy {
    return createPolicy(kv.policy ?? DEFAULT_POLICY, resolveKvOptions(kv, this.kvDefaults));
  }

  /**
   * A fresh sequence with its own KV cache and policy. The cache starts with room for `expectedTokens`, but no
   * more than a pruning policy will hold after the prompt (`promptTokens`) — pruned caches never allocate what
   * they will not keep.
   * @internal
   */
  newSequence(kv: KvSettings = {}, expectedTokens = 64, promptTokens = 0): SequenceState {
    const c = this.model.config;
    const policy = this.policy(kv);
    // FullKV skips the budget checks; the storage format matters to every policy.
    checkKvValue(kvSetting("dtype"), policy.options.dtype);
    const steady = policy.steadyTokens(c.numLayers);
    if (steady !== null) expectedTokens = Math.min(expectedTokens, Math.max(promptTokens, steady));
    const cache = new SequenceKv(this.ctx, {
      layers: c.numLayers,
      nKvHeads: c.numKvHeads,
      headDim: c.headDim,
      dtype: policy.options.dtype,
    }, expectedTokens);
    return { kv: cache, policy, pos: 0 };
  }

  /**
   * A runner for batched decode steps over this engine's forward pass (one per concurrent loop).
   * @internal
   */
  createRunner(): DecodeRunner {
    return new DecodeRunner(this.ctx, this.forward, this.model.config.vocabSize);
  }

  /**
   * KV bytes one token costs over all layers when K/V are stored as `dtype` (default: this engine's default,
   * from kv_defaults.json or f16).
   * @internal
   */
  kvTokenBytes(dtype: KvDtype = this.kvDefaults.dtype): number {
    const c = this.model.config;
    return c.numLayers *
      bytesPerToken({ layers: c.numLayers, nKvHeads: c.numKvHeads, headDim: c.headDim, dtype });
  }

  /**
   * Slots a cache region of `tokens` tokens takes (the KV arena rounds capacities to its alignment).
   * @internal
   */
  kvSlots(tokens: number, dtype: KvDtype = this.kvDefaults.dtype): number {
    return this.#arena(dtype).roundCapacity(tokens);
  }

  /**
   * GPU bytes of the shared KV arenas (one per KV dtype in use): every sequence's regions plus free space
   * held for reuse.
   * @internal
   */
  kvArenaBytes(): number {
    return KV_DTYPES.reduce((n, d) => n + this.#arena(d).allocatedBytes(), 0);
  }

  /** Generates a continuation of `prompt` (text, or token ids). */
  generate(prompt: string | number[], options: GenerateOptions = {}): Promise<GenerationResult> {
    return generate(this, prompt, options);
  }

  /**
   * Frees every GPU buffer the engine made: activations, the model's weights, the pool's idle scratch, and the
   * GPU context itself when {@link Engine.load} created it. Idempotent; the engine must not be used afterwards
   * (sequences and runners it made should be destroyed first).
   */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.forward.destroy();
    this.ctx.flush(); // submits recorded work and runs the deferred destroys
    this.model.destroy(this.ctx);
    this.ctx.pool.trim();
    if (this.#ownsCtx) this.ctx.destroy();
  }

  #arena(dtype: KvDtype): KvArena {
    const c = this.model.config;
    return KvArena.of(this.ctx, c.numLayers, kvLayout(dtype, c.numKvHeads, c.headDim));
  }
}
