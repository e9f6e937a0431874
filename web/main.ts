/// <reference lib="dom" />
/**
 * The page: choose and load a model, chat with it (the thought streams into a collapsible panel), set the KV
 * policy and sampling, and watch the cache live. With a `prompt` query parameter the page runs one generation
 * on load and publishes it for scripts (see params.ts): `document.title` becomes "done" and
 * `globalThis.__lethe` holds `{ ids, text, stats, … }`, or "error" and `{ error }`.
 */
import {
  type ChatMessage,
  DEFAULT_SAMPLING,
  type Engine,
  type GenerationResult,
  type GenerationStats,
  KV_SETTINGS,
  type KvSettings,
  POLICY_NAMES,
  type PolicyName,
  type SamplingOptions,
} from "../mod.ts";
import { cacheAvailable, cacheUsage, clearModelCache } from "./cache.ts";
import { type AssistantMessage, ChatView } from "./chat.ts";
import { formatBytes } from "./charts.ts";
import { checkWebGpu, type GpuSummary } from "./gpu_check.ts";
import { LivePanel } from "./live.ts";
import { type LoadedModel, loadModel, type ModelChoice } from "./loader.ts";
import { readParams, type RunParams } from "./params.ts";
import { ProgressView } from "./progress.ts";

/** What a scripted run publishes on `globalThis.__lethe`. */
interface Published {
  ids?: number[];
  promptIds?: number[];
  text?: string;
  finishReason?: GenerationResult["finishReason"];
  stats?: GenerationStats;
  loadMs?: number;
  weightsMs?: number;
  /** Range reads of this load answered from the Cache API, and fetched. */
  cache?: { hits: number; misses: number };
  gpu?: GpuSummary;
  gpuErrors: string[];
  error?: string;
}

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the page has no #${id}`);
  return e as T;
};

const ui = {
  notice: $("notice"),
  gpuInfo: $("gpu-info"),
  modelUrl: $<HTMLInputElement>("model-url"),
  modelFiles: $<HTMLInputElement>("model-files"),
  useCache: $<HTMLInputElement>("use-cache"),
  load: $<HTMLButtonElement>("load"),
  clearCache: $<HTMLButtonElement>("clear-cache"),
  cacheInfo: $("cache-info"),
  modelInfo: $("model-info"),
  policy: $<HTMLSelectElement>("kv-policy"),
  budget: $<HTMLInputElement>("kv-budget"),
  maxTokens: $<HTMLInputElement>("max-tokens"),
  temperature: $<HTMLInputElement>("temperature"),
  topP: $<HTMLInputElement>("top-p"),
  seed: $<HTMLInputElement>("seed"),
  composer: $<HTMLFormElement>("composer"),
  input: $<HTMLTextAreaElement>("input"),
  send: $<HTMLButtonElement>("send"),
  stop: $<HTMLButtonElement>("stop"),
  newChat: $<HTMLButtonElement>("new-chat"),
};
const progress = new ProgressView($("progress"));
const chat = new ChatView($("messages"));
const live = new LivePanel($("chart-kv"), $("chart-layers"), $("chart-speed"), $<HTMLTableElement>("stats"));
const published: Published = { gpuErrors: [] };
const counters = { hits: 0, misses: 0, hitBytes: 0, missBytes: 0 };

let gpu: GpuSummary | null = null;
let model: LoadedModel | null = null;
let history: ChatMessage[] = [];
let busy = false;
let stopRequested = false;

/** Thrown from the token callback to end a generation early (the Stop button). */
class Stopped extends Error {}

function notice(text: string, kind: "error" | "warning" | "info" = "error"): void {
  ui.notice.hidden = false;
  ui.notice.className = `notice ${kind}`;
  ui.notice.textContent = text;
}

// The engine reports WebGPU validation errors (a shader the browser rejects, a bad binding) on the console:
// show them, and publish them for scripts.
const consoleError = console.error.bind(console);
console.error = (...args: unknown[]) => {
  consoleError(...args);
  const text = args.map(String).join(" ");
  if (/^(WebGPU error|WGSL )/.test(text)) {
    published.gpuErrors.push(text);
    notice(`GPU error: ${text}`);
  }
};

/** The budget applies to every policy but `full`. */
function syncBudget(): void {
  ui.budget.disabled = ui.policy.value === "full";
}

function setBusy(b: boolean): void {
  busy = b;
  ui.send.disabled = b || !model;
  ui.stop.disabled = !b;
  ui.load.disabled = b;
  ui.newChat.disabled = b;
}

async function showCache(): Promise<void> {
  if (!cacheAvailable()) {
    ui.cacheInfo.textContent = "no Cache API here (not a secure context): files are fetched each time";
    ui.useCache.checked = false;
    ui.useCache.disabled = true;
    return;
  }
  const u = await cacheUsage();
  const used = u.bytes !== null ? `, site storage ${formatBytes(u.bytes)}` : "";
  const run = counters.hits + counters.misses > 0
    ? ` · this load: ${counters.hits} hits (${formatBytes(counters.hitBytes)}), ${counters.misses} fetched ` +
      `(${formatBytes(counters.missBytes)})`
    : "";
  ui.cacheInfo.textContent = `cache: ${u.entries} ranges${used}${run}`;
}

function choice(): ModelChoice {
  const kind = (document.querySelector<HTMLInputElement>("input[name=source]:checked")?.value) ?? "served";
  if (kind === "files") return { kind: "files", files: [...(ui.modelFiles.files ?? [])] };
  if (kind === "url") return { kind: "url", url: ui.modelUrl.value.trim() };
  return { kind: "url", url: "./model/" };
}

async function load(c: ModelChoice): Promise<LoadedModel> {
  if (!gpu) throw new Error("no WebGPU adapter");
  model?.engine.destroy();
  model = null;
  setBusy(true);
  Object.assign(counters, { hits: 0, misses: 0, hitBytes: 0, missBytes: 0 });
  ui.modelInfo.textContent = "";
  try {
    const m = await loadModel(c, {
      gpu,
      cache: ui.useCache.checked,
      counters,
      onPhase: (t) => progress.phase(t),
      onProgress: (p) => progress.update(p),
    });
    model = m;
    const cfg = m.engine.config;
    progress.done(
      `loaded ${formatBytes(m.engine.weightBytes)} of weights in ${(m.loadMs / 1000).toFixed(2)} s`,
    );
    ui.modelInfo.textContent =
      `${m.label} · ${cfg.modelType}, ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ` +
      `${cfg.numHeads}/${cfg.numKvHeads} heads, vocab ${cfg.vocabSize}, context ${cfg.maxPositionEmbeddings}` +
      (m.engine.tokenizer ? "" : " · no tokenizer: prompts are token ids");
    if (m.warning) notice(m.warning, "warning");
    ui.budget.value = String(m.engine.kvDefaults.budget);
    return m;
  } catch (e) {
    progress.failed(`load failed: ${(e as Error).message}`);
    throw e;
  } finally {
    setBusy(false);
    void showCache();
  }
}

/** The prompt as ids: `messages` in the model's chat template, encoded without adding special tokens. */
function renderChat(engine: Engine, messages: ChatMessage[]): { ids: number[]; startsInThought: boolean } {
  const tok = engine.tokenizer;
  if (!tok) throw new Error("this model has no tokenizer.json: chat needs one");
  // As `deno task generate --chat`: the model's own chat_template when it has one, message text encoded as
  // plain text (typed special-token text cannot forge a turn).
  const template = tok.chatTemplateSource ? undefined : tok.chatTemplate ?? "deepseek-r1";
  const options = { defaultSystemPrompt: tok.defaultSystemPrompt };
  const text = tok.applyChatTemplate(messages, template, options);
  const ids = tok.encodeChat(messages, template, { ...options, specialTokens: "plain" });
  return { ids, startsInThought: /<think>\s*$/.test(text) };
}

interface RunSettings {
  maxTokens: number;
  sampling: Partial<SamplingOptions>;
  kv: KvSettings;
}

/** Reads the controls; a bad value throws naming its field. */
function controls(): RunSettings {
  const num = (input: HTMLInputElement, name: string, integer: boolean, min: number): number => {
    const x = Number(input.value);
    if (input.value.trim() === "" || !Number.isFinite(x) || (integer && !Number.isInteger(x)) || x < min) {
      throw new Error(`${name} must be ${integer ? "an integer" : "a number"} ≥ ${min}`);
    }
    return x;
  };
  const policy = ui.policy.value as PolicyName;
  return {
    maxTokens: num(ui.maxTokens, "max tokens", true, 1),
    sampling: {
      temperature: num(ui.temperature, "temperature", false, 0),
      topP: num(ui.topP, "top-p", false, 0),
      seed: num(ui.seed, "seed", true, 0),
    },
    kv: policy === "full" ? { policy } : { policy, budget: num(ui.budget, "KV budget", true, 1) },
  };
}

/** One generation into a new assistant message; the charts follow it. */
async function run(
  engine: Engine,
  prompt: string | number[],
  startsInThought: boolean,
  settings: RunSettings,
): Promise<{ result: GenerationResult | null; message: AssistantMessage }> {
  const message = chat.assistant(startsInThought);
  const promptTokens = typeof prompt === "string" ? engine.encode(prompt).length : prompt.length;
  const policy = settings.kv.policy ?? "full";
  live.start(
    engine.config,
    promptTokens,
    policy === "full" ? null : settings.kv.budget ?? engine.kvDefaults.budget,
  );
  stopRequested = false;
  setBusy(true);
  try {
    const result = await engine.generate(prompt, {
      maxTokens: settings.maxTokens,
      sampling: settings.sampling,
      kv: settings.kv,
      onText: (t) => {
        message.push(t);
        chat.follow();
      },
      onToken: () => {
        live.token();
        if (stopRequested) throw new Stopped("stopped");
      },
      onPrune: (r) => live.prune(r),
      onStep: (step, kv) => live.step(step, kv),
    });
    const s = result.stats;
    message.finish(
      `${s.decode_tokens} tokens · ${s.decode_tok_s.toFixed(1)} tok/s · KV ${s.kv_policy} ${s.kv_dtype} ` +
        `${formatBytes(s.kv_bytes_live_peak)} live peak (full f16 ${
          formatBytes(s.kv_bytes_full_equivalent)
        }) · ` +
        `${result.finishReason}`,
    );
    live.finish(s, model?.loadMs ?? null);
    return { result, message };
  } catch (e) {
    if (e instanceof Stopped) {
      message.finish("stopped");
      return { result: null, message };
    }
    message.fail(`generation failed: ${(e as Error).message}`);
    throw e;
  } finally {
    setBusy(false);
  }
}

async function send(): Promise<void> {
  if (busy || !model) return;
  const text = ui.input.value.trim();
  if (!text) return;
  let settings: RunSettings;
  try {
    settings = controls();
  } catch (e) {
    notice((e as Error).message);
    return;
  }
  ui.notice.hidden = true;
  ui.input.value = "";
  chat.user(text);
  history.push({ role: "user", content: text });
  const engine = model.engine;
  try {
    const { ids, startsInThought } = renderChat(engine, history);
    const { message } = await run(engine, ids, startsInThought, settings);
    history.push({ role: "assistant", content: message.raw });
  } catch (e) {
    history.pop();
    notice((e as Error).message);
  }
}

/** The scripted run of the query parameters: load, generate once, publish. */
async function scripted(p: RunParams): Promise<void> {
  const m = await load({ kind: "url", url: p.model ?? "./model/" });
  const engine = m.engine;
  let prompt: string | number[] = p.prompt;
  let startsInThought = false;
  if (p.chat) ({ ids: prompt, startsInThought } = renderChat(engine, [{ role: "user", content: p.prompt }]));
  ui.policy.value = p.kv.policy ?? "full";
  if (p.kv.budget !== undefined) ui.budget.value = String(p.kv.budget);
  syncBudget();
  ui.maxTokens.value = String(p.maxTokens);
  ui.temperature.value = String(p.sampling.temperature ?? DEFAULT_SAMPLING.temperature);
  ui.topP.value = String(p.sampling.topP ?? DEFAULT_SAMPLING.topP);
  ui.seed.value = String(p.sampling.seed ?? DEFAULT_SAMPLING.seed);
  chat.user(p.prompt);
  const { result } = await run(engine, prompt, startsInThought, {
    maxTokens: p.maxTokens,
    sampling: p.sampling,
    kv: p.kv,
  });
  if (!result) throw new Error("stopped");
  history = [{ role: "user", content: p.prompt }, { role: "assistant", content: result.text }];
  Object.assign(published, {
    ids: result.ids,
    promptIds: result.promptIds,
    text: result.text,
    finishReason: result.finishReason,
    stats: result.stats,
    loadMs: m.loadMs,
    weightsMs: m.weightsMs,
    cache: { hits: counters.hits, misses: counters.misses },
  });
}

function publish(ok: boolean, error?: unknown): void {
  if (!ok) published.error = error instanceof Error ? error.message : String(error);
  (globalThis as { __lethe?: Published }).__lethe = published;
  document.title = ok ? "done" : "error";
}

async function main(): Promise<void> {
  for (const name of POLICY_NAMES) ui.policy.append(new Option(name, name));
  const budget = KV_SETTINGS.find((s) => s.name === "budget")!;
  ui.budget.value = String(budget.default);
  ui.budget.min = String(budget.min!.value);
  ui.budget.title = budget.doc;
  ui.policy.title = KV_SETTINGS.find((s) => s.name === "policy")!.doc;
  ui.policy.addEventListener("change", syncBudget);
  syncBudget();
  setBusy(false);
  void showCache();

  ui.load.addEventListener("click", () => {
    ui.notice.hidden = true;
    load(choice()).then(() => ui.input.focus()).catch((e) => notice((e as Error).message));
  });
  ui.modelFiles.addEventListener("change", () => {
    document.querySelector<HTMLInputElement>("input[name=source][value=files]")!.checked = true;
  });
  ui.modelUrl.addEventListener("input", () => {
    document.querySelector<HTMLInputElement>("input[name=source][value=url]")!.checked = true;
  });
  ui.clearCache.addEventListener("click", async () => {
    await clearModelCache();
    await showCache();
  });
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    void send();
  });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      void send();
    }
  });
  ui.stop.addEventListener("click", () => stopRequested = true);
  ui.newChat.addEventListener("click", () => {
    history = [];
    chat.clear();
  });

  let params: RunParams | null = null;
  let paramError = "";
  try {
    params = readParams(location.search);
    if (params?.model) ui.modelUrl.value = params.model;
  } catch (e) {
    paramError = (e as Error).message;
    notice(paramError);
    publish(false, e);
  }
  try {
    gpu = await checkWebGpu();
    published.gpu = gpu;
    ui.gpuInfo.textContent = `${gpu.description}${gpu.fallback ? " (software)" : ""} · bindings up to ` +
      `${formatBytes(gpu.maxStorageBufferBindingSize)}${gpu.f16 ? " · f16" : ""}`;
  } catch (e) {
    notice([(e as Error).message, paramError].filter(Boolean).join("\n"));
    ui.load.disabled = true;
    if (params) publish(false, e);
    return;
  }
  if (!params) return;
  try {
    await scripted(params);
    publish(published.gpuErrors.length === 0, published.gpuErrors[0]);
  } catch (e) {
    notice((e as Error).message);
    publish(false, e);
  }
}

void main();
