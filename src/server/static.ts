/**
 * Static files beside the API: the browser page (`/`, `/lethe.js`, …: plain files directly in the built page's
 * directory) and the model directory's files (`/model/<file>`), both with HTTP Range requests (206,
 * Content-Range, HEAD, 416 for ranges that cannot be served) so that the page can read one tensor at a time.
 * Only plain files directly in each directory are served: no subdirectories, no dot files, no `..`.
 * Cross-origin reads are allowed only for the origin given as `cors` (or every origin with `*`).
 */

/** Options of {@link staticHandler}. */
export interface StaticOptions {
  /** Directory of the built page (`deno task build:web` writes `dist/web`); served at `/`. */
  webDir?: string;
  /** Model directory; its files are served at `/model/<file>`. */
  modelDir?: string;
  /** The origin allowed to read these files from another origin, or `*` for any (default: none). */
  cors?: string;
}

/** Answers a request for a static file, or returns null when the path is none of its routes. */
export type StaticHandler = (req: Request) => Promise<Response | null>;

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  json: "application/json",
  map: "application/json",
  svg: "image/svg+xml",
  png: "image/png",
  txt: "text/plain; charset=utf-8",
  md: "text/plain; charset=utf-8",
  wgsl: "text/plain; charset=utf-8",
};

/** MIME type from a file name's extension (application/octet-stream for safetensors and anything unknown). */
export function contentType(name: string): string {
  const dot = name.lastIndexOf(".");
  return (dot >= 0 && TYPES[name.slice(dot + 1).toLowerCase()]) || "application/octet-stream";
}

/** A byte range of a file: [start, end] inclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * Parses a Range header against a file size: null = serve the whole file (no header, another unit, or several
 * ranges — which this server does not combine), "unsatisfiable" = answer 416, else the one inclusive range.
 */
export function parseRange(header: string | null, size: number): ByteRange | null | "unsatisfiable" {
  if (header === null) return null;
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return null; // another unit: ignore the header (RFC 9110 §14.2)
  const spec = m[1].trim();
  if (spec.includes(",")) return null;
  const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec);
  if (!r || (r[1] === "" && r[2] === "")) return "unsatisfiable";
  if (r[1] === "") {
    // Suffix range: the last N bytes.
    const n = Number(r[2]);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(r[1]);
  const end = r[2] === "" ? size - 1 : Math.min(Number(r[2]), size - 1);
  if (!Number.isSafeInteger(start) || start >= size || (r[2] !== "" && Number(r[2]) < start)) {
    return "unsatisfiable";
  }
  return { start, end };
}

/** Whether `name` (one decoded path segment) may be served from a directory: no separators, dots, or NULs. */
export function isPlainName(name: string): boolean {
  return name.length > 0 && !name.startsWith(".") && !/[/\\\0]/.test(name);
}

/** Streams `length` bytes of an open file from its current position, then closes it. */
function fileStream(file: Deno.FsFile, length: number): ReadableStream<Uint8Array> {
  let left = length;
  const close = () => {
    try {
      file.close();
    } catch { /* already closed */ }
  };
  return new ReadableStream<Uint8Array>({
    type: "bytes",
    async pull(controller) {
      if (left <= 0) {
        close();
        controller.close();
        return;
      }
      const buf = new Uint8Array(Math.min(left, 1 << 20));
      const n = await file.read(buf);
      if (n === null || n === 0) {
        close();
        controller.error(new Error("file ended before the range did"));
        return;
      }
      left -= n;
      controller.enqueue(buf.subarray(0, n));
    },
    cancel: close,
  });
}

/** Builds the handler for the page and model files; routes it has no directory for are not its own. */
export function staticHandler(options: StaticOptions): StaticHandler {
  const corsHeaders = (req: Request): Record<string, string> => {
    const allowed = options.cors;
    if (!allowed) return {};
    const origin = req.headers.get("origin");
    if (allowed !== "*" && origin !== allowed) return { vary: "Origin" };
    return {
      "access-control-allow-origin": allowed === "*" ? "*" : allowed,
      "access-control-expose-headers": "Content-Range, Content-Length, Accept-Ranges, ETag, Last-Modified",
      ...(allowed === "*" ? {} : { vary: "Origin" }),
    };
  };

  const plain = (req: Request, status: number, text: string, extra: Record<string, string> = {}) =>
    new Response(req.method === "HEAD" ? null : text + "\n", {
      status,
      headers: { "content-type": "text/plain; charset=utf-8", ...corsHeaders(req), ...extra },
    });

  const serveFile = async (req: Request, dir: string, name: string): Promise<Response> => {
    if (req.method === "OPTIONS") {
      return new Response(null, {
        status: 204,
        headers: {
          allow: "GET, HEAD, OPTIONS",
          ...corsHeaders(req),
          ...(options.cors
            ? { "access-control-allow-methods": "GET, HEAD", "access-control-allow-headers": "Range" }
            : {}),
        },
      });
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return plain(req, 405, `${req.method} not allowed`, { allow: "GET, HEAD, OPTIONS" });
    }
    if (!isPlainName(name)) return plain(req, 404, "not found");
    const path = `${dir.replace(/\/+$/, "")}/${name}`;
    let info: Deno.FileInfo;
    try {
      // stat follows a symbolic link placed in the directory (Hugging Face cache snapshots are links to
      // blobs); what it names must be a regular file.
      info = await Deno.stat(path);
    } catch {
      return plain(req, 404, `no file ${name}`);
    }
    if (!info.isFile) return plain(req, 404, `no file ${name}`);
    const size = info.size;
    const mtime = info.mtime?.getTime() ?? 0;
    const headers: Record<string, string> = {
      "content-type": contentType(name),
      "accept-ranges": "bytes",
      "cache-control": "no-cache",
      etag: `"${size.toString(16)}-${mtime.toString(16)}"`,
      ...(info.mtime ? { "last-modified": info.mtime.toUTCString() } : {}),
      ...corsHeaders(req),
    };
    const range = parseRange(req.headers.get("range"), size);
    if (range === "unsatisfiable") {
      return plain(req, 416, `range not satisfiable: ${req.headers.get("range")} of ${size} bytes`, {
        "content-range": `bytes */${size}`,
        "accept-ranges": "bytes",
      });
    }
    const start = range?.start ?? 0;
    const length = range ? range.end - range.start + 1 : size;
    headers["content-length"] = String(length);
    if (range) headers["content-range"] = `bytes ${range.start}-${range.end}/${size}`;
    const status = range ? 206 : 200;
    if (req.method === "HEAD" || length === 0) return new Response(null, { status, headers });
    const file = await Deno.open(path, { read: true });
    if (start > 0) await file.seek(start, Deno.SeekMode.Start);
    return new Response(fileStream(file, length), { status, headers });
  };

  return async (req: Request): Promise<Response | null> => {
    const { pathname } = new URL(req.url);
    if (options.modelDir !== undefined && pathname.startsWith("/model/")) {
      let name: string;
      try {
        name = decodeURIComponent(pathname.slice("/model/".length));
      } catch {
        return plain(req, 400, "bad path encoding");
      }
      return await serveFile(req, options.modelDir, name);
    }
    if (options.webDir !== undefined) {
      if (pathname === "/") return await serveFile(req, options.webDir, "index.html");
      const seg = pathname.slice(1);
      // Only names of files that exist are the page's: anything else falls through to the API's 404.
      if (!seg.includes("/")) {
        let name: string;
        try {
          name = decodeURIComponent(seg);
        } catch {
          return null;
        }
        if (isPlainName(name)) {
          try {
            if ((await Deno.stat(`${options.webDir.replace(/\/+$/, "")}/${name}`)).isFile) {
              return await serveFile(req, options.webDir, name);
            }
          } catch { /* not the page's */ }
        }
      }
    }
    return null;
  };
}

/** What `tools/build_web.ts` offers {@link prepareWebDir} (main.ts imports it only when serving). */
export interface WebBuilder {
  /** Where the built page goes: `dist/web`. */
  readonly WEB_DIST: string;
  webIsStale(outDir: string): Promise<string | null>;
  buildWeb(options: { outDir: string }): Promise<unknown>;
  describeBuild(result: unknown): string;
}

/** What {@link prepareWebDir} found or did. */
export interface PreparedWeb {
  /** The page's directory, or null when there is no page to serve. */
  dir: string | null;
  /** One line for the log. */
  message: string;
}

/**
 * The built page for `deno task serve` in a checkout: `dist/web`, built first when it is missing or older
 * than its sources and this process may run esbuild and write `dist/` (else the message says how to build
 * it). `loadBuilder` imports `tools/build_web.ts` (absent outside a checkout: then there is no page).
 */
export async function prepareWebDir(loadBuilder: () => Promise<WebBuilder>): Promise<PreparedWeb> {
  const how = "run `deno task build:web`";
  let builder: WebBuilder;
  try {
    builder = await loadBuilder();
  } catch (e) {
    return { dir: null, message: `no page: cannot load tools/build_web.ts (${(e as Error).message})` };
  }
  const dist = builder.WEB_DIST;
  const stale = await builder.webIsStale(dist);
  if (stale === null) return { dir: dist, message: `page: ${dist} (up to date)` };
  const allowed = (await Deno.permissions.query({ name: "run" })).state === "granted" &&
    (await Deno.permissions.query({ name: "write", path: dist })).state === "granted";
  let present = false;
  try {
    present = (await Deno.stat(`${dist}/index.html`)).isFile;
  } catch { /* missing */ }
  if (!allowed) {
    return present
      ? { dir: dist, message: `page: ${dist} is out of date (${stale}): ${how}` }
      : { dir: null, message: `no page: ${stale}; ${how} (or serve with --allow-run --allow-write=dist)` };
  }
  try {
    return {
      dir: dist,
      message: `page: ${builder.describeBuild(await builder.buildWeb({ outDir: dist }))} (${stale})`,
    };
  } catch (e) {
    const msg = (e as Error).message;
    return present
      ? { dir: dist, message: `page: rebuilding failed, serving the old build: ${msg}` }
      : { dir: null, message: `no page: building it failed: ${msg}` };
  }
}
