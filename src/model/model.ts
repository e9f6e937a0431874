/**
 * A model resident on the GPU: config, weights uploaded once (tensor by tensor, so peak host memory is one
 * tensor, not the checkpoint), and RoPE frequencies.
 */
import type { GpuContext } from "../gpu/context.ts";
import { uploadWeight, type Weight } from "../gpu/weights.ts";
import { uploadInvFreq } from "../ops/rope.ts";
import { type LoadProgressOption, loadReporter } from "../io/progress.ts";
import { type ModelSource, resolveModelSource } from "../io/source.ts";
import { layerTensorNames, loadConfig, type ModelConfig, validateCheckpoint } from "./config.ts";
import { modelInvFreq } from "./rope_freq.ts";
import { bytesToF32, SafetensorsIndex } from "./safetensors.ts";

/** One decoder layer's weights. Matrices are [out_features, in_features]. */
export interface LayerWeights {
  /** f32 [hidden] */
  inputNorm: GPUBuffer;
  /** [heads·headDim, hidden] */
  q: Weight;
  /** [kvHeads·headDim, hidden] */
  k: Weight;
  /** [kvHeads·headDim, hidden] */
  v: Weight;
  /** f32 [heads·headDim], [kvHeads·headDim], [kvHeads·headDim] — Qwen2 only */
  qBias: GPUBuffer | null;
  kBias: GPUBuffer | null;
  vBias: GPUBuffer | null;
  /** [hidden, heads·headDim] */
  o: Weight;
  /** f32 [hidden] */
  postNorm: GPUBuffer;
  /** [intermediate, hidden] */
  gate: Weight;
  /** [intermediate, hidden] */
  up: Weight;
  /** [hidden, intermediate] */
  down: Weight;
}

/** All weights of a decoder. */
export interface ModelWeights {
  /** [vocab, hidden] */
  embed: Weight;
  layers: LayerWeights[];
  /** f32 [hidden] */
  finalNorm: GPUBuffer;
  /** [vocab, hidden]; the embedding itself when tied. */
  lmHead: Weight;
}

/** Options of {@link GpuModel.load}. */
export interface LoadOptions {
  /**
   * A callback given every tensor, or the platform's progress bar: true shows it, false nothing, and by
   * default it shows when the checkpoint is over 8 MB and stderr is a terminal (see io/progress.ts).
   */
  progress?: LoadProgressOption;
}

/** A loaded model. */
export class GpuModel {
  readonly config: ModelConfig;
  readonly weights: ModelWeights;
  /** f32 [headDim/2] RoPE inverse frequencies (Llama-3 scaling applied when configured). */
  readonly invFreq: GPUBuffer;
  /** Bytes of all weights on the GPU (the tied embedding counted once). */
  readonly weightBytes: number;
  /** Where the model came from: its source's name (a directory, a URL, "files", "memory"). */
  readonly dir: string;

  constructor(
    dir: string,
    config: ModelConfig,
    weights: ModelWeights,
    invFreq: GPUBuffer,
    weightBytes: number,
  ) {
    this.dir = dir;
    this.config = config;
    this.weights = weights;
    this.invFreq = invFreq;
    this.weightBytes = weightBytes;
  }

  /** Bytes of weights one decode step reads (every matrix once; norms and biases are negligible but counted). */
  get decodeWeightBytes(): number {
    return this.weightBytes - this.weights.embed.bytes * (this.config.tieWordEmbeddings ? 0 : 1) +
      this.config.hiddenSize * 4;
  }

  /**
   * Reads config.json and the safetensors checkpoint of a model source (or a local directory or URL),
   * validates them and uploads every weight.
   */
  static async load(
    ctx: GpuContext,
    model: string | ModelSource,
    options: LoadOptions = {},
  ): Promise<GpuModel> {
    const source = resolveModelSource(model);
    const config = await loadConfig(source);
    const index = await SafetensorsIndex.open(source);
    try {
      validateCheckpoint(config, index);
      const total = loadedTensorNames(config).reduce((s, name) => s + index.info(name)!.byteLength, 0);
      const progress = loadReporter(options.progress, `loading ${source.name}`, total);
      let bytes = 0;
      // Matrices are only multiplied, so on the CPU adapter they live as textures alone (the matvec fast path);
      // the embedding is also gathered and keeps its buffer (tied models multiply it too, as the LM head).
      const matrix = async (name: string, gathered = false): Promise<Weight> => {
        const info = index.info(name)!;
        const data = await index.read(name);
        bytes += data.byteLength;
        const [rows, cols] = info.shape;
        const texture = gathered && !config.tieWordEmbeddings ? false : "auto";
        const weight = uploadWeight(ctx, name, info.engineDType, rows, cols, data, ctx.maxBinding, {
          texture,
          keepBuffer: gathered,
        });
        progress.tensor(name, data.byteLength);
        return weight;
      };
      const vector = async (name: string): Promise<GPUBuffer> => {
        const info = index.info(name)!;
        const data = await index.read(name);
        bytes += data.byteLength;
        const buffer = ctx.upload(bytesToF32(info.dtype, data), name);
        progress.tensor(name, data.byteLength);
        return buffer;
      };
      const embed = await matrix("model.embed_tokens.weight", true);
      const layers: LayerWeights[] = [];
      for (let i = 0; i < config.numLayers; i++) {
        const n = layerTensorNames(i);
        const bias = config.attentionBias;
        layers.push({
          inputNorm: await vector(n.inputNorm),
          q: await matrix(n.q),
          qBias: bias ? await vector(n.qBias) : null,
          k: await matrix(n.k),
          kBias: bias ? await vector(n.kBias) : null,
          v: await matrix(n.v),
          vBias: bias ? await vector(n.vBias) : null,
          o: await matrix(n.o),
          postNorm: await vector(n.postNorm),
          gate: await matrix(n.gate),
          up: await matrix(n.up),
          down: await matrix(n.down),
        });
      }
      const finalNorm = await vector("model.norm.weight");
      const lmHead = config.tieWordEmbeddings ? embed : await matrix("lm_head.weight");
      const invFreq = uploadInvFreq(ctx, modelInvFreq(config));
      await ctx.sync();
      progress.finish();
      return new GpuModel(source.name, config, { embed, layers, finalNorm, lmHead }, invFreq, bytes);
    } finally {
      index.close();
    }
  }
}

/** The tensors {@link GpuModel.load} reads, in its order (each once; a tied LM head is the embedding). */
function loadedTensorNames(config: ModelConfig): string[] {
  const names = ["model.embed_tokens.weight"];
  for (let i = 0; i < config.numLayers; i++) {
    const n = layerTensorNames(i);
    const bias = config.attentionBias;
    names.push(n.inputNorm, n.q, ...(bias ? [n.qBias] : []), n.k, ...(bias ? [n.kBias] : []));
    names.push(n.v, ...(bias ? [n.vBias] : []), n.o, n.postNorm, n.gate, n.up, n.down);
  }
  names.push("model.norm.weight");
  if (!config.tieWordEmbeddings) names.push("lm_head.weight");
  return names;
}
