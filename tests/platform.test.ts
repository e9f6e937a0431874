/**
 * The library runs outside Deno: mod.ts's module graph uses no `Deno.*` and imports no `node:*`, and model
 * files come from byte sources — an HTTP server (with and without Range support), memory and browser-style
 * File objects load the same model as a local directory and generate the same ids; a missing config.json is
 * named by every source.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Engine } from "../src/engine/engine.ts";
import { dirSource } from "../src/io/deno_fs.ts";
import type { LoadProgress } from "../src/io/progress.ts";
import {
  filesSource,
  memorySource,
  type ModelSource,
  resolveModelSource,
  setLocalSourceFactory,
  urlSource,
} from "../src/io/source.ts";
import { gpuContext } from "./helpers.ts";

const ROOT = new URL("../", import.meta.url);
const REASONER = fileURLToPath(new URL("models/lethe-reasoner-tiny", ROOT));
const PROMPT = "<｜begin▁of▁sentence｜><｜User｜>add the numbers 85 23 67 41.<｜Assistant｜><think>\n";
const FILES = [
  "config.json",
  "model.safetensors",
  "tokenizer.json",
  "tokenizer_config.json",
  "kv_defaults.json",
];

// ---------------------------------------------------------------------------------------------------------
// (a) The module graph

/**
 * TypeScript with its comments blanked out (strings, template literals and regex literals kept), so that a
 * comment mentioning `Deno.` or `node:` does not count and one inside a string cannot hide code.
 */
function stripComments(src: string): string {
  let out = "";
  let i = 0;
  /** Brace depth of each open `${…}` of a template literal. */
  const templates: number[] = [];
  let lastSignificant = "";
  const regexMayStart = () =>
    lastSignificant === "" || /[(,=:[!&|?{};+\-*%<>~^]$/.test(lastSignificant) ||
    /\b(?:return|typeof|case|do|else|in|of|new|delete|void|throw|yield|await)$/.test(out.trimEnd());
  const readQuoted = (quote: string): void => {
    out += src[i++];
    while (i < src.length && src[i] !== quote) {
      if (src[i] === "\\") out += src[i++];
      if (src[i] === "\n" && quote !== "`") break;
      out += src[i++];
    }
    out += src[i++] ?? "";
  };
  /** The rest of a template literal from `i` (after its backtick or a closing `}`): to its end or a `${`. */
  const readTemplate = (): void => {
    while (i < src.length) {
      if (src[i] === "\\") {
        out += src[i] + (src[i + 1] ?? "");
        i += 2;
      } else if (src[i] === "`") {
        out += src[i++];
        return;
      } else if (src[i] === "$" && src[i + 1] === "{") {
        out += "${";
        i += 2;
        templates.push(0);
        return;
      } else {
        out += src[i++];
      }
    }
  };
  while (i < src.length) {
    const c = src[i];
    const next = src[i + 1];
    if (c === "/" && next === "/") {
      while (i < src.length && src[i] !== "\n") i++;
      continue;
    }
    if (c === "/" && next === "*") {
      const end = src.indexOf("*/", i + 2);
      const body = src.slice(i, end < 0 ? src.length : end + 2);
      out += body.replace(/[^\n]/g, " ");
      i += body.length;
      continue;
    }
    if (c === "'" || c === '"') {
      readQuoted(c);
      lastSignificant = c;
      continue;
    }
    if (c === "`") {
      out += src[i++];
      readTemplate();
      lastSignificant = "`";
      continue;
    }
    if (c === "/" && regexMayStart()) {
      out += src[i++];
      let inClass = false;
      while (i < src.length && src[i] !== "\n") {
        const r = src[i];
        if (r === "\\") {
          out += r + (src[i + 1] ?? "");
          i += 2;
          continue;
        }
        out += src[i++];
        if (r === "[") inClass = true;
        else if (r === "]") inClass = false;
        else if (r === "/" && !inClass) break;
      }
      lastSignificant = "/";
      continue;
    }
    if (templates.length) {
      if (c === "{") templates[templates.length - 1]++;
      if (c === "}") {
        if (templates[templates.length - 1] === 0) {
          templates.pop();
          out += src[i++];
          readTemplate();
          lastSignificant = "`";
          continue;
        }
        templates[templates.length - 1]--;
      }
    }
    out += src[i++];
    if (!/\s/.test(c)) lastSignificant = c;
  }
  return out;
}

Deno.test("platform: the comment stripper keeps code and strings, drops comments", () => {
  const src = [
    "// Deno.readFile in a line comment",
    '/* import x from "node:fs"; */ const a = 1;',
    'const s = "// not a comment"; const r = /\\/\\//g; const q = /["\']/;',
    "const t = `${a /* c */}` + `x${`y${Deno.pid}`}z`; // tail",
    "Deno.exit(0);",
  ].join("\n");
  const out = stripComments(src);
  assert(!out.includes("readFile") && !out.includes("node:fs") && !out.includes("tail"), out);
  assert(out.includes('"// not a comment"') && out.includes("/\\/\\//g") && out.includes("Deno.pid"), out);
  assert(out.includes("Deno.exit(0);"), out);
});

/** Uses of Deno or node: in stripped code. */
const OFFENCES: [RegExp, string][] = [
  [/\bDeno\s*(?:\?\.|\.|\[)/, "uses Deno."],
  [/\b(?:from|import)\s*\(?\s*["']node:/, "imports node:"],
  [/\brequire\s*\(\s*["']node:/, "requires node:"],
];

interface InfoModule {
  specifier: string;
  kind?: string;
  local?: string;
  mediaType?: string;
  dependencies?: { specifier: string; code?: { specifier?: string } }[];
}

/** Every module of `entry`'s graph, from `deno info --json`. */
async function moduleGraph(entry: string): Promise<InfoModule[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: fileURLToPath(ROOT),
    env: { NO_COLOR: "1" },
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout)).modules as InfoModule[];
}

/** npm packages allowed on the platform-neutral path (each is bundled into the page and runs in Chromium). */
const BROWSER_SAFE_NPM = ["@huggingface/jinja"];

/** What in `entry`'s graph uses Deno or node:, one line per offence ("file:line: what"). */
async function offences(entry: string): Promise<{ files: string[]; problems: string[] }> {
  const modules = await moduleGraph(entry);
  const files: string[] = [];
  const problems: string[] = [];
  const rel = (spec: string) => spec.startsWith(ROOT.href) ? spec.slice(ROOT.href.length) : spec;
  for (const m of modules) {
    for (const d of m.dependencies ?? []) {
      if (d.specifier.startsWith("node:")) problems.push(`${rel(m.specifier)}: imports ${d.specifier}`);
    }
    if (m.specifier.startsWith("node:") || m.kind === "node") {
      problems.push(`${m.specifier} is in the graph`);
      continue;
    }
    // npm packages the browser bundle takes as they are: pure JavaScript, proven in Chromium by browser.test.ts.
    if (BROWSER_SAFE_NPM.some((p) => m.specifier.startsWith(`npm:/${p}@`))) continue;
    if (!m.specifier.startsWith("file:")) {
      problems.push(`${m.specifier}: not a local module`);
      continue;
    }
    const path = fileURLToPath(m.specifier);
    files.push(rel(m.specifier));
    if (!/\.(?:[mc]?[jt]sx?)$/.test(path)) continue; // WGSL text
    const lines = stripComments(await Deno.readTextFile(path)).split("\n");
    lines.forEach((line, n) => {
      for (const [re, what] of OFFENCES) {
        if (re.test(line)) problems.push(`${rel(m.specifier)}:${n + 1}: ${what} (${line.trim()})`);
      }
    });
  }
  return { files, problems };
}

Deno.test("platform: mod.ts's module graph uses no Deno.* and imports no node:*", async () => {
  const { files, problems } = await offences("mod.ts");
  // Not vacuous: the graph reaches the engine, the loaders and the sources.
  for (
    const f of [
      "src/engine/engine.ts",
      "src/model/safetensors.ts",
      "src/io/source.ts",
      "tokenizer/tokenizer.ts",
    ]
  ) {
    assert(files.includes(f), `${f} is not in mod.ts's graph: ${files.join(", ")}`);
  }
  assert.deepEqual(problems, [], `Deno or node: on the platform-neutral path:\n${problems.join("\n")}`);
  // The Deno entry is where Deno lives (and the check sees it there).
  const deno = await offences("deno.ts");
  assert(deno.problems.some((p) => p.startsWith("src/io/deno_fs.ts")), deno.problems.join("\n"));
});

// ---------------------------------------------------------------------------------------------------------
// (b) HTTP

interface Served {
  method: string;
  file: string;
  range: string | null;
  status: number;
  bytes: number;
}

/** Serves `dir` under /m/ on 127.0.0.1, honouring single `bytes=a-b` ranges unless `ignoreRange`. */
function serve(dir: string, ignoreRange: boolean): { url: string; log: Served[]; close(): Promise<void> } {
  const log: Served[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    const file = path.startsWith("/m/") ? decodeURIComponent(path.slice(3)) : "";
    const range = req.headers.get("range");
    const entry: Served = { method: req.method, file, range, status: 404, bytes: 0 };
    log.push(entry);
    let data: Uint8Array;
    try {
      if (!file || file.includes("/")) throw new Deno.errors.NotFound();
      data = await Deno.readFile(`${dir}/${file}`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      return new Response("not found", { status: 404 });
    }
    const size = data.byteLength;
    const m = range && !ignoreRange ? /^bytes=(\d+)-(\d+)$/.exec(range) : null;
    if (m) {
      const a = Number(m[1]), b = Math.min(Number(m[2]), size - 1);
      if (a >= size) {
        entry.status = 416;
        return new Response(null, { status: 416, headers: { "content-range": `bytes */${size}` } });
      }
      const body = data.slice(a, b + 1);
      entry.status = 206;
      entry.bytes = req.method === "HEAD" ? 0 : body.byteLength;
      return new Response(req.method === "HEAD" ? null : body, {
        status: 206,
        headers: { "content-range": `bytes ${a}-${b}/${size}`, "content-length": String(body.byteLength) },
      });
    }
    entry.status = 200;
    entry.bytes = req.method === "HEAD" ? 0 : size;
    return new Response(req.method === "HEAD" ? null : data as Uint8Array<ArrayBuffer>, {
      headers: { "content-length": String(size), ...(ignoreRange ? {} : { "accept-ranges": "bytes" }) },
    });
  });
  const addr = server.addr as Deno.NetAddr;
  return { url: `http://127.0.0.1:${addr.port}/m/`, log, close: () => server.shutdown() };
}

/** Loads a model from `source` on the shared context and generates greedily from PROMPT. */
async function greedyIds(
  source: string | ModelSource,
  progress: boolean | ((p: LoadProgress) => void) = false,
): Promise<{ ids: number[]; dir: string; kvDefaults: unknown }> {
  const engine = await Engine.load(source, { ctx: await gpuContext(), progress, warmup: false });
  try {
    assert(engine.tokenizer !== null, "the tokenizer did not load");
    const r = await engine.generate(PROMPT, { maxTokens: 24 });
    return { ids: r.ids, dir: engine.model.dir, kvDefaults: engine.kvDefaults };
  } finally {
    engine.destroy();
  }
}

let reference: Promise<{ ids: number[]; dir: string; kvDefaults: unknown }> | null = null;
/** The ids the local directory gives (the reference every source must match). */
function local(): Promise<{ ids: number[]; dir: string; kvDefaults: unknown }> {
  return reference ??= greedyIds(REASONER);
}

Deno.test("platform: Engine.load(url) generates the ids Engine.load(path) does, reading the weights by ranges", async () => {
  const want = await local();
  assert.equal(want.dir, REASONER);
  assert.equal(want.ids.length, 24);
  const size = (await Deno.stat(`${REASONER}/model.safetensors`)).size;
  const http = serve(REASONER, false);
  try {
    const got = await greedyIds(http.url.slice(0, -1)); // a base URL without the trailing slash works too
    assert.deepEqual(got.ids, want.ids);
    assert.deepEqual(got.kvDefaults, want.kvDefaults);
    assert.equal(got.dir, http.url.slice(0, -1));
    const body = http.log.filter((r) => r.file === "model.safetensors" && r.method === "GET");
    assert(body.length > 10, `only ${body.length} reads of the checkpoint`);
    const whole = body.filter((r) => r.range === null || r.status !== 206);
    assert.deepEqual(whole, [], "the checkpoint was read whole");
    const served = body.reduce((s, r) => s + r.bytes, 0);
    assert(served < size * 1.05, `${served} bytes served for a ${size}-byte checkpoint`);
  } finally {
    await http.close();
  }
});

Deno.test("platform: a server that ignores Range still serves a small model (one whole read)", async () => {
  const want = await local();
  const http = serve(REASONER, true);
  try {
    const got = await greedyIds(urlSource(new URL(http.url)));
    assert.deepEqual(got.ids, want.ids);
    const body = http.log.filter((r) => r.file === "model.safetensors" && r.method === "GET");
    assert.equal(body.length, 1, `${body.length} downloads of the checkpoint: the whole body is kept`);
    assert.equal(body[0].status, 200);
  } finally {
    await http.close();
  }
});

Deno.test("platform: urlSource names URLs and statuses; a large 200 to a Range request is a clear error", async () => {
  const big = 100 * 1024 * 1024;
  let cancelled = false;
  const fake: typeof fetch = (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    const file = url.slice(url.lastIndexOf("/") + 1);
    if (file === "gone.bin") return Promise.resolve(new Response("no", { status: 404 }));
    if (file === "boom.bin") return Promise.resolve(new Response("no", { status: 500 }));
    assert.equal(file, "big.safetensors");
    if (init?.method === "HEAD") {
      return Promise.resolve(new Response(null, { headers: { "content-length": String(big) } }));
    }
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(new Uint8Array(1024 * 1024));
      },
      cancel() {
        cancelled = true;
      },
    });
    return Promise.resolve(new Response(body, { headers: { "content-length": String(big) } }));
  };
  const src = urlSource("https://models.example/x/", { fetch: fake });
  assert.equal(src.name, "https://models.example/x");
  assert.equal(await src.size("big.safetensors"), big);
  assert.equal(await src.size("gone.bin"), null);
  assert.equal(await src.readFile("gone.bin"), null);
  await assert.rejects(() => src.readFile("boom.bin"), /https:\/\/models\.example\/x\/boom\.bin: .*HTTP 500/);
  await assert.rejects(() => src.readRange("gone.bin", 0, 4), /https:\/\/models\.example\/x\/gone\.bin/);
  await assert.rejects(
    () => src.readRange("big.safetensors", 8, 100),
    /https:\/\/models\.example\/x\/big\.safetensors: the server ignores Range/,
  );
  assert(cancelled, "the whole body was not cancelled");
  assert.throws(() => urlSource("file:///tmp/x"), /not an http\(s\) URL/);
});

// ---------------------------------------------------------------------------------------------------------
// (c) memory and File objects

async function modelBytes(): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const f of FILES) out[f] = await Deno.readFile(`${REASONER}/${f}`);
  return out;
}

Deno.test("platform: memorySource and filesSource load the same model and report progress per tensor", async () => {
  const want = await local();
  const bytes = await modelBytes();

  const events: LoadProgress[] = [];
  const mem = await greedyIds(memorySource(bytes, "mem:reasoner"), (p) => events.push({ ...p }));
  assert.deepEqual(mem.ids, want.ids);
  assert.deepEqual(mem.kvDefaults, want.kvDefaults);
  assert.equal(mem.dir, "mem:reasoner");
  // Every tensor, in order, then done once with everything loaded.
  const last = events[events.length - 1];
  assert.equal(last.done, true);
  assert.equal(events.filter((e) => e.done).length, 1);
  assert.equal(last.loadedBytes, last.totalBytes);
  assert(events.length > 20, `${events.length} progress events`);
  assert.equal(events[0].tensor, "model.embed_tokens.weight");
  for (let i = 1; i < events.length - 1; i++) assert(events[i].loadedBytes > events[i - 1].loadedBytes);
  assert(last.totalBytes <= bytes["model.safetensors"].byteLength);

  // Files as a directory picker gives them: matched by base name; a deeper file of the same name loses.
  const files = FILES.map((f) => {
    const file = new File([bytes[f] as BlobPart], f);
    Object.defineProperty(file, "webkitRelativePath", { value: `lethe-reasoner-tiny/${f}` });
    return file;
  });
  const decoy = new File(["{not json"], "config.json");
  Object.defineProperty(decoy, "webkitRelativePath", { value: "lethe-reasoner-tiny/old/config.json" });
  const picked = await greedyIds(filesSource([decoy, ...files]));
  assert.deepEqual(picked.ids, want.ids);
  assert.equal(picked.dir, "files");
  // Plain File objects (an <input multiple>) work too.
  const plain = filesSource(FILES.map((f) => new File([bytes[f] as BlobPart], f)));
  assert.equal(await plain.size("model.safetensors"), bytes["model.safetensors"].byteLength);
  assert.deepEqual(await plain.readRange("config.json", 1, 5), bytes["config.json"].slice(1, 6));
  await assert.rejects(() => plain.readRange("config.json", 0, 1e6), /files\/config\.json: unexpected end/);
});

// ---------------------------------------------------------------------------------------------------------
// (d) errors

Deno.test("platform: a missing config.json is named through every source", async () => {
  const ctx = await gpuContext();
  const empty = await Deno.makeTempDir({ prefix: "lethe-platform-" });
  const http = serve(empty, false);
  try {
    const cases: [string | ModelSource, string][] = [
      [empty, `${empty}/config.json`],
      [dirSource(empty), `${empty}/config.json`],
      [http.url, `${http.url}config.json`],
      [memorySource({ "model.safetensors": new Uint8Array(8) }), "memory/config.json"],
      [filesSource([new File(["{}"], "tokenizer.json")]), "files/config.json"],
    ];
    for (const [source, file] of cases) {
      await assert.rejects(
        () => Engine.load(source, { ctx, progress: false, warmup: false }),
        (e: unknown) => {
          assert(e instanceof Error);
          assert(e.message.includes(file), `"${e.message}" does not name ${file}`);
          return true;
        },
        String(typeof source === "string" ? source : source.name),
      );
    }
    // A present config.json and a missing checkpoint: the source is named.
    await Deno.copyFile(`${REASONER}/config.json`, `${empty}/config.json`);
    await assert.rejects(
      () => Engine.load(http.url, { ctx, progress: false, warmup: false }),
      /127\.0\.0\.1:\d+\/m: directory holds neither model\.safetensors\.index\.json nor model\.safetensors/,
    );
  } finally {
    await http.close();
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("platform: without the Deno entry a local path says what to do; a URL string needs no entry", () => {
  setLocalSourceFactory(null);
  try {
    assert.throws(() => resolveModelSource("/models/x"), /local model paths need the Deno entry/);
    assert.throws(() => resolveModelSource("models/x"), /in a browser pass a URL or urlSource\/filesSource/);
    assert.equal(resolveModelSource("https://host/models/x/").name, "https://host/models/x");
  } finally {
    setLocalSourceFactory(dirSource);
  }
  assert.equal(resolveModelSource("/models/x").name, "/models/x");
});
