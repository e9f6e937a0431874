/**
 * Model load time and decode speed of the bundled reasoner in headless Chromium (WebGPU on SwiftShader, the
 * page of web/ driven by its query parameters) against Deno (WebGPU on Mesa's lavapipe), same prompt and
 * settings, alternating runs in one session. Writes bench/browser/results.json and prints a table.
 *
 *   deno run --allow-read --allow-write --allow-env --allow-run --allow-net=127.0.0.1 bench/browser/measure.ts \
 *     [--runs 3] [--max-tokens 300]
 *
 * Load = Engine.load as the page and the CLI call it: config, weights to the GPU, tokenizer and the warm-up
 * that compiles every kernel (in Chromium also the safetensors header check, HTTP Range reads from the local
 * server and the Cache API; run 1 starts with an empty cache, later runs read the weights from it).
 */
import "../../src/io/deno_fs.ts"; // local model paths
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { Engine } from "../../src/engine/engine.ts";
import { startServer } from "../../src/server/server.ts";
import { applyChatTemplate } from "../../tokenizer/mod.ts";
import { DEFAULT_MODEL_DIR } from "../../src/util/paths.ts";
import { buildWeb } from "../../tools/build_web.ts";
import { CHROMIUM_PATHS, chromiumLaunchOptions, findChromium } from "../../tools/chromium.ts";

const PROMPT = "walk 60 steps from 28. map: 28>37, 37>41, 41>28.";
const CHROMIUM = findChromium();

interface Row {
  runtime: "deno" | "chromium";
  kv: string;
  run: number;
  load_ms: number;
  weights_ms: number | null;
  decode_tokens: number;
  decode_tok_s: number;
  prefill_tok_s: number;
}

const { values } = parseArgs({
  args: Deno.args,
  options: { runs: { type: "string", default: "3" }, "max-tokens": { type: "string", default: "300" } },
});
const runs = Number(values.runs);
const maxTokens = Number(values["max-tokens"]);
if (!CHROMIUM) throw new Error(`no Chromium at ${CHROMIUM_PATHS.join(" or ")}`);

const settings = [{ kv: "full", query: { kv: "full" } }, {
  kv: "lethe@64",
  query: { kv: "lethe", kv_budget: 64 },
}];

// deno-lint-ignore no-import-prefix
const { default: puppeteer } = await import("npm:puppeteer-core@25.19.0");
const webDir = await Deno.makeTempDir({ prefix: "lethe-web-" });
const profile = await Deno.makeTempDir({ prefix: "lethe-chromium-" });
await buildWeb({ outDir: webDir });
const serving = await Engine.load(DEFAULT_MODEL_DIR, { progress: false, warmup: false });
const server = startServer(serving, { hostname: "127.0.0.1", port: 0, webDir, modelDir: DEFAULT_MODEL_DIR });
const browser = await puppeteer.launch(chromiumLaunchOptions(CHROMIUM, profile));
const rows: Row[] = [];
let adapter = "";
try {
  for (let run = 1; run <= runs; run++) {
    for (const s of settings) {
      // Deno: a fresh engine each run, as a CLI invocation loads one.
      const t0 = performance.now();
      const engine = await Engine.load(DEFAULT_MODEL_DIR, { progress: false });
      const loadMs = performance.now() - t0;
      const tok = engine.tokenizer!;
      const ids = tok.encode(
        applyChatTemplate([{ role: "user", content: PROMPT }], tok.chatTemplate ?? "deepseek-r1", {
          defaultSystemPrompt: tok.defaultSystemPrompt,
        }),
        { addSpecialTokens: false },
      );
      const kv = s.query.kv === "full"
        ? { policy: "full" as const }
        : { policy: "lethe" as const, budget: s.query.kv_budget };
      const r = await engine.generate(ids, { maxTokens, kv });
      engine.destroy();
      rows.push({
        runtime: "deno",
        kv: s.kv,
        run,
        load_ms: loadMs,
        weights_ms: null,
        decode_tokens: r.stats.decode_tokens,
        decode_tok_s: r.stats.decode_tok_s,
        prefill_tok_s: r.stats.prefill_tok_s,
      });

      // Chromium: a fresh page (a new WebGPU device) each run.
      const page = await browser.newPage();
      const q = new URLSearchParams({
        chat: "1",
        prompt: PROMPT,
        max_tokens: String(maxTokens),
        temperature: "0",
      });
      for (const [k, v] of Object.entries(s.query)) q.set(k, String(v));
      await page.goto(`${server.url}/?${q}`);
      await page.waitForFunction(`document.title === "done" || document.title === "error"`, {
        timeout: 300_000,
      });
      const p = await page.evaluate("globalThis.__lethe") as {
        error?: string;
        ids: number[];
        loadMs: number;
        weightsMs: number;
        gpu: { description: string };
        stats: { decode_tokens: number; decode_tok_s: number; prefill_tok_s: number };
      };
      await page.close();
      if (p.error) throw new Error(`page: ${p.error}`);
      if (JSON.stringify(p.ids) !== JSON.stringify(r.ids)) throw new Error(`${s.kv}: ids differ from Deno's`);
      adapter = p.gpu.description;
      rows.push({
        runtime: "chromium",
        kv: s.kv,
        run,
        load_ms: p.loadMs,
        weights_ms: p.weightsMs,
        decode_tokens: p.stats.decode_tokens,
        decode_tok_s: p.stats.decode_tok_s,
        prefill_tok_s: p.stats.prefill_tok_s,
      });
      const [d, c] = rows.slice(-2);
      console.log(
        `run ${run} ${s.kv.padEnd(8)} deno load ${(d.load_ms / 1000).toFixed(2)} s, ${
          d.decode_tok_s.toFixed(1)
        } tok/s` +
          ` | chromium load ${(c.load_ms / 1000).toFixed(2)} s (weights ${
            (c.weights_ms! / 1000).toFixed(2)
          } s), ` +
          `${c.decode_tok_s.toFixed(1)} tok/s (${c.decode_tokens} tokens)`,
      );
    }
  }
} finally {
  await browser.close();
  await server.shutdown();
  serving.destroy();
  await Deno.remove(webDir, { recursive: true });
  await Deno.remove(profile, { recursive: true }).catch(() => {});
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
console.log(`\nmedians over ${runs} runs (Chromium adapter: ${adapter}; Deno: lavapipe)`);
console.log("| runtime | KV | load (s) | decode tok/s |");
console.log("| --- | --- | ---: | ---: |");
for (const runtime of ["deno", "chromium"] as const) {
  for (const s of settings) {
    const sel = rows.filter((r) => r.runtime === runtime && r.kv === s.kv);
    console.log(
      `| ${runtime} | ${s.kv} | ${(median(sel.map((r) => r.load_ms)) / 1000).toFixed(2)} | ${
        median(sel.map((r) => r.decode_tok_s)).toFixed(1)
      } |`,
    );
  }
}
const out = fileURLToPath(new URL("./results.json", import.meta.url));
await Deno.writeTextFile(
  out,
  JSON.stringify({ prompt: PROMPT, max_tokens: maxTokens, chromium_adapter: adapter, rows }, null, 2) + "\n",
);
console.log(`wrote ${out}`);
