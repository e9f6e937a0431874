// The shipped reasoning model (models/lethe-reasoner-tiny): its config, checkpoint header, tokenizer and
// held-out task files load through Lethe's own loaders and agree with each other. Fast: no forward pass.
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { loadConfig, validateCheckpoint } from "../src/model/config.ts";
import { SafetensorsIndex } from "../src/model/safetensors.ts";
import { applyChatTemplate, Tokenizer } from "../tokenizer/mod.ts";

// LETHE_REASONER_DIR points the test at another export of the same trainer (e.g. a fresh run).
const DIR = Deno.env.get("LETHE_REASONER_DIR") ??
  fileURLToPath(new URL("../models/lethe-reasoner-tiny", import.meta.url));
// The task families are whatever held-out files the export wrote (the trainer's tasks.FAMILIES).
const FAMILIES = [...Deno.readDirSync(`${DIR}/heldout`)].map((e) => e.name).filter((n) =>
  n.endsWith(".jsonl")
)
  .map((n) => n.slice(0, -".jsonl".length)).sort();
const BOS = "<｜begin▁of▁sentence｜>";
const USER = "<｜User｜>";
const ASSISTANT = "<｜Assistant｜>";

interface HeldoutRow {
  prompt: string;
  answer: string;
  family: string;
}

async function heldout(family: string): Promise<HeldoutRow[]> {
  const text = await Deno.readTextFile(`${DIR}/heldout/${family}.jsonl`);
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as HeldoutRow);
}

Deno.test("lethe-reasoner-tiny: config and checkpoint header match the Qwen2 loader", async () => {
  const config = await loadConfig(DIR);
  assert.deepEqual(config.modelType, "qwen2");
  assert(config.attentionBias, "Qwen2 has q/k/v biases");
  assert(config.numHeads % config.numKvHeads === 0 && config.numKvHeads < config.numHeads, "GQA");
  const index = await SafetensorsIndex.open(DIR);
  try {
    validateCheckpoint(config, index);
    assert.deepEqual(index.info("model.embed_tokens.weight")?.dtype, "BF16");
  } finally {
    index.close();
  }
});

Deno.test("lethe-reasoner-tiny: tokenizer ids agree with config.json and the R1 chat template", async () => {
  const config = await loadConfig(DIR);
  const tok = await Tokenizer.fromFile(`${DIR}/tokenizer.json`);
  assert.deepEqual(tok.vocabSize, config.vocabSize);
  assert.deepEqual(tok.bosId, config.bosTokenId);
  assert.deepEqual(tok.eosId, config.eosTokenIds[0]);
  assert.deepEqual(tok.chatTemplate, "deepseek-r1");
  for (const t of ["<think>", "</think>", USER, ASSISTANT]) assert(tok.tokenToId(t) !== undefined, t);
});

Deno.test("lethe-reasoner-tiny: held-out sets parse, render as the chat template does, and tokenize in vocab", async () => {
  const config = await loadConfig(DIR);
  const tok = await Tokenizer.fromFile(`${DIR}/tokenizer.json`);
  const think = tok.tokenToId("<think>")!;
  assert(FAMILIES.length >= 2, `task families: ${FAMILIES}`);
  for (const family of FAMILIES) {
    const rows = await heldout(family);
    assert(rows.length >= 50, `${family}: ${rows.length} rows`);
    const prompts = new Set<string>();
    for (const r of rows) {
      assert.deepEqual(r.family, family);
      assert(typeof r.answer === "string" && r.answer.length > 0);
      prompts.add(r.prompt);
    }
    assert.deepEqual(prompts.size, rows.length, `${family}: held-out prompts are distinct`);
    for (const r of rows.slice(0, 20)) {
      assert(r.prompt.startsWith(BOS + USER), r.prompt);
      const question = r.prompt.slice((BOS + USER).length, r.prompt.indexOf(ASSISTANT));
      assert.deepEqual(applyChatTemplate([{ role: "user", content: question }], "deepseek-r1"), r.prompt);
      const ids = tok.encode(r.prompt, { addSpecialTokens: false });
      assert(ids.every((id) => Number.isInteger(id) && id >= 0 && id < config.vocabSize));
      assert.deepEqual(ids[0], config.bosTokenId);
      assert.deepEqual(ids.slice(-2), [think, tok.encode("\n", { addSpecialTokens: false })[0]]);
      assert.deepEqual(tok.decode(ids), r.prompt);
    }
  }
});
