/**
 * Plain CPU reference of the whole decoder forward, for Qwen2 and Llama. Every GPU result of the model is
 * checked against this. Written for clarity, not speed: weights are held as f32, activations as f64, one
 * token at a time, with its own KV cache.
 *
 * Per token: embedding → per layer [RMSNorm → q, k, v (+bias) → RoPE (rotate_half) → causal GQA attention
 * over the cache → o_proj → residual → RMSNorm → SiLU-gated MLP → residual] → final RMSNorm → lm_head
 * (or the tied embedding) → logits.
 */
import type { Llama3RopeScaling, ModelConfig } from "../model/config.ts";
import { layerTensorNames, loadConfig, validateCheckpoint } from "../model/config.ts";
import { ropeInvFreq } from "../model/rope_freq.ts";
import { SafetensorsIndex } from "../model/safetensors.ts";

/** RoPE inverse frequencies of `config` (the model's own host implementation, src/model/rope_freq.ts). */
export function refRopeInvFreq(
  headDim: number,
  theta: number,
  scaling: Llama3RopeScaling | null,
): Float64Array {
  return ropeInvFreq(
    headDim,
    theta,
    scaling && {
      rope_type: "llama3",
      factor: scaling.factor,
      low_freq_factor: scaling.lowFreqFactor,
      high_freq_factor: scaling.highFreqFactor,
      original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
    },
  );
}

/** Rotates each head of `x` [heads, headDim] in place to position `pos`: pairs (i, i + headDim/2). */
export function applyRopeRef(
  x: Float64Array,
  heads: number,
  headDim: number,
  pos: number,
  invFreq: Float64Array,
): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    const b = h * headDim;
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i];
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const x0 = x[b + i];
      const x1 = x[b + i + half];
      x[b + i] = x0 * c - x1 * s;
      x[b + i + half] = x1 * c + x0 * s;
    }
  }
}

/** y = W x (+ b) for row-major W [rows, cols]. */
function matvec(
  w: Float32Array,
  x: Float64Array,
  rows: number,
  cols: number,
  bias?: Float32Array,
): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) acc += w[base + c] * x[c];
    y[r] = bias ? acc + bias[r] : acc;
  }
  return y;
}

/** RMSNorm: x / sqrt(mean(x²) + eps) * weight. */
export function rmsNormRef(x: Float64Array, weight: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const scale = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i] * scale * weight[i];
  return y;
}

/** Weights of one decoder layer, as f32. */
export interface RefLayerWeights {
  inputNorm: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
  qBias: Float32Array | null;
  kBias: Float32Array | null;
  vBias: Float32Array | null;
  postNorm: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

/** All weights of a model, as f32. `lmHead` is the embedding itself when tied. */
export interface RefWeights {
  embed: Float32Array;
  layers: RefLayerWeights[];
  norm: Float32Array;
  lmHead: Float32Array;
}

/** Reads every weight of `config` from a checkpoint, converted to f32 (validates the checkpoint first). */
export async function loadRefWeights(config: ModelConfig, index: SafetensorsIndex): Promise<RefWeights> {
  validateCheckpoint(config, index);
  const get = (name: string) => index.readF32(name);
  const layers: RefLayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const n = layerTensorNames(i);
    layers.push({
      inputNorm: await get(n.inputNorm),
      q: await get(n.q),
      k: await get(n.k),
      v: await get(n.v),
      o: await get(n.o),
      qBias: config.attentionBias ? await get(n.qBias) : null,
      kBias: config.attentionBias ? await get(n.kBias) : null,
      vBias: config.attentionBias ? await get(n.vBias) : null,
      postNorm: await get(n.postNorm),
      gate: await get(n.gate),
      up: await get(n.up),
      down: await get(n.down),
    });
  }
  const embed = await get("model.embed_tokens.weight");
  return {
    embed,
    layers,
    norm: await get("model.norm.weight"),
    lmHead: config.tieWordEmbeddings ? embed : await get("lm_head.weight"),
  };
}

/** The reference model: weights plus a KV cache that persists across {@link RefModel.forward} calls. */
export class RefModel {
  readonly config: ModelConfig;
  readonly weights: RefWeights;
  readonly invFreq: Float64Array;
  /** keys[layer][pos] = K of that token after RoPE, [numKvHeads * headDim]. */
  private keys: Float64Array[][];
  /** values[layer][pos] = V of that token, [numKvHeads * headDim]. */
  private values: Float64Array[][];

  constructor(config: ModelConfig, weights: RefWeights) {
    this.config = config;
    this.weights = weights;
    this.invFreq = refRopeInvFreq(config.headDim, config.ropeTheta, config.ropeScaling);
    this.keys = Array.from({ length: config.numLayers }, () => []);
    this.values = Array.from({ length: config.numLayers }, () => []);
  }

  /** Loads config.json and the safetensors checkpoint of an HF directory. */
  static async load(dir: string): Promise<RefModel> {
    const config = await loadConfig(dir);
    const index = await SafetensorsIndex.open(dir);
    try {
      return new RefModel(config, await loadRefWeights(config, index));
    } finally {
      index.close();
    }
  }

  /** Tokens in the KV cache. */
  get length(): number {
    return this.keys[0]?.length ?? 0;
  }

  /** Empties the KV cache. */
  reset(): void {
    for (const k of this.keys) k.length = 0;
    for (const v of this.values) v.length = 0;
  }

  /**
   * Runs `tokens` at positions startPos, startPos+1, … and returns the logits after each. `startPos` may
   * rewind the cache (tokens from startPos on are forgotten) but not skip ahead of it.
   */
  forward(tokens: number[], startPos: number): Float32Array[] {
    if (!Number.isInteger(startPos) || startPos < 0 || startPos > this.length) {
      throw new RangeError(
        `startPos ${startPos} must be an integer in [0, ${this.length}] (the cached length)`,
      );
    }
    for (const k of this.keys) k.length = startPos;
    for (const v of this.values) v.length = startPos;
    return tokens.map((t, i) => this.step(t, startPos + i));
  }

  private step(token: number, pos: number): Float32Array {
    const c = this.config;
    const w = this.weights;
    const h = c.hiddenSize;
    const hd = c.headDim;
    const qDim = c.numHeads * hd;
    const kvDim = c.numKvHeads * hd;
    const ff = c.intermediateSize;
    if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize) {
      throw new RangeError(`token ${token} outside the vocabulary [0, ${c.vocabSize})`);
    }

    const x = Float64Array.from(w.embed.subarray(token * h, (token + 1) * h));
    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];

      // Attention block.
      const xn = rmsNormRef(x, lw.inputNorm, c.rmsNormEps);
      const q = matvec(lw.q, xn, qDim, h, lw.qBias ?? undefined);
      const k = matvec(lw.k, xn, kvDim, h, lw.kBias ?? undefined);
      const v = matvec(lw.v, xn, kvDim, h, lw.vBias ?? undefined);
      applyRopeRef(q, c.numHeads, hd, pos, this.invFreq);
      applyRopeRef(k, c.numKvHeads, hd, pos, this.invFreq);
      this.keys[l].push(k);
      this.values[l].push(v);
      const attn = this.attend(l, q);
      const o = matvec(lw.o, attn, h, qDim);
      for (let i = 0; i < h; i++) x[i] += o[i];

      // MLP block: down(silu(gate(x)) * up(x)).
      const xm = rmsNormRef(x, lw.postNorm, c.rmsNormEps);
      const g = matvec(lw.gate, xm, ff, h);
      const u = matvec(lw.up, xm, ff, h);
      for (let i = 0; i < ff; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
      const d = matvec(lw.down, g, h, ff);
      for (let i = 0; i < h; i++) x[i] += d[i];
    }
    const xf = rmsNormRef(x, w.norm, c.rmsNormEps);
    return Float32Array.from(matvec(w.lmHead, xf, c.vocabSize, h));
  }

  /** Causal GQA attention of `q` [numHeads, headDim] over every cached token of layer `l`. */
  private attend(l: number, q: Float64Array): Float64Array {
    const c = this.config;
    const hd = c.headDim;
    const keys = this.keys[l];
    const values = this.values[l];
    const n = keys.length;
    const group = c.numHeads / c.numKvHeads;
    const scale = 1 / Math.sqrt(hd);
    const out = new Float64Array(c.numHeads * hd);
    const s = new Float64Array(n);
    for (let head = 0; head < c.numHeads; head++) {
      const kvOff = Math.floor(head / group) * hd;
      const qOff = head * hd;
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[qOff + d] * keys[j][kvOff + d];
        s[j] = dot * scale;
        if (s[j] > max) max = s[j];
      }
      let sum = 0;
      for (let j = 0; j < n; j++) {
        s[j] = Math.exp(s[j] - max);
        sum += s[j];
      }
      for (let j = 0; j < n; j++) {
        const p = s[j] / sum;
        for (let d = 0; d < hd; d++) out[qOff + d] += p * values[j][kvOff + d];
      }
    }
    return out;
  }
}
