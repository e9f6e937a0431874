/** Test models: the bundled stories260K and small random-weight Qwen2 / Llama checkpoints built on demand. */
import "../../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { fileURLToPath } from "node:url";
import { makeCheckpoint } from "../../tools/make_checkpoint.ts";

/** The stories260K model in Hugging Face layout (committed under models/). */
export const STORIES_DIR: string = fileURLToPath(new URL("../../models/stories260K", import.meta.url));
/** Golden outputs of stories260K from an independent implementation. */
export const GOLDEN_DIR: string = fileURLToPath(new URL("../fixtures/stories260K", import.meta.url));

/** A Qwen2 shape with biases and 6:1 grouped-query attention, like R1-Distill-Qwen-1.5B but tiny. */
export const TINY_QWEN2: Record<string, unknown> = {
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  hidden_size: 192,
  intermediate_size: 320,
  num_hidden_layers: 3,
  num_attention_heads: 12,
  num_key_value_heads: 2,
  vocab_size: 1000,
  tie_word_embeddings: false,
  rope_theta: 10000,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 4096,
  bos_token_id: 1,
  eos_token_id: 2,
};

/** A Llama shape with Llama-3 RoPE scaling whose low frequencies are rescaled at these lengths. */
export const TINY_LLAMA3: Record<string, unknown> = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 128,
  intermediate_size: 256,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  num_key_value_heads: 2,
  vocab_size: 700,
  tie_word_embeddings: false,
  rope_theta: 500000,
  rope_scaling: {
    rope_type: "llama3",
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 64,
  },
  rms_norm_eps: 1e-5,
  max_position_embeddings: 4096,
  bos_token_id: 1,
  eos_token_id: 2,
};

const built = new Map<string, Promise<string>>();

/** Builds (once per process) a random-weight bf16 checkpoint of `shape` in a temp dir and returns the dir. */
export function randomCheckpoint(name: string, shape: Record<string, unknown>, std = 0.08): Promise<string> {
  let p = built.get(name);
  if (!p) {
    p = (async () => {
      const dir = await Deno.makeTempDir({ prefix: `lethe-${name}-` });
      await Deno.writeTextFile(`${dir}/shape.json`, JSON.stringify(shape));
      await makeCheckpoint({
        shape: `${dir}/shape.json`,
        out: `${dir}/model`,
        seed: 7,
        std,
        tokenizer: false,
      });
      return `${dir}/model`;
    })();
    built.set(name, p);
  }
  return p;
}

/**
 * A random 2-layer Qwen2 with the real Qwen tokenizer's 151,936-entry vocabulary and a tokenizer.json (text
 * prompts, chat templates, the full-vocab LM head), written to a fresh temp dir; returns the model dir.
 */
export async function tinyChatModel(prefix: string, seed: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  await Deno.writeTextFile(
    `${dir}/shape.json`,
    JSON.stringify({
      architectures: ["Qwen2ForCausalLM"],
      model_type: "qwen2",
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 151936,
      tie_word_embeddings: true,
      rope_theta: 10000,
      rms_norm_eps: 1e-6,
      max_position_embeddings: 1024,
      bos_token_id: 151643,
      eos_token_id: 151643,
    }),
  );
  await makeCheckpoint({ shape: `${dir}/shape.json`, out: `${dir}/model`, seed, std: 0.08, tokenizer: true });
  return `${dir}/model`;
}
