/**
 * Where model files come from: a byte source. The loaders (config, safetensors, tokenizer, KV defaults) read
 * only through this interface, so the same code loads a model from a local directory (the Deno entry's
 * `dirSource`), an HTTP(S) base URL, a browser's File list or bytes in memory. Platform-neutral: nothing here
 * uses `Deno.*` or `node:*`.
 *
 * @module
 */

/** A set of model files, read whole or by byte range. */
export interface ModelSource {
  /** For messages: a path, a URL, "files", "memory". */
  readonly name: string;
  /** Whole file, or null when the source has no such file. */
  readFile(file: string): Promise<Uint8Array | null>;
  /** Byte length of a file, or null when absent. */
  size(file: string): Promise<number | null>;
  /** Bytes [offset, offset + length) of a file; throws naming the source and file when absent or short. */
  readRange(file: string, offset: number, length: number): Promise<Uint8Array>;
}

/** How a message names `file` of `source`: the file's URL for a URL source, else `name/file`. */
export function sourcePath(source: ModelSource, file: string): string {
  const name = source.name;
  return name.endsWith("/") ? name + file : `${name}/${file}`;
}

/** Reads a whole text file, or null when absent (UTF-8). */
export async function readSourceText(source: ModelSource, file: string): Promise<string | null> {
  const bytes = await source.readFile(file);
  return bytes === null ? null : new TextDecoder().decode(bytes);
}

function checkRange(where: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`${where}: invalid byte range (offset ${offset}, length ${length})`);
  }
}

function shortRead(where: string, offset: number, length: number, size: number): Error {
  return new Error(
    `${where}: unexpected end of file: bytes [${offset}, ${offset + length}) requested, the file has ${size}`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// HTTP(S)

/** A server that ignores `Range` may still be used for files up to this size (the whole body is sliced). */
const WHOLE_BODY_LIMIT = 64 * 1024 * 1024;

/** Options of {@link urlSource}. */
export interface UrlSourceOptions {
  /** The fetch to use (default: the global one); a page may pass one that caches. */
  fetch?: typeof fetch;
}

/** Reads a response body, giving up (and cancelling it) past `limit` bytes. Null when over the limit. */
async function readBodyUpTo(res: Response, limit: number): Promise<Uint8Array | null> {
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Drops a response's body unread (so that the connection can be reused). */
async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // Nothing to do: the body is not needed.
  }
}

/** The total length in a `Content-Range: bytes a-b/N` header, or null. */
function contentRangeTotal(header: string | null): number | null {
  const m = header === null ? null : /\/\s*(\d+)\s*$/.exec(header);
  return m ? Number(m[1]) : null;
}

/**
 * Model files under an HTTP(S) base URL (`https://host/models/x/` → `https://host/models/x/config.json`).
 * Ranges are read with `Range: bytes=a-b` requests (206); a server that answers 200 with the whole body is
 * still accepted for files under 64 MiB (the body is kept and sliced), else the read fails saying that the
 * server ignores Range. Sizes come from a HEAD's Content-Length (or a 1-byte range's Content-Range). A 404 is
 * an absent file; other HTTP errors name the URL and status.
 */
export function urlSource(base: string | URL, options: UrlSourceOptions = {}): ModelSource {
  const href = typeof base === "string" ? base : base.href;
  const root = new URL(href.endsWith("/") ? href : `${href}/`);
  if (root.protocol !== "http:" && root.protocol !== "https:") {
    throw new TypeError(`urlSource: ${href} is not an http(s) URL`);
  }
  const doFetch = options.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => fetch(input, init));
  const name = root.href.slice(0, -1);
  const url = (file: string): string => new URL(file, root).href;
  /** Whole bodies of files whose server ignored Range (small files only). */
  const whole = new Map<string, Uint8Array>();
  const sizes = new Map<string, number | null>();

  const failure = (u: string, res: Response, what: string): Error =>
    new Error(`${u}: ${what} failed: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`);

  const request = async (u: string, init: RequestInit): Promise<Response> => {
    try {
      return await doFetch(u, init);
    } catch (e) {
      throw new Error(`${u}: request failed (${(e as Error).message})`, { cause: e });
    }
  };

  /** Keeps a 200's whole body when small enough; null when it is too large. */
  const keepWhole = async (file: string, u: string, res: Response): Promise<Uint8Array> => {
    const declared = Number(res.headers.get("content-length") ?? NaN);
    let body: Uint8Array | null = null;
    if (declared > WHOLE_BODY_LIMIT) await discard(res);
    else body = await readBodyUpTo(res, WHOLE_BODY_LIMIT);
    if (body === null) {
      throw new Error(
        `${u}: the server ignores Range requests (it answered 200 with the whole file) and the file is over ` +
          `${WHOLE_BODY_LIMIT / 1024 / 1024} MiB: serve the model from a server that supports Range (206)`,
      );
    }
    whole.set(file, body);
    sizes.set(file, body.byteLength);
    return body;
  };

  const source: ModelSource = {
    name,
    async readFile(file: string): Promise<Uint8Array | null> {
      const cached = whole.get(file);
      if (cached) return cached.slice();
      const u = url(file);
      const res = await request(u, {});
      if (res.status === 404) {
        await discard(res);
        return null;
      }
      if (!res.ok) {
        await discard(res);
        throw failure(u, res, "GET");
      }
      return new Uint8Array(await res.arrayBuffer());
    },
    async size(file: string): Promise<number | null> {
      if (sizes.has(file)) return sizes.get(file)!;
      const u = url(file);
      const head = await request(u, { method: "HEAD" });
      await discard(head);
      if (head.status === 404) return null;
      const length = head.headers.get("content-length");
      // A compressed response's Content-Length is not the file's; ask for one byte instead.
      if (head.ok && length !== null && !head.headers.get("content-encoding")) {
        const n = Number(length);
        if (Number.isSafeInteger(n) && n >= 0) {
          sizes.set(file, n);
          return n;
        }
      }
      const res = await request(u, { headers: { Range: "bytes=0-0" } });
      if (res.status === 404) {
        await discard(res);
        return null;
      }
      if (res.status === 416) {
        // Not satisfiable even for byte 0: an empty file (the total is in Content-Range when given).
        await discard(res);
        const n = contentRangeTotal(res.headers.get("content-range")) ?? 0;
        sizes.set(file, n);
        return n;
      }
      if (res.status === 206) {
        await discard(res);
        const n = contentRangeTotal(res.headers.get("content-range"));
        if (n === null) throw new Error(`${u}: a range response without the file's size (Content-Range)`);
        sizes.set(file, n);
        return n;
      }
      if (res.ok) return (await keepWhole(file, u, res)).byteLength;
      await discard(res);
      throw failure(u, res, "HEAD");
    },
    async readRange(file: string, offset: number, length: number): Promise<Uint8Array> {
      const u = url(file);
      checkRange(u, offset, length);
      let body = whole.get(file);
      if (!body) {
        if (length === 0) {
          const size = await source.size(file);
          if (size === null) throw new Error(`${u}: no such file`);
          if (offset > size) throw shortRead(u, offset, length, size);
          return new Uint8Array(0);
        }
        const res = await request(u, { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
        if (res.status === 404) {
          await discard(res);
          throw new Error(`${u}: no such file (HTTP 404)`);
        }
        if (res.status === 416) {
          await discard(res);
          const size = contentRangeTotal(res.headers.get("content-range"));
          throw shortRead(u, offset, length, size ?? NaN);
        }
        if (res.status === 206) {
          const bytes = new Uint8Array(await res.arrayBuffer());
          const total = contentRangeTotal(res.headers.get("content-range"));
          if (total !== null) sizes.set(file, total);
          if (bytes.byteLength !== length) {
            throw shortRead(u, offset, length, total ?? offset + bytes.byteLength);
          }
          return bytes;
        }
        if (!res.ok) {
          await discard(res);
          throw failure(u, res, "range GET");
        }
        body = await keepWhole(file, u, res);
      }
      if (offset + length > body.byteLength) throw shortRead(u, offset, length, body.byteLength);
      return body.slice(offset, offset + length);
    },
  };
  return source;
}

// ---------------------------------------------------------------------------------------------------------
// Browser files and memory

/** A file's base name: the last segment of its relative path (directory picker) or its name. */
function baseName(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? path : path.slice(i + 1);
}

/**
 * Model files the user picked in a browser (`<input type="file" multiple>` or a directory picker): each
 * file is found by its base name (`webkitRelativePath` or `name`); when a directory holds several files of
 * one name, the one nearest the top wins. Ranges are read with `file.slice(…).arrayBuffer()`.
 */
export function filesSource(files: Iterable<File>): ModelSource {
  const byName = new Map<string, { file: File; depth: number }>();
  for (const f of files) {
    const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
    const key = baseName(rel);
    const depth = rel.split(/[/\\]/).length;
    const have = byName.get(key);
    if (!have || depth < have.depth) byName.set(key, { file: f, depth });
  }
  const source: ModelSource = {
    name: "files",
    readFile(file: string): Promise<Uint8Array | null> {
      const f = byName.get(file)?.file;
      return f ? f.arrayBuffer().then((b) => new Uint8Array(b)) : Promise.resolve(null);
    },
    size(file: string): Promise<number | null> {
      return Promise.resolve(byName.get(file)?.file.size ?? null);
    },
    async readRange(file: string, offset: number, length: number): Promise<Uint8Array> {
      const where = sourcePath(source, file);
      checkRange(where, offset, length);
      const f = byName.get(file)?.file;
      if (!f) throw new Error(`${where}: no such file among the files given`);
      if (offset + length > f.size) throw shortRead(where, offset, length, f.size);
      const bytes = new Uint8Array(await f.slice(offset, offset + length).arrayBuffer());
      if (bytes.byteLength !== length) throw shortRead(where, offset, length, offset + bytes.byteLength);
      return bytes;
    },
  };
  return source;
}

/**
 * Model files held in memory, by file name (text is stored as UTF-8). Reads return copies, so a caller may
 * keep or change what it gets.
 */
export function memorySource(files: Record<string, Uint8Array | string>, name = "memory"): ModelSource {
  const byName = new Map<string, Uint8Array>();
  for (const [file, data] of Object.entries(files)) {
    byName.set(file, typeof data === "string" ? new TextEncoder().encode(data) : data);
  }
  const source: ModelSource = {
    name,
    readFile(file: string): Promise<Uint8Array | null> {
      return Promise.resolve(byName.get(file)?.slice() ?? null);
    },
    size(file: string): Promise<number | null> {
      return Promise.resolve(byName.get(file)?.byteLength ?? null);
    },
    readRange(file: string, offset: number, length: number): Promise<Uint8Array> {
      const where = sourcePath(source, file);
      try {
        checkRange(where, offset, length);
        const bytes = byName.get(file);
        if (!bytes) throw new Error(`${where}: no such file`);
        if (offset + length > bytes.byteLength) throw shortRead(where, offset, length, bytes.byteLength);
        return Promise.resolve(bytes.slice(offset, offset + length));
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
  return source;
}

// ---------------------------------------------------------------------------------------------------------
// Resolving a model argument

let localFactory: ((path: string) => ModelSource) | null = null;

/**
 * Registers how a local path becomes a source (the Deno entry registers its `dirSource` when imported).
 * @internal
 */
export function setLocalSourceFactory(factory: ((path: string) => ModelSource) | null): void {
  localFactory = factory;
}

/** Whether `spec` parses as an http(s) URL. */
function isHttpUrl(spec: string): boolean {
  if (!/^https?:/i.test(spec)) return false;
  try {
    const u = new URL(spec);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}

/**
 * A model argument as a source: a {@link ModelSource} as is; a string that parses as an http(s) URL → a
 * {@link urlSource}; any other string is a local path, read by the factory the Deno entry registers.
 */
export function resolveModelSource(spec: string | ModelSource): ModelSource {
  if (typeof spec !== "string") return spec;
  if (isHttpUrl(spec)) return urlSource(spec);
  if (!localFactory) {
    throw new Error(
      `cannot read the local model path "${spec}": local model paths need the Deno entry ` +
        `(import "…/deno.ts"); in a browser pass a URL or urlSource/filesSource`,
    );
  }
  return localFactory(spec);
}

/**
 * A path or URL that names one file (`…/config.json`, `…/x.safetensors`) split into its directory's source
 * and the file's name; anything else is the directory itself (`file` null).
 */
export function resolveFileSpec(
  spec: string | ModelSource,
  isFile: (name: string) => boolean,
): { source: ModelSource; file: string | null } {
  if (typeof spec !== "string") return { source: spec, file: null };
  const trimmed = spec.replace(/[/\\]+$/, "");
  const i = Math.max(trimmed.lastIndexOf("/"), trimmed.lastIndexOf("\\"));
  const base = i < 0 ? trimmed : trimmed.slice(i + 1);
  if (!isFile(base) || trimmed !== spec) return { source: resolveModelSource(spec), file: null };
  const dir = i < 0 ? "." : i === 0 ? trimmed.slice(0, 1) : trimmed.slice(0, i);
  return { source: resolveModelSource(dir), file: base };
}
