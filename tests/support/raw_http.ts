/** Reading raw HTTP/1.1 responses off a socket, for the tests that talk to the server below fetch. */

/** A parsed response: status (0 when there is none), headers and body (chunked framing removed). */
export interface ParsedHttpResponse {
  status: number;
  headers: Headers;
  body: string;
}

/** Parses the first HTTP response in `text` (status 0 when its head is not complete). */
export function parseHttpResponse(text: string): ParsedHttpResponse {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return { status: 0, headers: new Headers(), body: "" };
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const headers = new Headers();
  for (const l of lines) {
    const i = l.indexOf(":");
    headers.append(l.slice(0, i).trim(), l.slice(i + 1).trim());
  }
  let body = text.slice(end + 4);
  if (headers.get("transfer-encoding") === "chunked") {
    let out = "";
    for (;;) {
      const nl = body.indexOf("\r\n");
      if (nl < 0) break;
      const size = parseInt(body.slice(0, nl), 16);
      if (!(size > 0)) break;
      out += body.slice(nl + 2, nl + 2 + size);
      body = body.slice(nl + 4 + size);
    }
    body = out;
  }
  return { status: Number(statusLine.split(" ")[1]), headers, body };
}
