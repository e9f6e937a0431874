/**
 * llama2.c legacy checkpoint → Hugging Face directory (config.json with model_type llama +
 * model.safetensors in F32).
 *
 * Usage: deno run -A tools/convert_llama2c.ts SRC.bin DST_DIR
 *
 * llama2.c rotates adjacent pairs (2i, 2i+1) of each head; HF Llama rotates (i, i + hs/2) ("rotate_half").
 * The rows of wq and wk are permuted within each head (HF row i ← llama2.c row 2i, HF row i + hs/2 ←
 * llama2.c row 2i+1), so a rotate_half engine computes exactly what llama2.c computes: q·k is unchanged by
 * permuting q and k the same way, and v is untouched.
 */
import { writeSafetensors } from "../src/model/safetensors_write.ts";
import type { TensorToWrite } from "../src/model/safetensors_write.ts";

/** The 7 int32 fields that open a llama2.c legacy checkpoint. */
export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  /** Absolute vocabulary size. */
  vocabSize: number;
  /** The vocab field was positive: the classifier is the token embedding. */
  shared: boolean;
  seqLen: number;
}

/** A file that is not a valid llama2.c legacy checkpoint. */
export class Llama2cError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Llama2cError";
  }
}

const HEADER_BYTES = 28;

/** Parses and validates the header; `fileSize` must match the layout exactly. */
export function parseLlama2cHeader(bytes: Uint8Array, fileSize: number, file = "checkpoint"): Llama2cHeader {
  if (bytes.byteLength < HEADER_BYTES) {
    throw new Llama2cError(`${file}: ${bytes.byteLength} bytes, shorter than the 28-byte llama2.c header`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const f = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = f;
  const names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
  for (let i = 0; i < 7; i++) {
    if (i === 5 ? f[i] === 0 : f[i] <= 0) {
      throw new Llama2cError(
        `${file}: header field ${names[i]} = ${f[i]} is invalid (header ${f.join(", ")})`,
      );
    }
  }
  if (dim % nHeads !== 0) {
    throw new Llama2cError(`${file}: dim ${dim} is not a multiple of n_heads ${nHeads}`);
  }
  if (nHeads % nKvHeads !== 0) {
    throw new Llama2cError(`${file}: n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  }
  if ((dim / nHeads) % 2 !== 0) throw new Llama2cError(`${file}: head size ${dim / nHeads} is odd`);
  const h: Llama2cHeader = {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: Math.abs(vocab),
    shared: vocab > 0,
    seqLen,
  };
  const want = HEADER_BYTES + 4 * llama2cFloatCount(h);
  if (fileSize !== want) {
    throw new Llama2cError(
      `${file}: ${fileSize} bytes, but header (${f.join(", ")}) describes a file of exactly ${want} bytes`,
    );
  }
  return h;
}

/** Number of float32 values after the header (weights, legacy RoPE tables, optional classifier). */
export function llama2cFloatCount(h: Llama2cHeader): number {
  const hs = h.dim / h.nHeads;
  const kv = h.nKvHeads * hs;
  const L = h.nLayers;
  return h.vocabSize * h.dim + // token embedding
    L * h.dim + // rms_att
    L * h.dim * h.dim + // wq
    2 * L * kv * h.dim + // wk, wv
    L * h.dim * h.dim + // wo
    L * h.dim + // rms_ffn
    3 * L * h.hiddenDim * h.dim + // w1, w2, w3
    h.dim + // rms_final
    h.seqLen * hs + // legacy freq_cis_real + freq_cis_imag (seq_len * hs/2 each)
    (h.shared ? 0 : h.vocabSize * h.dim);
}

/** Permutes rows of a [heads*hs, cols] matrix from adjacent-pair to rotate_half order within each head. */
export function permuteRopeRows(w: Float32Array, heads: number, hs: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = hs / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const base = h * hs;
      out.set(w.subarray((base + 2 * i) * cols, (base + 2 * i + 1) * cols), (base + i) * cols);
      out.set(w.subarray((base + 2 * i + 1) * cols, (base + 2 * i + 2) * cols), (base + half + i) * cols);
    }
  }
  return out;
}

/** HF config.json object for a llama2.c header. */
export function llama2cConfig(h: Llama2cHeader): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: h.dim,
    intermediate_size: h.hiddenDim,
    num_hidden_layers: h.nLayers,
    num_attention_heads: h.nHeads,
    num_key_value_heads: h.nKvHeads,
    head_dim: h.dim / h.nHeads,
    vocab_size: h.vocabSize,
    max_position_embeddings: h.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    rope_scaling: null,
    hidden_act: "silu",
    attention_bias: false,
    tie_word_embeddings: h.shared,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
  };
}

function asBytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Converts the llama2.c checkpoint at `src` into an HF directory `dst` (created if needed).
 * Returns the parsed header.
 */
export async function convertLlama2c(src: string, dst: string): Promise<Llama2cHeader> {
  const file = await Deno.readFile(src);
  const h = parseLlama2cHeader(file, file.byteLength, src);
  // Copy past the header so the floats are 4-byte aligned whatever the file buffer's offset.
  const floats = new Float32Array(file.slice(HEADER_BYTES).buffer);
  let at = 0;
  const take = (n: number): Float32Array => {
    const v = floats.subarray(at, at + n);
    at += n;
    return v;
  };
  const { dim, hiddenDim, nLayers: L, nHeads, nKvHeads } = h;
  const hs = dim / nHeads;
  const kv = nKvHeads * hs;
  const emb = take(h.vocabSize * dim);
  const rmsAtt = take(L * dim);
  const wq = take(L * dim * dim);
  const wk = take(L * kv * dim);
  const wv = take(L * kv * dim);
  const wo = take(L * dim * dim);
  const rmsFfn = take(L * dim);
  const w1 = take(L * hiddenDim * dim);
  const w2 = take(L * dim * hiddenDim);
  const w3 = take(L * hiddenDim * dim);
  const rmsFinal = take(dim);
  take(h.seqLen * hs); // legacy RoPE tables: recomputed by the engine
  const cls = h.shared ? null : take(h.vocabSize * dim);

  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: number[], data: Float32Array) =>
    tensors.push({ name, dtype: "F32", shape, data: asBytes(data) });
  add("model.embed_tokens.weight", [h.vocabSize, dim], emb);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    const layer = (a: Float32Array, n: number) => a.subarray(l * n, (l + 1) * n);
    add(`${p}.input_layernorm.weight`, [dim], layer(rmsAtt, dim));
    add(`${p}.self_attn.q_proj.weight`, [dim, dim], permuteRopeRows(layer(wq, dim * dim), nHeads, hs, dim));
    add(`${p}.self_attn.k_proj.weight`, [kv, dim], permuteRopeRows(layer(wk, kv * dim), nKvHeads, hs, dim));
    add(`${p}.self_attn.v_proj.weight`, [kv, dim], layer(wv, kv * dim));
    add(`${p}.self_attn.o_proj.weight`, [dim, dim], layer(wo, dim * dim));
    add(`${p}.post_attention_layernorm.weight`, [dim], layer(rmsFfn, dim));
    add(`${p}.mlp.gate_proj.weight`, [hiddenDim, dim], layer(w1, hiddenDim * dim));
    add(`${p}.mlp.up_proj.weight`, [hiddenDim, dim], layer(w3, hiddenDim * dim));
    add(`${p}.mlp.down_proj.weight`, [dim, hiddenDim], layer(w2, dim * hiddenDim));
  }
  add("model.norm.weight", [dim], rmsFinal);
  if (cls) add("lm_head.weight", [h.vocabSize, dim], cls);

  await Deno.mkdir(dst, { recursive: true });
  await Deno.writeTextFile(`${dst}/config.json`, JSON.stringify(llama2cConfig(h), null, 2) + "\n");
  await writeSafetensors(`${dst}/model.safetensors`, tensors, { format: "pt", source: "llama2.c" });
  return h;
}

if (import.meta.main) {
  const args = Deno.args;
  const help = args.includes("--help") || args.includes("-h");
  if (args.length !== 2 || help) {
    (help ? console.log : console.error)(
      "usage: deno run -A tools/convert_llama2c.ts SRC.bin DST_DIR\n" +
        "Converts a llama2.c legacy checkpoint to a Hugging Face directory (config.json + model.safetensors, F32),\n" +
        "permuting wq/wk rows to HF's rotate_half RoPE layout.",
    );
    Deno.exit(help ? 0 : 2);
  }
  try {
    const h = await convertLlama2c(args[0], args[1]);
    console.error(
      `converted: dim ${h.dim}, hidden ${h.hiddenDim}, ${h.nLayers} layers, ${h.nHeads}/${h.nKvHeads} heads, ` +
        `vocab ${h.vocabSize}${h.shared ? " (tied)" : ""}, seq ${h.seqLen} → ${args[1]}`,
    );
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
