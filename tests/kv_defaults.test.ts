/**
 * A model's kv_defaults.json: parsed strictly, applied wherever a setting is not given (library, CLI), and
 * overridden by anything given.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import { fileURLToPath } from "node:url";
import { Engine } from "../src/engine/engine.ts";
import { KV_DEFAULTS_FILE, loadKvDefaults, parseKvDefaults } from "../src/kv/defaults.ts";
import { DEFAULT_KV_OPTIONS } from "../src/kv/policy.ts";
import { startServer } from "../src/server/server.ts";
import { gpuContext } from "./helpers.ts";
import { STORIES_DIR } from "./support/models.ts";

const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const REASONER = fileURLToPath(new URL("../models/lethe-reasoner-tiny", import.meta.url));

/** A copy of stories260K with the given kv_defaults.json text. */
async function storiesWith(defaults: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "lethe-kv-defaults-" });
  for (const f of ["config.json", "model.safetensors"]) {
    await Deno.copyFile(`${STORIES_DIR}/${f}`, `${dir}/${f}`);
  }
  await Deno.writeTextFile(`${dir}/${KV_DEFAULTS_FILE}`, defaults);
  return dir;
}

Deno.test("kv_defaults.json: keys set their options over the documented defaults; bad files name the problem", () => {
  const o = parseKvDefaults(
    '{"kv_recent_ratio": 0.7, "lethe_gamma": 0.9, "kv_budget": 96, "note": "x"}',
    "f",
  );
  assertEquals(o, {
    ...DEFAULT_KV_OPTIONS,
    budget: 96,
    recentRatio: 0.7,
    lethe: { ...DEFAULT_KV_OPTIONS.lethe, gamma: 0.9 },
  });
  assertEquals(DEFAULT_KV_OPTIONS.lethe.gamma, 0.95, "the shared defaults were modified");
  assertThrows(() => parseKvDefaults('{"recent": 0.7}', "f"), /f: unknown key "recent"/);
  assertThrows(() => parseKvDefaults('{"kv_budget": "64"}', "f"), /"kv_budget" must be an integer/);
  assertThrows(() => parseKvDefaults('{"kv_sink": 2.5}', "f"), /"kv_sink" must be an integer/);
  assertThrows(() => parseKvDefaults('{"lethe_gamma": 1.5}', "f"), /f: invalid KV option: --lethe-gamma/);
  assertThrows(() => parseKvDefaults("[1]", "f"), /f: not an object/);
  assertThrows(() => parseKvDefaults("{", "f"), /f: not JSON/);
});

Deno.test("kv_defaults.json: the bundled reasoner's parses; a model without one gets the documented defaults", async () => {
  const r = await loadKvDefaults(REASONER);
  assertEquals(r.recentRatio, 0.7);
  assertEquals(r.lethe.gamma, 0.9);
  assertEquals(await loadKvDefaults(STORIES_DIR), DEFAULT_KV_OPTIONS);
});

Deno.test("kv_defaults.json: the engine's sequences use it where options are not given", async () => {
  const dir = await storiesWith('{"kv_budget": 16, "kv_recent_ratio": 0.5, "lethe_gamma": 0.9}');
  try {
    const engine = await Engine.load(dir, { ctx: await gpuContext(), progress: false });
    const seq = engine.newSequence({ policy: "lethe" });
    assertEquals(seq.policy.options.budget, 16);
    assertEquals(seq.policy.options.recentRatio, 0.5);
    assertEquals(seq.policy.options.lethe.gamma, 0.9);
    assertEquals(seq.policy.options.lethe.tau, DEFAULT_KV_OPTIONS.lethe.tau);
    seq.kv.destroy();
    const given = engine.newSequence({ policy: "lethe", recentRatio: 0.2, lethe: { gamma: 0.8 } });
    assertEquals(given.policy.options.recentRatio, 0.2);
    assertEquals(given.policy.options.lethe.gamma, 0.8);
    assertEquals(given.policy.options.budget, 16);
    given.kv.destroy();
    // The server: a request that names no budget gets the model's.
    const server = startServer(engine, {});
    try {
      const res = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ prompt: [1, 400], max_tokens: 60, temperature: 0, kv_policy: "lethe" }),
      });
      assertEquals(res.status, 200);
      await res.json();
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const rounds = Number(/^lethe_prune_rounds_total(?:\{[^}]*\})? (\S+)$/m.exec(metrics)![1]);
      assert(rounds > 0, "no pruning round: the server ignored the model's budget");
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kv_defaults.json: the CLI takes unset KV flags from it, given flags win, a bad file is an error", async () => {
  const run = async (model: string, extra: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        CLI,
        "--model",
        model,
        "--prompt-ids",
        "1,400",
      ]
        .concat(["--max-tokens", "60", "--json", "--kv", "lethe", ...extra]),
      env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1" },
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  const dir = await storiesWith('{"kv_budget": 16}');
  try {
    // The file's budget of 16 prunes a 62-token sequence; the documented 256 would not.
    const fromFile = await run(dir, []);
    assertEquals(fromFile.code, 0, fromFile.stderr);
    const s = JSON.parse(fromFile.stdout).stats;
    assert(s.prune_rounds > 0, "no pruning round: the file's budget was not applied");
    assert(Math.max(...s.kv_tokens_per_layer) <= 16 + 4, JSON.stringify(s.kv_tokens_per_layer));
    const flag = await run(dir, ["--kv-budget", "256"]);
    assertEquals(flag.code, 0, flag.stderr);
    assertEquals(JSON.parse(flag.stdout).stats.prune_rounds, 0);
    await Deno.writeTextFile(`${dir}/${KV_DEFAULTS_FILE}`, '{"lethe_gama": 0.9}');
    const bad = await run(dir, []);
    assertEquals(bad.code, 1);
    assert(/kv_defaults\.json: unknown key "lethe_gama"/.test(bad.stderr), bad.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
