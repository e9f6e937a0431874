/** tools/convert_llama2c.ts and tools/make_checkpoint.ts: validation, sharding, determinism, loadability. */
import assert from "node:assert/strict";
import {
  convertLlama2c,
  Llama2cError,
  llama2cFloatCount,
  parseLlama2cHeader,
  permuteRopeRows,
} from "../tools/convert_llama2c.ts";
import { makeCheckpoint, parseBytes, resolveShape } from "../tools/make_checkpoint.ts";
import { loadConfig, validateCheckpoint } from "../src/model/config.ts";
import { INDEX_FILE, SafetensorsIndex } from "../src/model/safetensors.ts";
import { RefModel } from "../src/ref/forward.ts";
import { freshSeed, randomF32, rng } from "./helpers.ts";

const TOOL = new URL("../tools/make_checkpoint.ts", import.meta.url).pathname;

/** A synthetic llama2.c checkpoint; vocab < 0 adds a separate classifier. */
function llama2cFile(fields: number[], seed: number, truncateBy = 0): Uint8Array {
  const [dim, hidden, layers, heads, kv, vocab, seq] = fields;
  const h = {
    dim,
    hiddenDim: hidden,
    nLayers: layers,
    nHeads: heads,
    nKvHeads: kv,
    vocabSize: Math.abs(vocab),
    shared: vocab > 0,
    seqLen: seq,
  };
  const floats = randomF32(Math.max(0, llama2cFloatCount(h)), rng(seed), 0.5);
  const out = new Uint8Array(28 + floats.byteLength - truncateBy);
  const dv = new DataView(out.buffer);
  fields.forEach((f, i) => dv.setInt32(i * 4, f, true));
  out.set(new Uint8Array(floats.buffer).subarray(0, floats.byteLength - truncateBy), 28);
  return out;
}

Deno.test("convert_llama2c: header and size validation", () => {
  const good = [16, 24, 2, 4, 2, 32, 8];
  const f = llama2cFile(good, 1);
  assert.equal(parseLlama2cHeader(f, f.length).vocabSize, 32);
  const bad: [Uint8Array, RegExp][] = [
    [new Uint8Array(10), /shorter than the 28-byte llama2.c header/],
    [llama2cFile(good, 1, 4), /bytes, but header .* describes a file of exactly/],
    [llama2cFile([16, 24, 2, 4, 2, 0, 8], 1), /vocab_size = 0 is invalid/],
    [llama2cFile([16, 24, -2, 4, 2, 32, 8], 1).subarray(0, 28), /n_layers = -2 is invalid/],
    [llama2cFile([16, 24, 2, 3, 3, 32, 8], 1), /dim 16 is not a multiple of n_heads 3/],
    [llama2cFile([16, 24, 2, 4, 3, 32, 8], 1), /n_heads 4 is not a multiple of n_kv_heads 3/],
    [llama2cFile([12, 24, 2, 4, 2, 32, 8], 1), /head size 3 is odd/],
  ];
  for (const [bytes, pattern] of bad) {
    assert.throws(() => parseLlama2cHeader(bytes, bytes.length, "x.bin"), (e: unknown) => {
      assert(e instanceof Llama2cError, String(e));
      assert.match(e.message, /^x\.bin: /);
      assert.match(e.message, pattern);
      return true;
    });
  }
});

Deno.test("convert_llama2c: rotate_half row permutation and an untied classifier", async () => {
  // Head size 4, one head, 1 column: rows 0,1,2,3 (pairs (0,1), (2,3)) → 0,2,1,3.
  assert.deepEqual([...permuteRopeRows(new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]), 2, 4, 1)], [
    0,
    2,
    1,
    3,
    4,
    6,
    5,
    7,
  ]);
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const dir = await Deno.makeTempDir();
  const bytes = llama2cFile([16, 24, 2, 4, 2, -32, 8], seed);
  await Deno.writeFile(`${dir}/m.bin`, bytes);
  const h = await convertLlama2c(`${dir}/m.bin`, `${dir}/hf`);
  assert.equal(h.shared, false);
  const config = await loadConfig(`${dir}/hf`);
  assert.equal(config.tieWordEmbeddings, false);
  assert.deepEqual([config.bosTokenId, config.eosTokenIds], [1, [2]]);
  const idx = await SafetensorsIndex.open(`${dir}/hf`);
  validateCheckpoint(config, idx);
  const floats = new Float32Array(bytes.slice(28).buffer);
  assert.deepEqual(await idx.readF32("lm_head.weight"), floats.subarray(floats.length - 32 * 16));
  assert.deepEqual(await idx.readF32("model.embed_tokens.weight"), floats.subarray(0, 32 * 16));
  idx.close();
  const model = await RefModel.load(`${dir}/hf`);
  assert(model.forward([1, 5, 9], 0).every((l) => l.every(Number.isFinite)));
  await assert.rejects(() => convertLlama2c(`${dir}/nope.bin`, `${dir}/x`));
  await Deno.remove(dir, { recursive: true });
});

const TINY_QWEN = {
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 300,
  tie_word_embeddings: false,
  rope_theta: 10000,
  rms_norm_eps: 1e-6,
};

function std(x: Float32Array): number {
  let s = 0;
  let s2 = 0;
  for (const v of x) {
    s += v;
    s2 += v * v;
  }
  return Math.sqrt(s2 / x.length - (s / x.length) ** 2);
}

Deno.test("make_checkpoint: sharded, seeded (identical bytes), loadable, sane activations", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/tiny.json`, JSON.stringify(TINY_QWEN));
  const opts = { shape: `${dir}/tiny.json`, seed: 7, shardBytes: 40_000, tokenizer: false };
  const a = await makeCheckpoint({ ...opts, out: `${dir}/a` });
  await makeCheckpoint({ ...opts, out: `${dir}/b` });
  await makeCheckpoint({ ...opts, seed: 8, out: `${dir}/c` });
  const shards = a.files.filter((f) => f.endsWith(".safetensors"));
  assert(shards.length >= 3, `expected several shards: ${a.files}`);
  assert(a.files.includes(`${dir}/a/${INDEX_FILE}`));
  for (const f of shards) {
    const name = f.slice(f.lastIndexOf("/") + 1);
    assert.deepEqual(await Deno.readFile(f), await Deno.readFile(`${dir}/b/${name}`), `${name} differs`);
    assert((await Deno.stat(f)).size <= 40_000 + 4096);
  }
  assert.notDeepEqual(
    await Deno.readFile(shards[0]),
    await Deno.readFile(`${dir}/c/${shards[0].slice(dir.length + 3)}`),
  );

  const config = await loadConfig(`${dir}/a`);
  assert.equal(config.attentionBias, true);
  const idx = await SafetensorsIndex.open(`${dir}/a`);
  validateCheckpoint(config, idx);
  assert.equal(idx.info("model.layers.0.self_attn.q_proj.weight")!.dtype, "BF16");
  assert((await idx.readF32("model.norm.weight")).every((v) => v === 1));
  const w = await idx.readF32("model.layers.2.mlp.up_proj.weight");
  assert(Math.abs(std(w) - 0.02) < 0.002, `weight std ${std(w)}`);
  idx.close();

  const model = await RefModel.load(`${dir}/a`);
  const logits = model.forward([1, 2, 3, 299], 0);
  for (const l of logits) {
    assert(l.every(Number.isFinite));
    const s = std(l);
    assert(s > 0.05 && s < 10, `logit std ${s}`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("make_checkpoint: named real shape at one layer (R1-Distill-Qwen-1.5B width, GQA 12/2)", async () => {
  const dir = await Deno.makeTempDir();
  const made = await makeCheckpoint({
    shape: "qwen-1.5b",
    layers: 1,
    vocab: 256,
    out: dir,
    tokenizer: false,
  });
  assert.deepEqual(
    [made.config.hiddenSize, made.config.intermediateSize, made.config.numHeads, made.config.numKvHeads],
    [1536, 8960, 12, 2],
  );
  assert.equal(made.config.bosTokenId, 151646);
  const model = await RefModel.load(dir);
  const [l0, l1] = model.forward([5, 17], 0);
  assert(l0.every(Number.isFinite) && l1.every(Number.isFinite));
  assert(std(l1) > 0.05 && std(l1) < 10, `logit std ${std(l1)}`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("make_checkpoint: shape lookup and byte counts", async () => {
  assert.equal((await resolveShape("DeepSeek-R1-Distill-Llama-8B")).hidden_size, 4096);
  assert.equal((await resolveShape("llama-70b")).hidden_size, 8192);
  await assert.rejects(() => resolveShape("qwen"), /ambiguous/);
  await assert.rejects(() => resolveShape("gpt2"), /unknown; known shapes: DeepSeek-R1-Distill-Qwen-1.5B/);
  assert.equal(parseBytes("2G"), 2 * 1024 ** 3);
  assert.equal(parseBytes("500k"), 512_000);
  assert.equal(parseBytes("1234"), 1234);
  assert.throws(() => parseBytes("lots"));
});

Deno.test("make_checkpoint CLI: llama with llama3 RoPE, tied embeddings, tokenizer copied; --help", async () => {
  const dir = await Deno.makeTempDir();
  const cfg = {
    ...TINY_QWEN,
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    num_hidden_layers: 2,
    tie_word_embeddings: true,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 64,
    },
  };
  await Deno.writeTextFile(`${dir}/tiny.json`, JSON.stringify(cfg));
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", TOOL, ...args],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  const out = await run([
    "--shape",
    `${dir}/tiny.json`,
    "--out",
    `${dir}/m`,
    "--seed",
    "3",
    "--shard-size",
    "20K",
  ]);
  const err = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, err);
  const tok = JSON.parse(await Deno.readTextFile(`${dir}/m/tokenizer.json`));
  assert(tok.model?.vocab?.["<|begin_of_text|>"] === 128000 || tok.added_tokens?.length > 0);
  await Deno.stat(`${dir}/m/tokenizer_config.json`);
  await Deno.stat(`${dir}/m/${INDEX_FILE}`);
  const config = await loadConfig(`${dir}/m`);
  assert.equal(config.ropeScaling?.factor, 8);
  assert.equal(config.tieWordEmbeddings, true);
  const model = await RefModel.load(`${dir}/m`);
  assert(model.forward([1, 2, 3], 0).every((l) => l.every(Number.isFinite)));

  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(new TextDecoder().decode(help.stdout), /--shard-size/);
  const bad = await run(["--shape", "nonesuch", "--out", `${dir}/x`]);
  assert.equal(bad.code, 1);
  assert.match(new TextDecoder().decode(bad.stderr), /known shapes/);
  const missing = await run(["--out", `${dir}/x`]);
  assert.equal(missing.code, 2);
  await Deno.remove(dir, { recursive: true });
});
