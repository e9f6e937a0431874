/** config.json parsing, the expected tensor list, and checkpoint validation. */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import assert from "node:assert/strict";
import {
  CheckpointError,
  ConfigError,
  expectedTensors,
  loadConfig,
  parseConfig,
  validateCheckpoint,
} from "../src/model/config.ts";

const SHAPES = JSON.parse(
  await Deno.readTextFile(new URL("../tools/r1-distill-shapes.json", import.meta.url)),
) as Record<string, Record<string, unknown>>;

Deno.test("config: R1-Distill-Qwen-1.5B shape parses to the Qwen2 config", () => {
  const c = parseConfig(SHAPES["DeepSeek-R1-Distill-Qwen-1.5B"]);
  assert.deepEqual(c, {
    modelType: "qwen2",
    hiddenSize: 1536,
    intermediateSize: 8960,
    numLayers: 28,
    numHeads: 12,
    numKvHeads: 2,
    headDim: 128,
    vocabSize: 151936,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: null,
    tieWordEmbeddings: false,
    attentionBias: true,
    bosTokenId: 151646,
    eosTokenIds: [151643],
    maxPositionEmbeddings: 131072,
  });
});

Deno.test("config: R1-Distill-Llama-8B has llama3 RoPE scaling, no biases, and every shape parses", () => {
  const c = parseConfig(SHAPES["DeepSeek-R1-Distill-Llama-8B"]);
  assert.equal(c.modelType, "llama");
  assert.equal(c.attentionBias, false);
  assert.equal(c.headDim, 128);
  assert.equal(c.ropeTheta, 500000);
  assert.deepEqual(c.ropeScaling, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  for (const [name, shape] of Object.entries(SHAPES)) {
    if (name.startsWith("_")) continue;
    const p = parseConfig(shape, name);
    assert.equal(p.numHeads % p.numKvHeads, 0);
  }
});

Deno.test("config: optional fields (head_dim, eos list, attention_bias, rope_scaling default)", () => {
  const base = {
    model_type: "llama",
    hidden_size: 64,
    intermediate_size: 100,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 50,
  };
  const a = parseConfig({ ...base, head_dim: 32, eos_token_id: [2, 7], attention_bias: true });
  assert.equal(a.headDim, 32);
  assert.deepEqual(a.eosTokenIds, [2, 7]);
  assert.equal(a.attentionBias, true);
  assert.equal(a.bosTokenId, null);
  const b = parseConfig({ ...base, rope_scaling: { rope_type: "default" }, eos_token_id: 3 });
  assert.equal(b.ropeScaling, null);
  assert.deepEqual(b.eosTokenIds, [3]);
  assert.equal(b.numKvHeads, 2);
  assert.equal(parseConfig({ ...base, num_key_value_heads: undefined }).numKvHeads, 4);
});

Deno.test("config: unsupported or invalid configs are named errors", () => {
  const base = {
    model_type: "qwen2",
    hidden_size: 64,
    intermediate_size: 100,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 50,
  };
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ model_type: "mistral" }, /model_type "mistral" is not supported \(supported: qwen2, llama\)/],
    [{ model_type: undefined }, /model_type undefined is not supported/],
    [{ hidden_size: 0 }, /hidden_size must be a positive integer/],
    [{ hidden_size: 64.5 }, /hidden_size must be a positive integer/],
    [{ vocab_size: undefined }, /missing vocab_size/],
    [{ num_key_value_heads: 3 }, /not a multiple of num_key_value_heads 3/],
    [{ hidden_size: 66 }, /hidden_size 66 is not a multiple of num_attention_heads 4/],
    [{ head_dim: 7 }, /must be even/],
    [{ rms_norm_eps: -1 }, /rms_norm_eps must be a positive number/],
    [{ rope_scaling: { rope_type: "yarn", factor: 4 } }, /rope_scaling type "yarn" is not supported/],
    [{ model_type: "llama", rope_scaling: { rope_type: "llama3", factor: 8 } }, /missing low_freq_factor/],
    [{ hidden_act: "gelu" }, /hidden_act "gelu" is not supported/],
    [{ use_sliding_window: true }, /use_sliding_window/],
    [{ eos_token_id: [1, -2] }, /eos_token_id\[1\]/],
    [{ tie_word_embeddings: "yes" }, /tie_word_embeddings must be a boolean/],
  ];
  for (const [patch, pattern] of bad) {
    assert.throws(() => parseConfig({ ...base, ...patch }, "x/config.json"), (e: unknown) => {
      assert(e instanceof ConfigError, String(e));
      assert.match(e.message, /^x\/config\.json: /);
      assert.match(e.message, pattern);
      return true;
    });
  }
  assert.throws(() => parseConfig([1]), /not a JSON object/);
});

Deno.test("config: expectedTensors and validateCheckpoint report every fault at once", async () => {
  const qwen = parseConfig({
    model_type: "qwen2",
    hidden_size: 64,
    intermediate_size: 96,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 50,
    tie_word_embeddings: false,
  });
  const specs = expectedTensors(qwen);
  assert.equal(specs.length, 1 + 2 * 12 + 2);
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  assert.deepEqual(shapes.get("model.embed_tokens.weight"), [50, 64]);
  assert.deepEqual(shapes.get("model.layers.1.self_attn.k_proj.weight"), [32, 64]);
  assert.deepEqual(shapes.get("model.layers.1.self_attn.k_proj.bias"), [32]);
  assert.deepEqual(shapes.get("model.layers.0.self_attn.o_proj.weight"), [64, 64]);
  assert.deepEqual(shapes.get("model.layers.0.mlp.down_proj.weight"), [64, 96]);
  assert.deepEqual(shapes.get("lm_head.weight"), [50, 64]);
  const tied = expectedTensors({
    ...qwen,
    modelType: "llama",
    attentionBias: false,
    tieWordEmbeddings: true,
  });
  assert.equal(tied.length, 1 + 2 * 9 + 1);
  assert(!tied.some((s) => s.name === "lm_head.weight" || s.name.endsWith(".bias")));

  const index = { info: (name: string) => (shapes.has(name) ? { shape: shapes.get(name)! } : undefined) };
  validateCheckpoint(qwen, index);
  shapes.delete("model.layers.0.self_attn.q_proj.bias");
  shapes.delete("model.norm.weight");
  shapes.set("lm_head.weight", [64, 50]);
  assert.throws(() => validateCheckpoint(qwen, index), (e: unknown) => {
    assert(e instanceof CheckpointError);
    assert.equal(e.problems.length, 3);
    assert.match(e.message, /missing model\.layers\.0\.self_attn\.q_proj\.bias \[64\]/);
    assert.match(e.message, /missing model\.norm\.weight/);
    assert.match(e.message, /lm_head\.weight has shape \[64,50\], expected \[50,64\]/);
    return true;
  });

  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(SHAPES["DeepSeek-R1-Distill-Qwen-7B"]));
  assert.equal((await loadConfig(dir)).hiddenSize, 3584);
  await assert.rejects(() => loadConfig(`${dir}/nope`), ConfigError);
  await Deno.writeTextFile(`${dir}/config.json`, "{");
  await assert.rejects(() => loadConfig(dir), /not valid JSON/);
  await Deno.remove(dir, { recursive: true });
});
