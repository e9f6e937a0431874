/**
 * The static handler of the server (src/server/static.ts): the page's files at /, model files at /model/
 * with Range requests (206, Content-Range, HEAD, 416), no path traversal (only plain files directly in each
 * directory), CORS only when asked for; and the hook-up in startServer over real HTTP.
 */
import "../src/io/deno_fs.ts"; // local model paths
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { Engine } from "../src/engine/engine.ts";
import { startServer } from "../src/server/server.ts";
import { isPlainName, parseRange, staticHandler } from "../src/server/static.ts";
import { DEFAULT_MODEL_DIR } from "../src/util/paths.ts";

const enc = new TextEncoder();
const BYTES = Uint8Array.from({ length: 100 }, (_, i) => i);

/** A model directory, a page directory and a secret beside them. */
async function fixture(): Promise<{ root: string; model: string; web: string }> {
  const root = await Deno.makeTempDir({ prefix: "lethe-static-" });
  const model = `${root}/model`, web = `${root}/web`;
  await Deno.mkdir(`${model}/sub`, { recursive: true });
  await Deno.mkdir(web);
  await Deno.writeFile(`${model}/model.safetensors`, BYTES);
  await Deno.writeTextFile(`${model}/config.json`, '{"a":1}');
  await Deno.writeTextFile(`${model}/.hidden`, "hidden");
  await Deno.writeTextFile(`${model}/sub/inner.json`, "{}");
  await Deno.writeFile(`${model}/empty.bin`, new Uint8Array(0));
  await Deno.writeTextFile(`${root}/secret.txt`, "secret");
  await Deno.writeTextFile(`${web}/index.html`, "<!doctype html><title>t</title>");
  await Deno.writeTextFile(`${web}/lethe.js`, "export {};");
  return { root, model, web };
}

function req(path: string, init: RequestInit = {}): Request {
  return new Request(`http://127.0.0.1${path}`, init);
}

async function body(res: Response | null): Promise<Uint8Array> {
  assert(res, "the handler took the request");
  return new Uint8Array(await res.arrayBuffer());
}

Deno.test("parseRange: forms, clamping, unsatisfiable and ignored headers", () => {
  assertEquals(parseRange(null, 100), null);
  assertEquals(parseRange("bytes=0-9", 100), { start: 0, end: 9 });
  assertEquals(parseRange("bytes=90-", 100), { start: 90, end: 99 });
  assertEquals(parseRange("bytes=-10", 100), { start: 90, end: 99 });
  assertEquals(parseRange("bytes=-1000", 100), { start: 0, end: 99 });
  assertEquals(parseRange("bytes=50-1000", 100), { start: 50, end: 99 });
  assertEquals(parseRange("bytes = 3 - 4", 100), { start: 3, end: 4 });
  for (
    const bad of ["bytes=100-", "bytes=100-200", "bytes=5-2", "bytes=-0", "bytes=abc", "bytes=-", "bytes="]
  ) {
    assertEquals(parseRange(bad, 100), "unsatisfiable", bad);
  }
  assertEquals(parseRange("bytes=0-0", 0), "unsatisfiable");
  // Other units and multiple ranges: the whole file (RFC 9110 lets a server ignore Range).
  assertEquals(parseRange("items=0-5", 100), null);
  assertEquals(parseRange("bytes=0-1,5-6", 100), null);
});

Deno.test("isPlainName: one segment, no dot files, separators or NULs", () => {
  for (const ok of ["config.json", "model-00001-of-00002.safetensors", "a b"]) assert(isPlainName(ok), ok);
  for (const bad of ["", ".", "..", ".hidden", "../x", "a/b", "a\\b", "x\0y"]) assert(!isPlainName(bad), bad);
});

Deno.test("static: model files with Range, HEAD and 416", async () => {
  const { root, model } = await fixture();
  try {
    const h = staticHandler({ modelDir: model });
    let res = await h(req("/model/model.safetensors"));
    assertEquals(res!.status, 200);
    assertEquals(res!.headers.get("accept-ranges"), "bytes");
    assertEquals(res!.headers.get("content-length"), "100");
    assertEquals(res!.headers.get("content-type"), "application/octet-stream");
    assert(res!.headers.get("etag"));
    assertEquals(await body(res), BYTES);

    res = await h(req("/model/model.safetensors", { headers: { range: "bytes=10-19" } }));
    assertEquals(res!.status, 206);
    assertEquals(res!.headers.get("content-range"), "bytes 10-19/100");
    assertEquals(res!.headers.get("content-length"), "10");
    assertEquals(await body(res), BYTES.slice(10, 20));

    res = await h(req("/model/model.safetensors", { headers: { range: "bytes=-5" } }));
    assertEquals(res!.headers.get("content-range"), "bytes 95-99/100");
    assertEquals(await body(res), BYTES.slice(95));

    res = await h(req("/model/model.safetensors", { headers: { range: "bytes=98-500" } }));
    assertEquals(res!.status, 206);
    assertEquals(await body(res), BYTES.slice(98));

    res = await h(req("/model/config.json", { method: "HEAD" }));
    assertEquals(res!.status, 200);
    assertEquals(res!.headers.get("content-length"), "7");
    assertEquals(res!.headers.get("content-type"), "application/json");
    assertEquals((await body(res)).length, 0);

    res = await h(req("/model/model.safetensors", { method: "HEAD", headers: { range: "bytes=0-7" } }));
    assertEquals(res!.status, 206);
    assertEquals(res!.headers.get("content-length"), "8");
    assertEquals((await body(res)).length, 0);

    for (const range of ["bytes=100-", "bytes=7-3", "bytes=x-"]) {
      res = await h(req("/model/model.safetensors", { headers: { range } }));
      assertEquals(res!.status, 416, range);
      assertEquals(res!.headers.get("content-range"), "bytes */100");
      await res!.body?.cancel();
    }
    res = await h(req("/model/empty.bin", { headers: { range: "bytes=0-0" } }));
    assertEquals(res!.status, 416);
    assertEquals(res!.headers.get("content-range"), "bytes */0");
    await res!.body?.cancel();
    res = await h(req("/model/empty.bin"));
    assertEquals(res!.status, 200);
    assertEquals((await body(res)).length, 0);

    res = await h(req("/model/config.json", { method: "POST", body: "x" }));
    assertEquals(res!.status, 405);
    assertEquals(res!.headers.get("allow"), "GET, HEAD, OPTIONS");
    await res!.body?.cancel();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("static: only plain files directly in the directory (no traversal)", async () => {
  const { root, model, web } = await fixture();
  try {
    const h = staticHandler({ modelDir: model, webDir: web });
    for (
      const path of [
        "/model/..%2Fsecret.txt",
        "/model/%2e%2e%2fsecret.txt",
        "/model/..%5Csecret.txt",
        "/model/sub/inner.json",
        "/model/sub%2Finner.json",
        "/model/sub",
        "/model/.hidden",
        "/model/",
        "/model/missing.json",
        "/model/%00",
      ]
    ) {
      const res = await h(req(path));
      assert(res, path);
      assertEquals(res.status, 404, path);
      assert(!new TextDecoder().decode(await body(res)).includes("secret"), path);
    }
    // `..` segments are resolved by URL parsing before routing: /model/../secret.txt is /secret.txt, which is
    // no file of the page: not the handler's (the API answers 404).
    assertEquals(await h(req("/model/../secret.txt")), null);
    assertEquals(await h(req("/model/%2e%2e/secret.txt")), null);
    assertEquals(await h(req("/%2e%2e/secret.txt")), null);
    assertEquals(await h(req("/..%2Fsecret.txt")), null);
    const bad = await h(req("/model/%E0%A4%A"));
    assertEquals(bad!.status, 400);
    await bad!.body?.cancel();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("static: the page at / and its files; other paths are not its own", async () => {
  const { root, model, web } = await fixture();
  try {
    const h = staticHandler({ modelDir: model, webDir: web });
    let res = await h(req("/"));
    assertEquals(res!.status, 200);
    assertEquals(res!.headers.get("content-type"), "text/html; charset=utf-8");
    assertEquals(new TextDecoder().decode(await body(res)), "<!doctype html><title>t</title>");
    res = await h(req("/lethe.js"));
    assertEquals(res!.headers.get("content-type"), "text/javascript; charset=utf-8");
    assertEquals(await body(res), enc.encode("export {};"));
    for (const path of ["/v1/models", "/health", "/missing.js", "/sub/x"]) {
      assertEquals(await h(req(path)), null, path);
    }
    // Without directories, nothing is its own.
    const none = staticHandler({});
    assertEquals(await none(req("/")), null);
    assertEquals(await none(req("/model/config.json")), null);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("static: CORS only with the option, for the origin given", async () => {
  const { root, model } = await fixture();
  try {
    const origin = { headers: { origin: "http://elsewhere.test" } };
    let res = await staticHandler({ modelDir: model })(req("/model/config.json", origin));
    assertEquals(res!.headers.get("access-control-allow-origin"), null);
    await res!.body?.cancel();

    const any = staticHandler({ modelDir: model, cors: "*" });
    res = await any(req("/model/config.json", origin));
    assertEquals(res!.headers.get("access-control-allow-origin"), "*");
    assert(res!.headers.get("access-control-expose-headers")!.includes("Content-Range"));
    await res!.body?.cancel();
    res = await any(req("/model/missing.json", origin));
    assertEquals(res!.status, 404);
    assertEquals(res!.headers.get("access-control-allow-origin"), "*");
    await res!.body?.cancel();
    res = await any(req("/model/model.safetensors", { method: "OPTIONS", ...origin }));
    assertEquals(res!.status, 204);
    assertEquals(res!.headers.get("access-control-allow-headers"), "Range");
    assertEquals(res!.headers.get("access-control-allow-methods"), "GET, HEAD");

    const one = staticHandler({ modelDir: model, cors: "http://elsewhere.test" });
    res = await one(req("/model/config.json", origin));
    assertEquals(res!.headers.get("access-control-allow-origin"), "http://elsewhere.test");
    assertEquals(res!.headers.get("vary"), "Origin");
    await res!.body?.cancel();
    res = await one(req("/model/config.json", { headers: { origin: "http://other.test" } }));
    assertEquals(res!.headers.get("access-control-allow-origin"), null);
    await res!.body?.cancel();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "startServer: page and model files beside the API over HTTP",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { root, web } = await fixture();
  const engine = await Engine.load(DEFAULT_MODEL_DIR, { progress: false, warmup: false });
  const server = startServer(engine, { port: 0, webDir: web, modelDir: DEFAULT_MODEL_DIR });
  try {
    let res = await fetch(`${server.url}/`);
    assertEquals(res.status, 200);
    assert((await res.text()).includes("<title>t</title>"));
    res = await fetch(`${server.url}/model/config.json`, { headers: { range: "bytes=0-0" } });
    assertEquals(res.status, 206);
    assertEquals(await res.text(), "{");
    const size = (await Deno.stat(`${DEFAULT_MODEL_DIR}/config.json`)).size;
    assertEquals(res.headers.get("content-range"), `bytes 0-0/${size}`);
    res = await fetch(`${server.url}/model/../README.md`);
    assertEquals(res.status, 404);
    assertEquals((await res.json()).error.code, "not_found");
    res = await fetch(`${server.url}/health`);
    assertEquals((await res.json()).status, "ok");
  } finally {
    await server.shutdown();
    engine.destroy();
    await Deno.remove(root, { recursive: true });
  }
});
