/**
 * A model resident on the GPU: config, weights uploaded once (tensor by tensor, large tensors in chunks of
 * rows, so peak host memory is about one chunk, not a tensor or the checkpoint), and RoPE frequencies.
 */
import type { GpuContext } from "../gpu/context.ts";
import {
  countNonFinite,
  createWeight,
  destroyWeight,
  type NonFiniteCount,
  type Weight,
} from "../gpu/weights.ts";
import { uploadInvFreq } from "../ops/rope.ts";
import { type LoadProgressOption, loadReporter } from "../io/progress.ts";
import { type ModelSource, resolveModelSource, sourcePath } from "../io/source.ts";
import {
  checkConfigTokenIds,
  floatTensors,
  layerTensorNames,
  loadConfig,
  type ModelConfig,
  validateCheckpoint,
} from "./config.ts";
import { quantizeRows } from "./quantize.ts";
import { modelInvFreq } from "./rope_freq.ts";
import { bytesToF32, SafetensorsError, SafetensorsIndex, type TensorInfo } from "./safetensors.ts";

/**
 * How weight matrices are held on the GPU: `"stored"` (default) as the checkpoint stores them (bf16 / f16 /
 * f32, or a quantized checkpoint's format); `"q8"` / `"q4"` quantize float matrices while loading (group-wise
 * symmetric, groups of 32 with f16 scales: src/model/quantize.ts) — the embedding and the LM head included.
 */
export type WeightsOption = "stored" | "q8" | "q4";

/** The values {@link WeightsOption} accepts. */
export const WEIGHTS_OPTIONS: readonly WeightsOption[] = ["stored", "q8", "q4"];

/** Validates a weights option given as text; `what` names the flag or field in the error. */
export function parseWeightsOption(value: unknown, what: string): WeightsOption {
  if (typeof value === "string" && (WEIGHTS_OPTIONS as readonly string[]).includes(value)) {
    return value as WeightsOption;
  }
  throw new RangeError(`${what} must be one of ${WEIGHTS_OPTIONS.join(", ")}; got ${JSON.stringify(value)}`);
}

/**
 * Bytes of a tensor read and uploaded at a time: larger tensors stream in chunks of whole rows (the next
 * chunk is read while one is checked and uploaded), so peak host memory while loading is a few chunks and
 * their staging copies, whatever the tensor's size — not one tensor (a 1.24 GB embedding once peaked at
 * 1.3 GB over the weights themselves; streamed, ~0.1–0.2 GB: bench/load_memory.ts).
 */
export const LOAD_CHUNK_BYTES = 16 << 20;
/**
 * Uploaded bytes after which the loader waits for the GPU to consume its queued writes (freeing their staging
 * copies): one chunk — a matrix kept both as a buffer and as a texture stages each chunk twice.
 */
const SETTLE_BYTES = 16 << 20;

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
  /** How matrices are held (default "stored"); see {@link WeightsOption}. */
  weights?: WeightsOption;
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
  #destroyed = false;

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
   * validates them and uploads every weight. Large tensors stream in chunks of {@link LOAD_CHUNK_BYTES}
   * (host memory holds about one chunk, not one tensor), every value is checked to be finite on the way, and
   * a load that fails part-way frees what it uploaded.
   */
  static async load(
    ctx: GpuContext,
    model: string | ModelSource,
    options: LoadOptions = {},
  ): Promise<GpuModel> {
    const source = resolveModelSource(model);
    const config = await loadConfig(source);
    const configPath = sourcePath(source, "config.json");
    checkConfigTokenIds(config, configPath);
    const wanted = parseWeightsOption(options.weights ?? "stored", "weights");
    const stored = config.quantization?.weights;
    if (stored && wanted !== "stored" && wanted !== stored) {
      throw new Error(
        `${configPath}: the checkpoint is stored quantized as ${stored} (its "quantization" entry); weights "${wanted}" ` +
          `would re-quantize quantized values — load it as stored, or quantize the float original`,
      );
    }
    // The format matrices get on the GPU: a quantized checkpoint's own, else the one asked for (null: floats).
    const quant = stored ?? (wanted === "stored" ? null : wanted);
    const shapes = new Map(floatTensors(config).map((s) => [s.name, s.shape]));
    const index = await SafetensorsIndex.open(source);
    // Everything uploaded so far, freed if a later tensor fails.
    const weights: Weight[] = [];
    const buffers: GPUBuffer[] = [];
    try {
      validateCheckpoint(config, index, {
        checkpoint: index.path,
        config: sourcePath(source, "config.json"),
      });
      const total = loadedTensorNames(config).reduce((s, name) => s + index.info(name)!.byteLength, 0);
      const progress = loadReporter(options.progress, `loading ${source.name}`, total);
      let bytes = 0;
      let unsettled = 0;
      const finite = (info: TensorInfo, nonFinite: NonFiniteCount): void => {
        if (nonFinite.count > 0) {
          throw new SafetensorsError(
            info.file,
            `has ${nonFinite.count} non-finite values (first at element ${nonFinite.first})`,
            info.name,
          );
        }
      };
      // Matrices are only multiplied, so on the CPU adapter they live as textures alone (the matvec fast path);
      // the embedding is also gathered and keeps its buffer (tied models multiply it too, as the LM head).
      const matrix = async (name: string, gathered = false): Promise<Weight> => {
        const info = index.info(name)!;
        const [rows, cols] = shapes.get(name)!;
        const texture = gathered && !config.tieWordEmbeddings ? false : "auto";
        if (stored) return await quantizedMatrix(info, rows, cols, texture, gathered);
        if (info.engineDType === "u8") {
          throw new SafetensorsError(
            info.file,
            `is U8 (quantized values) but ${configPath} has no "quantization" entry saying how to read it`,
            name,
          );
        }
        const writer = createWeight(ctx, name, quant ?? info.engineDType, rows, cols, ctx.maxBinding, {
          texture,
          keepBuffer: gathered,
        });
        weights.push(writer.weight);
        const rowBytes = info.byteLength / rows;
        const per = Math.max(1, Math.floor(LOAD_CHUNK_BYTES / rowBytes));
        const bad: NonFiniteCount = { count: 0, first: -1 };
        // The next chunk is read while this one is checked and uploaded (I/O overlaps the scan).
        const read = (r: number): Promise<Uint8Array> => {
          const p = index.readPart(name, r * rowBytes, Math.min(per, rows - r) * rowBytes);
          p.catch(() => {}); // awaited below; never an unhandled rejection if the load stops first
          return p;
        };
        let next = read(0);
        for (let r = 0; r < rows; r += per) {
          const data = await next;
          if (r + per < rows) next = read(r + per);
          const found = countNonFinite(info.engineDType, data);
          if (found.count > 0) {
            if (bad.first < 0) bad.first = r * cols + found.first;
            bad.count += found.count;
          }
          if (bad.count === 0) {
            if (quant) {
              const n = data.byteLength / rowBytes;
              const q = quantizeRows(quant, bytesToF32(info.dtype, data), n, cols, name);
              writer.write(r, q.data, q.scales);
            } else writer.write(r, data);
          }
          unsettled += data.byteLength;
          // Each queued write may hold a staging copy until the GPU consumes it: settle every few chunks.
          if (unsettled >= SETTLE_BYTES) {
            await ctx.settleWrites();
            unsettled = 0;
          }
        }
        finite(info, bad);
        bytes += writer.weight.bytes;
        progress.tensor(name, info.byteLength);
        return writer.weight;
      };
      // A matrix of a quantized checkpoint: its packed values (U8) and its scales (F16), read as stored.
      const quantizedMatrix = async (
        info: TensorInfo,
        rows: number,
        cols: number,
        texture: false | "auto",
        gathered: boolean,
      ): Promise<Weight> => {
        const name = info.name;
        const sInfo = index.info(`${name}.scales`)!;
        if (info.dtype !== "U8") {
          throw new SafetensorsError(
            info.file,
            `is ${info.dtype}; ${configPath} says matrices are stored as U8`,
            name,
          );
        }
        if (sInfo.dtype !== "F16") {
          throw new SafetensorsError(
            sInfo.file,
            `is ${sInfo.dtype}; quantization scales are F16`,
            sInfo.name,
          );
        }
        const writer = createWeight(ctx, name, stored!, rows, cols, ctx.maxBinding, {
          texture,
          keepBuffer: gathered,
        });
        weights.push(writer.weight);
        const rowBytes = info.byteLength / rows, scaleBytes = sInfo.byteLength / rows;
        const per = Math.max(1, Math.floor(LOAD_CHUNK_BYTES / rowBytes));
        for (let r = 0; r < rows; r += per) {
          const n = Math.min(per, rows - r);
          const data = await index.readPart(name, r * rowBytes, n * rowBytes);
          const sBytes = (await index.readPart(sInfo.name, r * scaleBytes, n * scaleBytes)).slice();
          const scales = new Uint16Array(sBytes.buffer, 0, sBytes.byteLength / 2);
          const bad = countNonFinite("f16", sBytes);
          if (bad.count > 0) {
            throw new SafetensorsError(
              sInfo.file,
              `has ${bad.count} non-finite scales (first at element ${r * (scaleBytes / 2) + bad.first})`,
              sInfo.name,
            );
          }
          writer.write(r, data, scales);
          unsettled += data.byteLength;
          if (unsettled >= SETTLE_BYTES) {
            await ctx.settleWrites();
            unsettled = 0;
          }
        }
        bytes += writer.weight.bytes;
        progress.tensor(name, info.byteLength);
        return writer.weight;
      };
      const vector = async (name: string): Promise<GPUBuffer> => {
        const info = index.info(name)!;
        const data = await index.read(name);
        finite(info, countNonFinite(info.engineDType, data));
        bytes += data.byteLength;
        unsettled += data.byteLength;
        const buffer = ctx.upload(bytesToF32(info.dtype, data), name);
        buffers.push(buffer);
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
      buffers.push(invFreq);
      await ctx.sync();
      progress.finish();
      return new GpuModel(source.name, config, { embed, layers, finalNorm, lmHead }, invFreq, bytes);
    } catch (e) {
      // Work recorded so far is submitted before its buffers go (destroying after submission is safe).
      ctx.flush();
      for (const w of weights) destroyWeight(w);
      for (const b of buffers) b.destroy();
      throw e;
    } finally {
      index.close();
    }
  }

  /**
   * Frees every weight buffer and texture of the model (idempotent). Work already recorded on them is
   * submitted first; the model must not be used afterwards.
   */
  destroy(ctx?: GpuContext): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    ctx?.flush();
    const w = this.weights;
    destroyWeight(w.embed);
    if (w.lmHead !== w.embed) destroyWeight(w.lmHead);
    for (const l of w.layers) {
      for (const m of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) destroyWeight(m);
      for (const b of [l.inputNorm, l.postNorm, l.qBias, l.kBias, l.vBias]) b?.destroy();
    }
    w.finalNorm.destroy();
    this.invFreq.destroy();
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
