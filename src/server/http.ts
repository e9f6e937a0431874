/**
 * HTTP/1.1 on raw TCP connections (`Deno.listen`), for the limits `Deno.serve` does not offer (Deno 2.9's
 * `Deno.serve` has no timeouts at all, and `node:http`'s `headersTimeout` / `requestTimeout` are accepted but
 * not enforced by Deno's compatibility layer: a connection sending one header byte per second stays open):
 *
 * - a deadline for a request's head, from the connection's accept (first request) or from its first byte
 *   (later requests on a kept-alive connection): slowloris connections get 408 and are closed;
 * - a deadline for its body, a limit on idle keep-alive connections, and the same limit on a write that makes no
 *   progress (a client that stops reading);
 * - caps on head bytes (431) and body bytes (413), the body's checked up front from Content-Length and counted
 *   chunk by chunk for chunked bodies, never buffering more than the cap;
 * - 400 for a malformed head or chunked body instead of a dropped connection.
 *
 * Requests reach the handler as `Request` objects without a body; the handler reads the body, when it wants
 * it, through {@link Exchange.body} (so that it can answer 401/405/429 without reading a large body). Responses
 * are `Response` objects, written with their Content-Length when they carry one, chunked otherwise (HTTP/1.1),
 * or delimited by closing the connection (HTTP/1.0). Keep-alive, pipelined requests (served one at a time),
 * `Expect: 100-continue` and HEAD are handled here. A client that closes its connection while its request is
 * handled aborts `Request.signal` and cancels the response body.
 */

/** An error of the HTTP exchange itself (head, body, timing), answered with its status. */
export class HttpError extends Error {
  /** The HTTP status to answer with. */
  readonly status: number;
  /** A short machine-readable code (`request_too_large`, `invalid_chunked_body`, …). */
  readonly code: string;

  constructor(status: number, message: string, code: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Limits of {@link serveHttp}. */
export interface HttpLimits {
  /** Most milliseconds from a connection's accept, or a later request's first byte, to the end of its head. */
  headerTimeoutMs: number;
  /** Most milliseconds to read a request's body, from when the handler asks for it. */
  bodyTimeoutMs: number;
  /** Most milliseconds a kept-alive connection waits for its next request, and a write may make no progress. */
  idleTimeoutMs: number;
  /** Most bytes of a request's head (request line and headers): 431 past it. */
  maxHeaderBytes: number;
  /** Most bytes of a request's body: 413 past it. */
  maxBodyBytes: number;
}

/** One request/response exchange on a connection. */
export interface Exchange {
  /** The request's method, or "-" when its head could not be read. */
  readonly method: string;
  /** The request target as sent (path and query), or "-". */
  readonly target: string;
  /** The target's path, or "-". */
  readonly path: string;
  /** The request's headers (empty when the head could not be read). */
  readonly headers: Headers;
  /** `performance.now()` when the request began (its first byte, or the connection's accept). */
  readonly started: number;
  /** The client's address. */
  readonly remote: Deno.NetAddr;
  /**
   * The whole body, at most `maxBodyBytes`; the same bytes when called again. Throws {@link HttpError}: 413
   * past the limit (from Content-Length before reading anything), 400 for a malformed chunked body or one that
   * ends early, 408 when it does not arrive within the body timeout.
   */
  body(): Promise<Uint8Array<ArrayBuffer>>;
}

/** Options of {@link serveHttp}. */
export interface HttpServerOptions extends HttpLimits {
  /** Address to bind. */
  hostname: string;
  /** Port (0 = any free port). */
  port: number;
  /** Answers a request. */
  handler(req: Request, ex: Exchange): Response | Promise<Response>;
  /**
   * The response for an error found before the handler could run (a malformed head, a head that took too long
   * or was too large, a method `Request` cannot carry) or thrown by it.
   */
  errorResponse(err: HttpError, ex: Exchange): Response;
  /** Called once per exchange, when its response has been written (`ok`) or failed. */
  onComplete?(ex: Exchange, status: number, bytes: number, ok: boolean): void;
}

/** A running {@link serveHttp} server. */
export interface HttpServer {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Exchanges being handled or written now. */
  readonly busy: number;
  /** Open connections. */
  readonly connections: number;
  /** Stops accepting; idle connections close now, busy ones after their response. Resolves once all are closed. */
  close(): Promise<void>;
  /** Closes every connection now. */
  abort(): void;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  204: "No Content",
  206: "Partial Content",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  416: "Range Not Satisfiable",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Header values: visible ASCII, obs-text and inner spaces/tabs; no other control characters. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Hop-by-hop headers of a handler's response: this layer decides them. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "te",
]);
/** Longest chunk-size line of a chunked body (size, extensions). */
const MAX_CHUNK_LINE = 4096;
/** A request body this small that the handler did not read is drained, keeping the connection alive. */
const DRAIN_UNREAD = 64 * 1024;
/** How long a connection closed with unread input keeps discarding it, so that its last response arrives. */
const LINGER_MS = 2000;

/** Bytes as Latin-1 text (HTTP heads are bytes; Headers takes byte strings). */
function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode(...b.subarray(i, Math.min(b.length, i + 8192)));
  }
  return s;
}

/** Resolves after `ms` with "timeout" (cleared by the returned cancel). */
function timer(ms: number): { done: Promise<"timeout">; cancel(): void } {
  let id: ReturnType<typeof setTimeout> | undefined;
  const done = new Promise<"timeout">((r) => (id = setTimeout(() => r("timeout"), Math.max(0, ms))));
  return { done, cancel: () => clearTimeout(id) };
}

/** Buffered reads from a connection, at most one read in flight, with deadlines. */
class ConnReader {
  #buf = new Uint8Array(16 * 1024);
  #start = 0;
  #end = 0;
  #pending: Promise<"data" | "eof"> | null = null;
  #eof = false;
  readonly #conn: Deno.Conn;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  get buffered(): number {
    return this.#end - this.#start;
  }

  get eof(): boolean {
    return this.#eof;
  }

  /** The buffered bytes (a view, valid until the next fill or take). */
  view(): Uint8Array {
    return this.#buf.subarray(this.#start, this.#end);
  }

  /** Reads more bytes into the buffer, waiting at most until `deadline` (performance.now() time). */
  async fill(deadline: number): Promise<"data" | "eof" | "timeout"> {
    if (this.#eof) return "eof";
    this.#pending ??= this.#readMore();
    if (deadline === Infinity) return await this.#pending;
    const t = timer(deadline - performance.now());
    try {
      return await Promise.race([this.#pending, t.done]);
    } finally {
      t.cancel();
    }
  }

  async #readMore(): Promise<"data" | "eof"> {
    const chunk = new Uint8Array(64 * 1024);
    let n: number | null = null;
    try {
      n = await this.#conn.read(chunk);
    } catch {
      n = null;
    }
    this.#pending = null;
    if (n === null || n === 0) {
      this.#eof = true;
      return "eof";
    }
    this.#append(chunk.subarray(0, n));
    return "data";
  }

  #append(b: Uint8Array): void {
    if (this.#end + b.length > this.#buf.length) {
      const live = this.#end - this.#start;
      const size = Math.max(this.#buf.length, 2 * (live + b.length));
      if (size > this.#buf.length) {
        const next = new Uint8Array(size);
        next.set(this.#buf.subarray(this.#start, this.#end), 0);
        this.#buf = next;
      } else this.#buf.copyWithin(0, this.#start, this.#end);
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(b, this.#end);
    this.#end += b.length;
  }

  /** Removes and returns (a copy of) the first `n` buffered bytes. */
  take(n: number): Uint8Array {
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.skip(n);
    return out;
  }

  skip(n: number): void {
    this.#start += n;
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  /** Index just past the first blank line (the end of a head), or -1; lines end in CRLF or LF. */
  headEnd(): number {
    const b = this.#buf;
    for (let i = this.#start; i < this.#end; i++) {
      if (b[i] !== 10) continue;
      if (i + 1 < this.#end && b[i + 1] === 10) return i + 2 - this.#start;
      if (i + 2 < this.#end && b[i + 1] === 13 && b[i + 2] === 10) return i + 3 - this.#start;
    }
    return -1;
  }

  /** Index just past the first LF, or -1. */
  lineEnd(): number {
    const i = this.#buf.subarray(this.#start, this.#end).indexOf(10);
    return i < 0 ? -1 : i + 1;
  }
}

/** A request head as parsed. */
interface Head {
  method: string;
  target: string;
  path: string;
  /** Path and query for the Request's URL (origin-form, whatever the target's form). */
  urlPath: string;
  version: "1.0" | "1.1";
  headers: Headers;
  /** Body framing. */
  length: number | "chunked";
  keepAlive: boolean;
  expectContinue: boolean;
}

/** Parses a request head (without its blank line); throws {@link HttpError}. */
function parseHead(bytes: Uint8Array): Head {
  const text = latin1(bytes);
  const lines = text.split("\n").map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
  // RFC 9112 §2.2: ignore empty lines before the request line.
  while (lines.length > 0 && lines[0] === "") lines.shift();
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const bad = (msg: string): never => {
    throw new HttpError(400, msg, "invalid_request");
  };
  const first = lines.shift() ?? "";
  const m = /^(\S+) (\S+) HTTP\/(\d)\.(\d)$/.exec(first);
  if (!m) bad(`malformed request line`);
  const [, method, target, major, minor] = m!;
  if (!TOKEN.test(method)) bad("malformed method");
  if (major !== "1" || (minor !== "0" && minor !== "1")) {
    throw new HttpError(
      505,
      `HTTP/${major}.${minor} is not supported (HTTP/1.1 is)`,
      "http_version_not_supported",
    );
  }
  if (!/^[\x21-\x7e]+$/.test(target)) bad("malformed request target");
  let urlPath: string;
  if (target.startsWith("/")) urlPath = target;
  else if (target === "*" && method === "OPTIONS") urlPath = "/*";
  else if (/^https?:\/\//i.test(target)) {
    try {
      const u = new URL(target);
      urlPath = u.pathname + u.search;
    } catch {
      bad("malformed request target");
    }
  } else bad("malformed request target");
  const path = urlPath!.split("?")[0].split("#")[0];
  const headers = new Headers();
  for (const line of lines) {
    if (line.startsWith(" ") || line.startsWith("\t")) bad("obsolete header line folding");
    const colon = line.indexOf(":");
    if (colon <= 0) bad("malformed header line");
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) bad(`malformed header name`);
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) bad(`malformed value of header ${name}`);
    headers.append(name, value);
  }
  const version = minor === "0" ? "1.0" : "1.1";
  if (version === "1.1" && !headers.has("host")) bad("HTTP/1.1 requests need a Host header");
  const te = headers.get("transfer-encoding");
  const cl = headers.get("content-length");
  let length: number | "chunked" = 0;
  if (te !== null) {
    if (cl !== null) bad("both Transfer-Encoding and Content-Length");
    if (te.trim().toLowerCase() !== "chunked") {
      throw new HttpError(
        501,
        `Transfer-Encoding ${te} is not supported (chunked is)`,
        "unsupported_encoding",
      );
    }
    if (version === "1.0") bad("Transfer-Encoding in an HTTP/1.0 request");
    length = "chunked";
  } else if (cl !== null) {
    // Headers joins repeated fields with ", ": equal repeats are allowed (RFC 9110 §8.6).
    const values = new Set(cl.split(",").map((s) => s.trim()));
    const v = [...values][0];
    if (values.size !== 1 || !/^\d{1,15}$/.test(v)) bad("malformed Content-Length");
    length = Number(v);
  }
  const conn = (headers.get("connection") ?? "").toLowerCase().split(",").map((s) => s.trim());
  const keepAlive = version === "1.1" ? !conn.includes("close") : conn.includes("keep-alive");
  const expectContinue = version === "1.1" && (headers.get("expect") ?? "").toLowerCase() === "100-continue";
  return { method, target, path, urlPath: urlPath!, version, headers, length, keepAlive, expectContinue };
}

const HTTP_DATE = { at: 0, text: "" };
function httpDate(): string {
  const now = Date.now();
  if (now - HTTP_DATE.at >= 1000) {
    HTTP_DATE.at = now;
    HTTP_DATE.text = new Date(now).toUTCString();
  }
  return HTTP_DATE.text;
}

/** What a connection is doing (idle connections close at once on {@link HttpServer.close}). */
type ConnPhase = "idle" | "head" | "busy" | "closing";

interface ConnState {
  conn: Deno.Conn;
  phase: ConnPhase;
  closed: boolean;
}

/** Starts an HTTP/1.1 server; see the module comment. */
export function serveHttp(options: HttpServerOptions): HttpServer {
  const listener = Deno.listen({ hostname: options.hostname, port: options.port, transport: "tcp" });
  const addr = listener.addr as Deno.NetAddr;
  const conns = new Set<ConnState>();
  const tasks = new Set<Promise<void>>();
  let busy = 0;
  let closing = false;

  const closeConn = (c: ConnState) => {
    if (c.closed) return;
    c.closed = true;
    try {
      c.conn.close();
    } catch { /* already closed */ }
  };

  /** Writes all of `data`, or throws; a write that makes no progress for the idle timeout closes the connection. */
  const writeAll = async (c: ConnState, data: Uint8Array, timeoutMs = options.idleTimeoutMs) => {
    let off = 0;
    while (off < data.length) {
      if (c.closed) throw new Error("connection closed");
      const p = c.conn.write(off === 0 ? data : data.subarray(off));
      p.catch(() => {});
      const t = timer(timeoutMs);
      let r: number | "timeout";
      try {
        r = await Promise.race([p, t.done]);
      } finally {
        t.cancel();
      }
      if (r === "timeout") {
        closeConn(c);
        throw new Error("write stalled");
      }
      off += r;
    }
  };

  /** Reads and discards input for a while after the response, so that closing does not reset it away. */
  const linger = async (c: ConnState, reader: ConnReader) => {
    if (c.closed) return;
    try {
      await (c.conn as Deno.TcpConn).closeWrite();
    } catch {
      return;
    }
    const deadline = performance.now() + LINGER_MS;
    let discarded = 0;
    while (!c.closed && discarded < 64 * options.maxBodyBytes) {
      discarded += reader.buffered;
      reader.skip(reader.buffered);
      if ((await reader.fill(deadline)) !== "data") break;
    }
  };

  const serveConn = async (c: ConnState) => {
    const accepted = performance.now();
    const reader = new ConnReader(c.conn);
    const remote = c.conn.remoteAddr as Deno.NetAddr;
    try {
      (c.conn as Deno.TcpConn).setNoDelay?.(true);
    } catch { /* not TCP */ }
    let first = true;
    for (;;) {
      if (closing || c.closed) break;
      // Wait for the request's first byte: the head deadline on a new connection, the idle limit between requests.
      c.phase = "idle";
      const headDeadline0 = accepted + options.headerTimeoutMs;
      if (reader.buffered === 0) {
        const st = await reader.fill(first ? headDeadline0 : performance.now() + options.idleTimeoutMs);
        if (st !== "data") break; // closed, or nothing sent in time: close without a word
      }
      c.phase = "head";
      const started = first ? accepted : performance.now();
      const deadline = first ? headDeadline0 : started + options.headerTimeoutMs;
      let ex: ExchangeImpl;
      let error: HttpError | null = null;
      let head: Head | null = null;
      // Read the head.
      for (;;) {
        const end = reader.headEnd();
        if (end >= 0) {
          if (end > options.maxHeaderBytes) {
            error = new HttpError(
              431,
              `the request head exceeds ${options.maxHeaderBytes} bytes`,
              "header_too_large",
            );
            break;
          }
          try {
            head = parseHead(reader.take(end));
          } catch (e) {
            error = e instanceof HttpError ? e : new HttpError(400, String(e), "invalid_request");
          }
          break;
        }
        if (reader.buffered > options.maxHeaderBytes) {
          error = new HttpError(
            431,
            `the request head exceeds ${options.maxHeaderBytes} bytes`,
            "header_too_large",
          );
          break;
        }
        const st = await reader.fill(deadline);
        if (st === "eof") {
          closeConn(c);
          return;
        }
        if (st === "timeout") {
          error = new HttpError(
            408,
            `the request head did not arrive within ${options.headerTimeoutMs} ms`,
            "header_timeout",
          );
          break;
        }
      }
      c.phase = "busy";
      busy++;
      let status = 0;
      let bytes = 0;
      let ok = false;
      try {
        ex = new ExchangeImpl(head, started, remote, reader, options);
        ex.writeContinue = () => writeAll(c, enc.encode("HTTP/1.1 100 Continue\r\n\r\n"));
        let res: Response;
        let keepAlive = false;
        if (error !== null || head === null) {
          res = options.errorResponse(error!, ex);
        } else {
          let req: Request | null = null;
          try {
            req = new Request(`http://${hostForUrl(addr)}${head.urlPath}`, {
              method: head.method,
              headers: head.headers,
              signal: ex.signal,
            });
          } catch {
            req = null;
          }
          if (req === null) {
            res = options.errorResponse(
              new HttpError(405, `method ${head.method} is not allowed`, "method_not_allowed"),
              ex,
            );
          } else {
            // A request without a body: watch for the client going away while it is handled.
            if (head.length === 0) ex.watch();
            try {
              res = await options.handler(req, ex);
            } catch (e) {
              res = options.errorResponse(
                e instanceof HttpError
                  ? e
                  : new HttpError(500, e instanceof Error ? e.message : String(e), "internal_error"),
                ex,
              );
            }
            keepAlive = head.keepAlive;
          }
        }
        status = res.status;
        // An unread body: drain a small one; otherwise the connection closes after this response.
        if (keepAlive && !ex.bodyDone && typeof head?.length === "number" && head.length <= DRAIN_UNREAD) {
          try {
            await ex.body();
          } catch { /* closing anyway */ }
        }
        // The handler may end the connection with `Connection: close` (a draining server does).
        const handlerCloses = (res.headers.get("connection") ?? "").toLowerCase() === "close";
        keepAlive = keepAlive && !handlerCloses && ex.bodyDone && !ex.bodyFailed && !closing && !c.closed;
        const w = await writeResponse(c, ex, res, keepAlive, head);
        bytes = w.bytes;
        ok = w.ok;
        keepAlive = keepAlive && w.ok;
        ex.finish();
        options.onComplete?.(ex, status, bytes, ok);
        if (!keepAlive) {
          // Input left unread (a body, the rest of a bad head): keep reading it for a moment, so that closing
          // does not reset the connection before the client has read this response. Not after a timeout.
          const unread = !ex.bodyDone || ex.bodyFailed || error !== null;
          if (unread && status !== 408) await linger(c, reader);
          break;
        }
      } finally {
        busy--;
      }
      first = false;
    }
    closeConn(c);
  };

  /** Writes a response; returns the body bytes written and whether all of it was. */
  const writeResponse = async (
    c: ConnState,
    ex: ExchangeImpl,
    res: Response,
    keepAlive: boolean,
    head: Head | null,
  ): Promise<{ bytes: number; ok: boolean }> => {
    const version = head?.version ?? "1.1";
    const noBody = head?.method === "HEAD" || res.status < 200 || res.status === 204 || res.status === 304;
    const declared = res.headers.get("content-length");
    let length: number | null = declared !== null && /^\d+$/.test(declared) ? Number(declared) : null;
    let mode: "none" | "length" | "chunked" | "close";
    if (noBody || res.body === null) mode = "none";
    else if (length !== null) mode = "length";
    else if (version === "1.1") mode = "chunked";
    else {
      mode = "close";
      keepAlive = false;
    }
    if (mode === "none" && !noBody) length = 0;
    let text = `HTTP/${version} ${res.status} ${REASONS[res.status] ?? (res.statusText || "Status")}\r\n`;
    text += `date: ${httpDate()}\r\n`;
    for (const [k, v] of res.headers) {
      if (HOP_BY_HOP.has(k) || k === "content-length" || k === "date") continue;
      text += `${k}: ${v}\r\n`;
    }
    if (length !== null && (mode === "length" || mode === "none")) text += `content-length: ${length}\r\n`;
    if (mode === "chunked") text += "transfer-encoding: chunked\r\n";
    text += keepAlive ? (version === "1.0" ? "connection: keep-alive\r\n" : "") : "connection: close\r\n";
    text += "\r\n";
    const headBytes = enc.encode(text);
    if (mode === "none") {
      await res.body?.cancel().catch(() => {});
      try {
        await writeAll(c, headBytes);
        return { bytes: 0, ok: true };
      } catch {
        return { bytes: 0, ok: false };
      }
    }
    const body = res.body!.getReader();
    ex.onAbort(() => body.cancel().catch(() => {}));
    let bytes = 0;
    try {
      await writeAll(c, headBytes);
      for (;;) {
        const { done, value } = await body.read();
        if (done) break;
        if (!value || value.length === 0) continue;
        if (ex.aborted) throw new Error("client gone");
        if (mode === "length") {
          const room = length! - bytes;
          if (value.length > room) throw new Error("body longer than its Content-Length");
          await writeAll(c, value);
        } else if (mode === "chunked") {
          const size = enc.encode(`${value.length.toString(16)}\r\n`);
          const frame = new Uint8Array(size.length + value.length + 2);
          frame.set(size, 0);
          frame.set(value, size.length);
          frame.set([13, 10], size.length + value.length);
          await writeAll(c, frame);
        } else {
          await writeAll(c, value);
        }
        bytes += value.length;
      }
      if (ex.aborted) throw new Error("client gone");
      if (mode === "length" && bytes !== length) throw new Error("body shorter than its Content-Length");
      if (mode === "chunked") await writeAll(c, enc.encode("0\r\n\r\n"));
      return { bytes, ok: true };
    } catch {
      body.cancel().catch(() => {});
      closeConn(c);
      return { bytes, ok: false };
    }
  };

  const acceptLoop = async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        break; // closed
      }
      if (closing) {
        try {
          conn.close();
        } catch { /* gone */ }
        continue;
      }
      const c: ConnState = { conn, phase: "idle", closed: false };
      conns.add(c);
      const task = serveConn(c)
        .catch((e) => console.error(`http: connection failed: ${e instanceof Error ? e.message : e}`))
        .finally(() => {
          closeConn(c);
          conns.delete(c);
          tasks.delete(task);
        });
      tasks.add(task);
    }
  };
  const accepting = acceptLoop();

  return {
    addr,
    get busy() {
      return busy;
    },
    get connections() {
      return conns.size;
    },
    async close() {
      if (!closing) {
        closing = true;
        try {
          listener.close();
        } catch { /* closed */ }
      }
      await accepting;
      for (const c of conns) if (c.phase === "idle" || c.phase === "head") closeConn(c);
      while (tasks.size > 0) await Promise.allSettled([...tasks]);
    },
    abort() {
      closing = true;
      try {
        listener.close();
      } catch { /* closed */ }
      for (const c of conns) closeConn(c);
    },
  };
}

function hostForUrl(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}

/** One exchange: its head, its body on demand, the client's disconnect. */
class ExchangeImpl implements Exchange {
  readonly method: string;
  readonly target: string;
  readonly path: string;
  readonly headers: Headers;
  readonly started: number;
  readonly remote: Deno.NetAddr;
  bodyDone: boolean;
  bodyFailed = false;
  aborted = false;
  readonly #head: Head | null;
  readonly #reader: ConnReader;
  readonly #limits: HttpLimits;
  readonly #abort = new AbortController();
  #onAbort: (() => void)[] = [];
  #body: Promise<Uint8Array<ArrayBuffer>> | null = null;
  #finished = false;
  #watching = false;
  #writeContinue: (() => Promise<void>) | null = null;

  constructor(
    head: Head | null,
    started: number,
    remote: Deno.NetAddr,
    reader: ConnReader,
    limits: HttpLimits,
  ) {
    this.#head = head;
    this.method = head?.method ?? "-";
    this.target = head?.target ?? "-";
    this.path = head?.path ?? "-";
    this.headers = head?.headers ?? new Headers();
    this.started = started;
    this.remote = remote;
    this.#reader = reader;
    this.#limits = limits;
    this.bodyDone = head === null || head.length === 0;
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Registers `f` to run when the client goes away (at once if it has). */
  onAbort(f: () => void): void {
    if (this.aborted) f();
    else this.#onAbort.push(f);
  }

  /** Marks the exchange done: later disconnects are not its own. */
  finish(): void {
    this.#finished = true;
    this.#onAbort = [];
  }

  /** Sends "100 Continue" before the body is read (set by the server for `Expect: 100-continue`). */
  set writeContinue(f: () => Promise<void>) {
    this.#writeContinue = f;
  }

  /** Watches the connection for its close while the request is handled (only once the body is read). */
  watch(): void {
    if (this.#watching || this.#head === null) return;
    this.#watching = true;
    const reader = this.#reader;
    (async () => {
      while (!this.#finished) {
        // Pipelined requests wait in the buffer; stop reading when they pile up.
        if (reader.buffered > this.#limits.maxHeaderBytes) return;
        const st = await reader.fill(Infinity);
        if (st === "eof") {
          if (this.#finished) return;
          this.aborted = true;
          this.#abort.abort(new Error("the client closed the connection"));
          for (const f of this.#onAbort.splice(0)) f();
          return;
        }
      }
    })();
  }

  body(): Promise<Uint8Array<ArrayBuffer>> {
    this.#body ??= this.#readBody().then(
      (b) => {
        this.bodyDone = true;
        this.watch();
        return b;
      },
      (e) => {
        this.bodyFailed = true;
        throw e;
      },
    );
    return this.#body;
  }

  async #readBody(): Promise<Uint8Array<ArrayBuffer>> {
    const head = this.#head;
    if (head === null || head.length === 0) return new Uint8Array(0);
    const max = this.#limits.maxBodyBytes;
    const tooLarge = () =>
      new HttpError(413, `the request body exceeds the server's limit of ${max} bytes`, "request_too_large");
    if (typeof head.length === "number" && head.length > max) throw tooLarge();
    if (head.expectContinue) await this.#writeContinue?.();
    const r = this.#reader;
    const deadline = performance.now() + this.#limits.bodyTimeoutMs;
    const more = async () => {
      const st = await r.fill(deadline);
      if (st === "timeout") {
        throw new HttpError(
          408,
          `the request body did not arrive within ${this.#limits.bodyTimeoutMs} ms`,
          "body_timeout",
        );
      }
      if (st === "eof") throw new HttpError(400, "the request body ended early", "incomplete_body");
    };
    if (typeof head.length === "number") {
      const out = new Uint8Array(head.length);
      let got = 0;
      while (got < out.length) {
        if (r.buffered === 0) await more();
        const n = Math.min(r.buffered, out.length - got);
        out.set(r.view().subarray(0, n), got);
        r.skip(n);
        got += n;
      }
      return out;
    }
    // Chunked: size line, data, CRLF; a zero size ends it, then trailers up to a blank line.
    const bad = (msg: string) => new HttpError(400, `malformed chunked body: ${msg}`, "invalid_chunked_body");
    const parts: Uint8Array[] = [];
    let total = 0;
    const line = async (): Promise<string> => {
      for (;;) {
        const end = r.lineEnd();
        if (end >= 0) {
          if (end > MAX_CHUNK_LINE) throw bad("line too long");
          const s = dec.decode(r.take(end));
          return s.endsWith("\r\n") ? s.slice(0, -2) : s.slice(0, -1);
        }
        if (r.buffered > MAX_CHUNK_LINE) throw bad("line too long");
        await more();
      }
    };
    for (;;) {
      const sizeLine = await line();
      const m = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(sizeLine);
      if (!m) throw bad(`bad chunk size line ${JSON.stringify(sizeLine.slice(0, 40))}`);
      const size = parseInt(m[1], 16);
      if (size === 0) break;
      if (total + size > max) throw tooLarge();
      let left = size;
      while (left > 0) {
        if (r.buffered === 0) await more();
        const n = Math.min(left, r.buffered);
        parts.push(r.take(n));
        left -= n;
      }
      if ((await line()) !== "") throw bad("chunk data longer than its size");
      total += size;
    }
    // Trailers (ignored), bounded like a head.
    let trailerBytes = 0;
    for (;;) {
      const t = await line();
      if (t === "") break;
      trailerBytes += t.length;
      if (trailerBytes > this.#limits.maxHeaderBytes) throw bad("trailers too large");
    }
    const out = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }
}
