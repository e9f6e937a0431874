/**
 * Stop strings: one implementation (src/engine/stop.ts) behind the library, the CLI and the server. The earliest
 * match in the text wins whatever the order of the list; text held back while it could still start a stop
 * string never leaks; a stop string split across tokens is found.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { fileURLToPath } from "node:url";
import { Engine } from "../src/engine/engine.ts";
import { StopStrings } from "../src/engine/stop.ts";
import { startServer } from "../src/server/server.ts";
import { gpuContext } from "./helpers.ts";

const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const REASONER = fileURLToPath(new URL("../models/lethe-reasoner-tiny", import.meta.url));
const PROMPT = "<｜begin▁of▁sentence｜><｜User｜>add the numbers 85 23 67 41.<｜Assistant｜><think>\n";

/**
 * What stop strings must produce for text arriving in `chunks`: as soon as any stop string appears, the text ends
 * before the earliest match in everything seen so far (what vLLM does after each token).
 */
function expected(chunks: string[], stops: string[]): { text: string; stopped: boolean } {
  let text = "";
  for (const c of chunks) {
    text += c;
    let first = -1;
    for (const s of stops) {
      const at = s ? text.indexOf(s) : -1;
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) return { text: text.slice(0, first), stopped: true };
  }
  return { text, stopped: false };
}

/** A seeded PRNG (mulberry32). */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("StopStrings: earliest match wins in any list order; held-back text never leaks, at any chunking", () => {
  const s1 = new StopStrings([":", ","]);
  assertEquals(s1.push("a, b: c") + s1.flush(), "a");
  const s2 = new StopStrings([",", ":"]);
  assertEquals(s2.push("a: b, c") + s2.flush(), "a");
  // A stop string complete in one push with an earlier one: the earlier start wins.
  const s3 = new StopStrings(["def", "bc"]);
  assertEquals(s3.push("a") + s3.push("bcdefg") + s3.flush(), "a");
  const r = rng(7);
  const alphabet = "ab:,\u{1F600}x";
  for (let trial = 0; trial < 400; trial++) {
    const chars = [...Array(1 + Math.floor(r() * 30))].map(() => [...alphabet][Math.floor(r() * 6)]);
    const text = chars.join("");
    const stops = [...Array(1 + Math.floor(r() * 3))].map(() =>
      [...Array(1 + Math.floor(r() * 3))].map(() => [...alphabet][Math.floor(r() * 6)]).join("")
    );
    const chunks: string[] = [];
    for (let i = 0; i < text.length;) {
      const n = 1 + Math.floor(r() * 4);
      chunks.push(text.slice(i, i + n));
      i += n;
    }
    const want = expected(chunks, stops);
    const s = new StopStrings(stops);
    let out = "";
    for (const c of chunks) {
      out += s.push(c);
      // Whatever was returned so far is final: a prefix of the answer.
      assert(
        want.text.startsWith(out),
        `leaked ${JSON.stringify(out)} for ${JSON.stringify([chunks, stops])}`,
      );
    }
    out += s.flush();
    assertEquals([out, s.stopped], [want.text, want.stopped], JSON.stringify([chunks, stops]));
    assertEquals(s.text, out);
  }
});

/**
 * Stop strings from the model's greedy text: `early` split across two tokens with `late` (later in the text)
 * listed first; and two characters of one token, the later listed first (`sameToken`, cutting at `sameCut`).
 */
async function pickStops(engine: Engine) {
  const free = await engine.generate(PROMPT, { maxTokens: 60 });
  const tok = engine.tokenizer!;
  const pieces = free.ids.map((id) => tok.decode([id], { skipSpecialTokens: true }));
  const text = free.text;
  let early: string | null = null;
  let sameToken: string[] | null = null;
  let sameCut = -1;
  for (let k = 0, at = 0; k < pieces.length; at += pieces[k++].length) {
    const p = pieces[k];
    const cut = at + p.length;
    if (!early && cut > 12 && cut < text.length - 20 && text.slice(cut - 2, cut + 2).trim().length === 4) {
      early = text.slice(cut - 2, cut + 2);
    }
    for (let i = 0; i < p.length && !sameToken; i++) {
      for (let j = i + 1; j < p.length && !sameToken; j++) {
        if (p[i] !== p[j] && text.indexOf(p[i]) === at + i && text.indexOf(p[j]) === at + j) {
          sameToken = [p[j], p[i]];
          sameCut = at + i;
        }
      }
    }
  }
  assert(early !== null, `no token boundary to split a stop string across in ${JSON.stringify(text)}`);
  assert(sameToken !== null, `no token with two first-seen characters in ${JSON.stringify(text)}`);
  const late = text.slice(text.length - 6);
  assert(text.indexOf(early) < text.indexOf(late), "the stops are not in text order");
  return { free: text, early, late, sameToken, sameCut };
}

Deno.test("stop strings in the library, the CLI and the server: the earliest wins, split across tokens", async (t) => {
  const engine = await Engine.load(REASONER, { ctx: await gpuContext(), progress: false });
  const { free, early, late, sameToken, sameCut } = await pickStops(engine);
  const want = free.slice(0, free.indexOf(early));
  assert(want.length < free.length - 6, "the early stop did not cut the text");

  await t.step("library: either list order", async () => {
    for (const stop of [[late, early], [early, late]]) {
      const r = await engine.generate(PROMPT, { maxTokens: 60, stop });
      assertEquals([r.text, r.finishReason], [want, "stop"], JSON.stringify(stop));
    }
    // Both stops arrive with the same token: the one that starts first wins although it is listed second.
    const r = await engine.generate(PROMPT, { maxTokens: 60, stop: sameToken });
    assertEquals(r.text, free.slice(0, sameCut), JSON.stringify(sameToken));
  });

  await t.step("CLI: --stop twice", async () => {
    for (const [stop, text] of [[[late, early], want], [sameToken, free.slice(0, sameCut)]] as const) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          CLI,
          "--prompt",
          PROMPT,
          "--max-tokens",
          "60",
        ]
          .concat(["--stop", stop[0], "--stop", stop[1], "--json", "--quiet"]),
        env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1" },
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assertEquals(out.code, 0, stderr);
      const j = JSON.parse(new TextDecoder().decode(out.stdout));
      assertEquals([j.text, j.finish_reason], [text, "stop"], JSON.stringify(stop));
    }
  });

  await t.step("server: completions, plain and streamed", async () => {
    const server = startServer(engine, { modelId: "tiny" });
    try {
      const body = { prompt: PROMPT, max_tokens: 60, temperature: 0, stop: [late, early] };
      const r = await fetch(`${server.url}/v1/completions`, { method: "POST", body: JSON.stringify(body) });
      const j = await r.json();
      assertEquals([j.choices[0].text, j.choices[0].finish_reason], [want, "stop"]);
      const s = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ ...body, stream: true }),
      });
      let text = "";
      for (const line of (await s.text()).split("\n")) {
        if (!line.startsWith("data: {")) continue;
        text += JSON.parse(line.slice(6)).choices[0]?.text ?? "";
      }
      assertEquals(text, want);
      const same = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ ...body, stop: sameToken }),
      });
      assertEquals((await same.json()).choices[0].text, free.slice(0, sameCut));
    } finally {
      await server.shutdown();
    }
  });
  engine.destroy();
});
