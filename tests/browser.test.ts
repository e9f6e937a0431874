/**
 * The browser page in a real Chromium (headless, WebGPU on its SwiftShader adapter), driven by puppeteer-core:
 * the bundle built by tools/build_web.ts, served by startServer with the bundled reasoner at /model/, runs
 * generations from its query parameters and must produce the same ids as Engine.generate in Deno (greedy with
 * full KV, greedy with Lethe pruning at a small budget, top-p sampled with a fixed seed); its UI must show the
 * thought, the answer, the charts and a finished progress bar; a model URL without a model must end in an
 * error naming config.json; every other KV policy (StreamingLLM and H2O evicting on the GPU, SnapKV and PyramidKV
 * compacting the prompt, PyramidKV's decode caps) gives Deno's ids too. Keeps a screenshot as an artifact (a temp
 * file, or $LETHE_SCREENSHOT: the README's is bench/browser/screenshot.png). Skipped, saying so, without Chromium.
 */
import "../src/io/deno_fs.ts"; // local model paths
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { Engine } from "../src/engine/engine.ts";
import type { GenerateOptions, GenerationStats } from "../src/engine/generate.ts";
import { startServer } from "../src/server/server.ts";
import { DEFAULT_MODEL_DIR } from "../src/util/paths.ts";
import { buildWeb } from "../tools/build_web.ts";
import { CHROMIUM_PATHS, chromiumLaunchOptions, findChromium } from "../tools/chromium.ts";

const CHROMIUM = findChromium();
if (!CHROMIUM) {
  console.warn(
    `browser.test.ts: SKIPPED — no Chromium at ${CHROMIUM_PATHS.join(" or ")} ` +
      "(install it: apt-get install -y chromium; .ci/run does)",
  );
}

/** Where the screenshot goes: $LETHE_SCREENSHOT, else a temp file (printed), so a test run leaves the tree clean. */
const SCREENSHOT = Deno.env.get("LETHE_SCREENSHOT") ??
  `${Deno.makeTempDirSync({ prefix: "lethe-browser-" })}/page.png`;
const WALK = "walk 60 steps from 28. map: 28>37, 37>41, 41>28.";
const SUM = "add the numbers 12 34 56.";
const MAX_TOKENS = 150;

/** What the page publishes on globalThis.__lethe. */
interface Published {
  ids?: number[];
  promptIds?: number[];
  text?: string;
  stats?: GenerationStats;
  loadMs?: number;
  cache?: { hits: number; misses: number };
  gpuErrors: string[];
  error?: string;
}

/** What the page shows after a run. */
interface Shown {
  thought: string;
  answer: string | null;
  charts: number;
  progress: string | undefined;
  statsRows: number;
}

/** Reads {@link Shown} in the page (a string: this file is type-checked without the DOM library). */
const SHOWN = `(() => {
  const last = [...document.querySelectorAll(".msg.assistant")].pop();
  return {
    thought: last?.querySelector(".thinking .thought")?.textContent ?? "",
    answer: last?.querySelector(".answer")?.textContent ?? null,
    charts: document.querySelectorAll(".chart-box svg.chart path.line").length,
    progress: document.getElementById("progress").dataset.state,
    statsRows: document.querySelectorAll("#stats tr").length,
  };
})()`;

/** The prompt ids `deno task generate --chat --prompt P` runs. */
function chatIds(engine: Engine, prompt: string): number[] {
  const tok = engine.tokenizer!;
  const template = tok.chatTemplateSource ? undefined : tok.chatTemplate ?? "deepseek-r1";
  return tok.encodeChat([{ role: "user", content: prompt }], template, {
    defaultSystemPrompt: tok.defaultSystemPrompt,
    specialTokens: "plain",
  });
}

Deno.test({
  name: "browser: the page in headless Chromium generates what Deno generates, and shows it",
  ignore: !CHROMIUM,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  // deno-lint-ignore no-import-prefix
  const { default: puppeteer } = await import("npm:puppeteer-core@25.19.0");
  const webDir = await Deno.makeTempDir({ prefix: "lethe-web-" });
  const profile = await Deno.makeTempDir({ prefix: "lethe-chromium-" });
  await buildWeb({ outDir: webDir });
  const engine = await Engine.load(DEFAULT_MODEL_DIR, { progress: false });
  const server = startServer(engine, {
    hostname: "127.0.0.1",
    port: 0,
    webDir,
    modelDir: DEFAULT_MODEL_DIR,
  });
  const browser = await puppeteer.launch(chromiumLaunchOptions(CHROMIUM!, profile));
  /** Console lines worth showing: WebGPU/WGSL diagnostics and errors other than expected 404 probes. */
  const diagnostics: string[] = [];

  /** Opens the page with `query`, waits for its run to end, returns what it published and shows. */
  const runPage = async (query: Record<string, string | number>, screenshot?: string, before?: string) => {
    const page = await browser.newPage();
    if (before) await page.evaluateOnNewDocument(before);
    await page.setViewport({ width: 1400, height: 1000 });
    page.on("console", (m) => {
      const text = m.text();
      if (/Failed to load resource.*404/.test(text)) return; // model.safetensors.index.json probes
      if (m.type() === "error" || /WGSL|WebGPU|shader/i.test(text)) diagnostics.push(`${m.type()}: ${text}`);
    });
    page.on("pageerror", (e) => diagnostics.push(`pageerror: ${(e as Error).message ?? e}`));
    const q = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]));
    await page.goto(`${server.url}/?${q}`);
    await page.waitForFunction(`document.title === "done" || document.title === "error"`, {
      timeout: 90_000,
    });
    const title = await page.title();
    const published = await page.evaluate("globalThis.__lethe") as Published;
    const shown = await page.evaluate(SHOWN) as Shown;
    if (screenshot) {
      await page.evaluate(`for (const d of document.querySelectorAll("details.thinking")) d.open = true`);
      await Deno.mkdir(screenshot.slice(0, screenshot.lastIndexOf("/")), { recursive: true });
      await page.screenshot({ path: screenshot as `${string}.png` });
    }
    await page.close();
    return { title, published, shown };
  };

  /** Checks one scripted run against Engine.generate on the same chat-rendered prompt. */
  const compare = async (
    prompt: string,
    query: Record<string, string | number>,
    options: GenerateOptions,
    screenshot?: string,
  ) => {
    const { title, published, shown } = await runPage(
      { chat: 1, prompt, max_tokens: MAX_TOKENS, ...query },
      screenshot,
    );
    assertEquals(published.gpuErrors, [], `WebGPU errors in the page: ${published.gpuErrors.join("\n")}`);
    assertEquals(title, "done", `page error: ${published.error}`);
    const promptIds = chatIds(engine, prompt);
    const ref = await engine.generate(promptIds, { maxTokens: MAX_TOKENS, ...options });
    assertEquals(published.promptIds, promptIds, "chat=1 renders the prompt as the CLI's --chat does");
    assertEquals(published.ids, ref.ids);
    assertEquals(published.text, ref.text);
    const s = published.stats!;
    assertEquals(s.kv_policy, ref.stats.kv_policy);
    assertEquals(s.decode_tokens, ref.stats.decode_tokens);
    assertEquals(s.prune_rounds, ref.stats.prune_rounds);
    assertEquals(s.kv_tokens_per_layer, ref.stats.kv_tokens_per_layer);
    assertEquals(s.kv_bytes_live_peak, ref.stats.kv_bytes_live_peak);
    // The UI: the thought in its panel, the answer below it, the charts drawn, the load finished.
    const cut = ref.text.indexOf("</think>");
    const thought = (cut >= 0 ? ref.text.slice(0, cut) : ref.text).replace(/^\n+/, "");
    assertEquals(shown.thought, thought);
    assert(shown.answer !== null, "no answer element");
    if (cut >= 0) assertEquals(shown.answer, ref.text.slice(cut + "</think>".length).replace(/^\n+/, ""));
    assertEquals(shown.charts, 4, "KV chart (3 lines) and tok/s chart (1 line)");
    assertEquals(shown.progress, "done");
    assert(shown.statsRows >= 9, "statistics table");
    console.log(
      `  ${s.kv_policy}: ${published.ids!.length} ids equal; Chromium load ${
        (published.loadMs! / 1000).toFixed(2)
      } s, ` +
        `decode ${s.decode_tok_s.toFixed(1)} tok/s (Deno ${ref.stats.decode_tok_s.toFixed(1)}), ` +
        `${s.prune_rounds} rounds, KV live peak ${s.kv_bytes_live_peak} B`,
    );
    return published;
  };

  try {
    await t.step("full KV, greedy: the walk", async () => {
      await compare(WALK, { kv: "full", temperature: 0 }, { kv: { policy: "full" } });
    });
    await t.step("lethe at 32 tokens/layer, greedy: rounds prune, ids still equal", async () => {
      const p = await compare(
        WALK,
        { kv: "lethe", kv_budget: 32, temperature: 0 },
        { kv: { policy: "lethe", budget: 32 } },
        SCREENSHOT,
      );
      assert(p.stats!.prune_rounds > 0, "pruning rounds ran");
      assert(p.stats!.kv_bytes_live_peak < p.stats!.kv_bytes_full_equivalent, "less KV than full would hold");
      // The first page fetched the weights; this reload read every range from the Cache API.
      assert(p.cache!.hits > 0 && p.cache!.misses === 0, `cache ${JSON.stringify(p.cache)}`);
    });
    await t.step(
      "every other policy at 16 tokens/layer (eviction, prompt compression, caps): ids equal",
      async () => {
        for (const policy of ["streaming", "h2o", "snapkv", "pyramidkv"] as const) {
          const p = await compare(
            WALK,
            { kv: policy, kv_budget: 16, temperature: 0 },
            { kv: { policy, budget: 16 } },
          );
          // Each pruned below what full would hold: its eviction or compaction ran in the browser.
          assert(p.stats!.kv_bytes_live_peak < p.stats!.kv_bytes_full_equivalent, `${policy} pruned nothing`);
        }
      },
    );
    await t.step("top-p sampled (temperature 0.8, seed 7): the sum and its answer", async () => {
      const p = await compare(
        SUM,
        { kv: "full", temperature: 0.8, top_p: 0.9, seed: 7 },
        { kv: { policy: "full" }, sampling: { temperature: 0.8, topP: 0.9, seed: 7 } },
      );
      assert(p.text!.includes("</think>"), "the sampled sum finished its thought");
    });
    await t.step("a model URL with no model: title error, the message names config.json", async () => {
      const { title, published } = await runPage({ prompt: "x", model: "./nowhere/" });
      assertEquals(title, "error");
      assert(/config\.json/.test(published.error ?? ""), `error: ${published.error}`);
    });
    await t.step("no WebGPU, no adapter: title error with a message saying what to use", async () => {
      let r = await runPage(
        { prompt: "x" },
        undefined,
        `Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined })`,
      );
      assertEquals(r.title, "error");
      assert(/has no WebGPU.*Chrome/.test(r.published.error ?? ""), `error: ${r.published.error}`);
      r = await runPage({ prompt: "x" }, undefined, `GPU.prototype.requestAdapter = async () => null`);
      assertEquals(r.title, "error");
      assert(/gave no adapter/.test(r.published.error ?? ""), `error: ${r.published.error}`);
    });
    console.log(`  screenshot: ${SCREENSHOT}`);
  } finally {
    if (diagnostics.length) {
      // Each kernel compiles once per page load: show each message once, with how often it came.
      const counts = new Map<string, number>();
      for (const d of diagnostics) counts.set(d, (counts.get(d) ?? 0) + 1);
      const lines = [...counts].map(([d, n]) => `${n > 1 ? `(${n}×) ` : ""}${d.replace(/\n/g, "\n      ")}`);
      console.log(`  browser console:\n    ${lines.join("\n    ")}`);
    }
    await browser.close();
    await server.shutdown();
    engine.destroy();
    await Deno.remove(webDir, { recursive: true });
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
});
