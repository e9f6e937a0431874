/**
 * `deno task scale:test`: two replicas of the server behind nginx (deploy/nginx.conf), one killed mid-run.
 *
 * Starts two replicas of `src/server/main.ts` on 127.0.0.1 (free ports) with the bundled model, sends the
 * requests to replica A alone for the reference outputs, renders the nginx template into a temp dir and starts
 * nginx on it, sends 16 concurrent greedy chat requests (sums and short walks, half of them streamed) through
 * nginx, SIGKILLs replica B while it is decoding, then sends 4 more. It passes when no request hangs, every
 * request either completes or fails cleanly (an HTTP error status with a body, a stream ending in an error
 * event, or a stream cut off without its `data: [DONE]`, which the client sees at once), every completed
 * output equals replica A's reference, the requests sent after the kill all complete, and the kill landed
 * while B had sequences decoding. Skips (exit 0, saying so) when nginx is not installed.
 *
 * Flags: --keep (leave the temp dir with the logs), --timeout SECONDS (per request, default 300).
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR } from "../src/util/paths.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/+$/, "");
/** deploy/nginx.conf. */
export const NGINX_TEMPLATE: string = `${ROOT}/deploy/nginx.conf`;

/**
 * Renders the nginx template: `{{LISTEN}}` becomes `listen`, and each line holding `{{SERVER}}` is repeated once
 * per upstream address (`host:port`).
 */
export function renderNginxConfig(template: string, listen: string, servers: string[]): string {
  if (servers.length === 0) throw new Error("renderNginxConfig: no upstream servers");
  if (!template.includes("{{LISTEN}}") || !template.includes("{{SERVER}}")) {
    throw new Error("renderNginxConfig: the template lacks {{LISTEN}} or {{SERVER}}");
  }
  const out: string[] = [];
  for (const line of template.split("\n")) {
    // Comment lines keep their placeholders (they document them).
    if (line.includes("{{SERVER}}") && !line.trimStart().startsWith("#")) {
      for (const s of servers) out.push(line.replaceAll("{{SERVER}}", s));
    } else if (line.trimStart().startsWith("#")) out.push(line);
    else out.push(line.replaceAll("{{LISTEN}}", listen));
  }
  return out.join("\n");
}

/** The nginx binary (on PATH, or Debian's /usr/sbin/nginx), or null. */
export async function findNginx(): Promise<string | null> {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":").filter(Boolean), "/usr/sbin", "/usr/local/sbin"];
  for (const d of dirs) {
    try {
      const st = await Deno.stat(`${d}/nginx`);
      if (st.isFile) return `${d}/nginx`;
    } catch { /* not here */ }
  }
  return null;
}

/**
 * Writes a rendered config into `prefix` (with its logs/ and tmp/ dirs) and returns its path. The prefix is
 * made world-traversable: nginx started as root runs its workers as nobody.
 */
export async function writeNginxConfig(prefix: string, listen: string, servers: string[]): Promise<string> {
  await Deno.mkdir(`${prefix}/logs`, { recursive: true });
  await Deno.mkdir(`${prefix}/tmp`, { recursive: true });
  await Deno.chmod(prefix, 0o755);
  await Deno.chmod(`${prefix}/tmp`, 0o777);
  const conf = `${prefix}/nginx.conf`;
  await Deno.writeTextFile(conf, renderNginxConfig(await Deno.readTextFile(NGINX_TEMPLATE), listen, servers));
  return conf;
}

/** A port free right now on 127.0.0.1. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

type Replica = { name: string; proc: Deno.ChildProcess; url: string; addr: string; exited: boolean };

/** Starts `src/server/main.ts` on a free port (--port 0) and waits for its "listening URL" line. */
async function startReplica(name: string, dir: string): Promise<Replica> {
  const proc = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-no-legacy-abort",
      "--allow-read",
      "--allow-env",
      "--allow-net",
      "--allow-run",
      "--allow-write=dist",
      "src/server/main.ts",
      "--model",
      DEFAULT_MODEL_DIR,
      "--port",
      "0",
      "--no-web",
      "--max-tokens",
      "800",
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const log = await Deno.open(`${dir}/${name}.log`, { write: true, create: true, truncate: true });
  proc.stderr.pipeTo(log.writable).catch(() => {});
  const replica: Replica = { name, proc, url: "", addr: "", exited: false };
  proc.status.then(() => (replica.exited = true));
  const lines = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const deadline = Date.now() + 180_000;
  while (!replica.url) {
    if (Date.now() > deadline) {
      throw new Error(`replica ${name} did not start within 180 s (see ${name}.log)`);
    }
    const { value, done } = await lines.read();
    if (done) throw new Error(`replica ${name} exited before listening (see ${dir}/${name}.log)`);
    buf += value;
    const m = /listening (http:\/\/\S+)/.exec(buf);
    if (m) replica.url = m[1].replace(/\/+$/, "");
  }
  // Keep draining stdout so the process never blocks on it.
  (async () => {
    try {
      while (!(await lines.read()).done) { /* discard */ }
    } catch { /* killed */ }
  })();
  replica.addr = replica.url.replace(/^http:\/\//, "");
  return replica;
}

type Question = { prompt: string; stream: boolean };

/** 16 questions the bundled reasoner answers: sums of 3–7 two-digit numbers and walks of 60–90 steps. */
function questions(): Question[] {
  let s = 12345;
  const r = (n: number) => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return Math.floor((s / 2147483648) * n);
  };
  const out: Question[] = [{ prompt: "add the numbers 12 34 56.", stream: false }];
  for (let i = 1; i < 16; i++) {
    let prompt: string;
    if (i % 3 === 2) {
      const k = 3 + r(2);
      const nodes: number[] = [];
      while (nodes.length < k) {
        const v = 10 + r(90);
        if (!nodes.includes(v)) nodes.push(v);
      }
      const arrows = nodes.map((v, j) => `${v}>${nodes[(j + 1) % k]}`);
      for (let j = arrows.length - 1; j > 0; j--) {
        const t = r(j + 1);
        [arrows[j], arrows[t]] = [arrows[t], arrows[j]];
      }
      prompt = `walk ${60 + r(31)} steps from ${nodes[0]}. map: ${arrows.join(", ")}.`;
    } else {
      const k = 3 + r(5);
      prompt = `add the numbers ${Array.from({ length: k }, () => 10 + r(90)).join(" ")}.`;
    }
    out.push({ prompt, stream: i % 2 === 1 });
  }
  return out;
}

type Outcome =
  | { kind: "completed"; reasoning: string; content: string; finish: string; upstream: string; ms: number }
  | { kind: "http_error"; status: number; body: string; upstream: string; ms: number }
  | { kind: "error_event"; message: string; upstream: string; ms: number }
  | { kind: "cut"; detail: string; upstream: string; ms: number }
  | { kind: "unclean"; detail: string; upstream: string; ms: number }
  | { kind: "hang"; ms: number };

/** Sends one chat request and classifies what came back. */
async function ask(base: string, q: Question, timeoutMs: number): Promise<Outcome> {
  const t0 = Date.now();
  const ms = () => Date.now() - t0;
  const signal = AbortSignal.timeout(timeoutMs);
  let upstream = "";
  try {
    const res = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        messages: [{ role: "user", content: q.prompt }],
        temperature: 0,
        max_tokens: 800,
        stream: q.stream,
      }),
      signal,
    });
    upstream = res.headers.get("x-lethe-upstream") ?? "";
    if (res.status !== 200) {
      const body = await res.text();
      return body.length > 0
        ? { kind: "http_error", status: res.status, body: body.slice(0, 200), upstream, ms: ms() }
        : { kind: "unclean", detail: `HTTP ${res.status} with an empty body`, upstream, ms: ms() };
    }
    if (!q.stream) {
      const j = await res.json();
      const m = j.choices?.[0]?.message ?? {};
      return {
        kind: "completed",
        reasoning: m.reasoning_content ?? "",
        content: m.content ?? "",
        finish: j.choices?.[0]?.finish_reason ?? "",
        upstream,
        ms: ms(),
      };
    }
    let text = "";
    let readError = "";
    try {
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
    } catch (e) {
      if (signal.aborted) return { kind: "hang", ms: ms() };
      readError = (e as Error).message;
    }
    let reasoning = "", content = "", finish = "", done = false;
    for (const block of text.split("\n\n")) {
      const line = block.trim();
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") {
        done = true;
        continue;
      }
      let ev;
      try {
        ev = JSON.parse(data);
      } catch {
        continue; // a JSON event cut in half by the kill
      }
      if (ev.error) return { kind: "error_event", message: String(ev.error.message), upstream, ms: ms() };
      const c = ev.choices?.[0];
      if (!c) continue;
      reasoning += c.delta?.reasoning_content ?? "";
      content += c.delta?.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (done && !readError) return { kind: "completed", reasoning, content, finish, upstream, ms: ms() };
    return {
      kind: "cut",
      detail: `stream ended without [DONE] after ${reasoning.length + content.length} chars` +
        (readError ? ` (${readError})` : ""),
      upstream,
      ms: ms(),
    };
  } catch (e) {
    if (signal.aborted) return { kind: "hang", ms: ms() };
    return { kind: "unclean", detail: `fetch failed: ${(e as Error).message}`, upstream, ms: ms() };
  }
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

async function waitFor(what: string, f: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if (await f()) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const same = (a: Outcome, b: Outcome) =>
  a.kind === "completed" && b.kind === "completed" && a.reasoning === b.reasoning &&
  a.content === b.content && a.finish === b.finish;

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { keep: { type: "boolean" }, timeout: { type: "string" } },
  });
  const timeoutMs = Number(values.timeout ?? 300) * 1000;
  const nginx = await findNginx();
  if (!nginx) {
    console.log("scale test SKIPPED: nginx is not installed (apt-get install -y nginx), nothing was run");
    return 0;
  }
  const dir = await Deno.makeTempDir({ prefix: "lethe-scale-" });
  const replicas: Replica[] = [];
  let nginxProc: Deno.ChildProcess | null = null;
  try {
    console.log(
      `scale test: temp dir ${dir}; starting 2 replicas of src/server/main.ts (${DEFAULT_MODEL_DIR})`,
    );
    replicas.push(...await Promise.all([startReplica("replica-a", dir), startReplica("replica-b", dir)]));
    const [a, b] = replicas;
    console.log(`  replica A ${a.url}, replica B ${b.url}`);

    const qs = questions();
    console.log(`reference: the 16 requests against replica A alone`);
    let t = Date.now();
    const reference = await Promise.all(qs.map((q) => ask(a.url, q, timeoutMs)));
    const refOk = reference.filter((o) => o.kind === "completed").length;
    console.log(`  ${refOk}/16 completed in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    if (refOk !== 16) {
      console.log(`FAIL: the reference run did not complete: ${JSON.stringify(reference)}`);
      return 1;
    }

    const port = freePort();
    const conf = await writeNginxConfig(dir, `127.0.0.1:${port}`, [a.addr, b.addr]);
    const check = await new Deno.Command(nginx, { args: ["-p", dir, "-c", conf, "-t"], stderr: "piped" })
      .output();
    if (!check.success) {
      console.log(`FAIL: nginx -t rejected ${conf}:\n${new TextDecoder().decode(check.stderr)}`);
      return 1;
    }
    nginxProc = new Deno.Command(nginx, {
      args: ["-p", dir, "-c", conf, "-g", "daemon off;"],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    const lb = `http://127.0.0.1:${port}`;
    await waitFor("nginx", async () => (await fetch(`${lb}/health`)).ok, 20_000);
    console.log(`nginx ${lb} (least_conn over ${a.addr}, ${b.addr}; config ${conf})`);

    console.log("load: 16 concurrent requests through nginx; SIGKILL replica B once it is decoding");
    t = Date.now();
    const first = qs.map((q) => ask(lb, q, timeoutMs));
    // Kill B while it holds sequences and has generated some tokens for them.
    let killedWith = { active: 0, generated: 0, completedBefore: 0 };
    let settled = 0;
    first.forEach((p) => p.then(() => settled++));
    await waitFor("replica B to be decoding", async () => {
      const active = await metric(b.url, "lethe_active_sequences");
      const generated = await metric(b.url, "lethe_generated_tokens_total");
      killedWith = { active, generated, completedBefore: settled };
      return active > 0 && generated >= 150;
    }, timeoutMs);
    b.proc.kill("SIGKILL");
    await b.proc.status;
    const killAt = Date.now() - t;
    console.log(
      `  killed B at ${(killAt / 1000).toFixed(1)} s: ${killedWith.active} sequences decoding there, ` +
        `${killedWith.generated} tokens generated there, ${killedWith.completedBefore} requests settled before`,
    );
    console.log("  after the kill: 4 more requests through nginx");
    const after = qs.slice(0, 4).map((q) => ask(lb, q, timeoutMs));
    const outcomes = await Promise.all(first);
    const afterOutcomes = await Promise.all(after);
    const total = (Date.now() - t) / 1000;

    // Summary.
    const rows = [
      ...outcomes.map((o, i) => ({ o, i, ref: reference[i], tag: `#${i}` })),
      ...afterOutcomes.map((o, i) => ({ o, i, ref: reference[i], tag: `after#${i}` })),
    ];
    const failures: string[] = [];
    const counts: Record<string, number> = {};
    console.log("\n  request      mode    outcome      ms     upstream                 detail");
    for (const { o, i, ref, tag } of rows) {
      counts[o.kind] = (counts[o.kind] ?? 0) + 1;
      const up = "upstream" in o ? o.upstream || "-" : "-";
      let detail = "";
      if (o.kind === "completed") {
        const eq = same(o, ref);
        detail = `${eq ? "equals" : "DIFFERS FROM"} the reference; answer ${
          JSON.stringify(o.content.trim())
        }`;
        if (!eq) failures.push(`${tag}: output differs from the single-server reference`);
      } else if (o.kind === "http_error") {
        detail = `HTTP ${o.status}: ${o.body.replace(/\s+/g, " ").slice(0, 60)}`;
      } else if (o.kind === "error_event") detail = o.message;
      else if (o.kind === "cut" || o.kind === "unclean") detail = o.detail;
      if (o.kind === "hang") failures.push(`${tag}: no answer within ${timeoutMs / 1000} s`);
      if (o.kind === "unclean") failures.push(`${tag}: ${o.detail}`);
      if (tag.startsWith("after") && o.kind !== "completed") {
        failures.push(`${tag}: sent after the kill, failed`);
      }
      console.log(
        `  ${tag.padEnd(12)} ${(qs[i].stream ? "stream" : "json").padEnd(7)} ${o.kind.padEnd(12)} ` +
          `${String(o.ms).padStart(6)} ${up.padEnd(24)} ${detail}`,
      );
    }
    try {
      const log = await Deno.readTextFile(`${dir}/logs/error.log`);
      const n = (re: RegExp) => log.split("\n").filter((l) => re.test(l)).length;
      console.log(
        `  nginx error.log: ${
          n(/prematurely closed|reset by peer/)
        } upstream connections dropped mid-response, ` +
          `${n(/connect\(\) failed/)} connects refused (then sent on to the other replica)`,
      );
    } catch { /* no log */ }
    if (killedWith.active === 0) failures.push("replica B had no sequence decoding when killed");
    if (replicas[0].exited) failures.push("replica A exited");
    const completed = counts.completed ?? 0;
    console.log(
      `\nsummary: ${rows.length} requests (16 concurrent + 4 after the kill) in ${total.toFixed(1)} s; ` +
        Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ") +
        `; ${
          rows.filter((r) => r.o.kind === "completed" && same(r.o, r.ref)).length
        }/${completed} completed ` +
        `outputs equal the single-server reference`,
    );
    if (failures.length) {
      console.log(`FAIL:\n  ${failures.join("\n  ")}`);
      return 1;
    }
    console.log(
      "PASS: no hang, every failure clean, survivors' outputs equal a single server's, failover works",
    );
    return 0;
  } finally {
    if (nginxProc) {
      try {
        nginxProc.kill("SIGQUIT");
      } catch { /* gone */ }
      await nginxProc.status;
    }
    for (const r of replicas) {
      if (!r.exited) {
        try {
          r.proc.kill("SIGINT");
        } catch { /* gone */ }
      }
      await r.proc.status;
    }
    if (values.keep) console.log(`logs kept in ${dir}`);
    else await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) Deno.exit(await main());
