/**
 * The KV options schema drives every front end: the CLI flags (and --help, of `generate` and `serve`), the
 * server's request fields, kv_defaults.json keys and the library's validation agree on what they accept, and
 * each names the setting its own way.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import { fileURLToPath } from "node:url";
import { parseCli } from "../src/cli.ts";
import { parseKvDefaults } from "../src/kv/defaults.ts";
import {
  checkKvOptions,
  KV_FLAG_OPTIONS,
  KV_SETTINGS,
  kvLibraryName,
  KvOptionError,
  kvSetting,
  type KvSettingName,
} from "../src/kv/options.ts";
import { createPolicy } from "../src/kv/policies/mod.ts";
import {
  DEFAULT_KV_OPTIONS,
  type KvPolicyOptions,
  POLICY_NAMES,
  validateKvOptions,
} from "../src/kv/policy.ts";
import { ApiError, parseCompletion, type RequestDefaults } from "../src/server/protocol.ts";

const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const SERVE = fileURLToPath(new URL("../src/server/main.ts", import.meta.url));
const STORIES_DIR = fileURLToPath(new URL("../models/stories260K", import.meta.url));

const REQUEST_DEFAULTS: RequestDefaults = {
  modelId: "m",
  contextLength: 512,
  vocabSize: 512,
  maxTokens: 16,
  kv: {},
};

/** The numeric settings: flag, field, and values each front end must accept or reject alike. */
const TABLE: { name: KvSettingName; flag: string; field: string; good: number[]; bad: unknown[] }[] = [
  {
    name: "budget",
    flag: "--kv-budget",
    field: "kv_budget",
    good: [6, 256, 1e9],
    bad: [0, -1, 2.5, 1e9 + 1, 1e308],
  },
  { name: "sink", flag: "--kv-sink", field: "kv_sink", good: [0, 4, 254], bad: [-1, 0.5, 1e10] },
  {
    name: "recentRatio",
    flag: "--kv-recent-ratio",
    field: "kv_recent_ratio",
    good: [0, 0.3, 0.999],
    bad: [-0.1, 1, 1.5],
  },
  { name: "window", flag: "--kv-window", field: "kv_window", good: [1, 32, 1e9], bad: [0, 1.5, 2e9] },
  {
    name: "lethe.tau",
    flag: "--lethe-tau",
    field: "lethe_tau",
    good: [1.0001, 2, 1e6],
    bad: [1, 0, -3, 1e6 + 1, 1e308],
  },
  {
    name: "lethe.segments",
    flag: "--lethe-segments",
    field: "lethe_segments",
    good: [1, 8, 1e9],
    bad: [0, 2.5, 1e12],
  },
  {
    name: "lethe.gamma",
    flag: "--lethe-gamma",
    field: "lethe_gamma",
    good: [1e-9, 0.95, 1],
    bad: [0, -0.5, 1.01],
  },
  {
    name: "lethe.interval",
    flag: "--lethe-interval",
    field: "lethe_interval",
    good: [1, 4],
    bad: [0, 3.5, -2],
  },
  {
    name: "lethe.adaptiveRecent",
    flag: "--lethe-adaptive-recent",
    field: "lethe_adaptive_recent",
    good: [0, 0.5, 1],
    bad: [-0.1, 1.01],
  },
  { name: "rkvLambda", flag: "--rkv-lambda", field: "rkv_lambda", good: [0, 0.1, 1], bad: [-0.1, 1.01] },
  {
    name: "rkvThreshold",
    flag: "--rkv-threshold",
    field: "rkv_threshold",
    good: [-1, 0.5, 1],
    bad: [-1.5, 1.01],
  },
];

/** Values of the wrong JSON type: every JSON front end and the library reject them. */
const WRONG_TYPES: unknown[] = ["64", true, [1], { x: 1 }];
/** Arguments that are not numbers: the CLI rejects them. */
const NOT_NUMBERS = ["x", "", " ", "1e", "Infinity", "NaN", "4 4"];

function read(o: KvPolicyOptions, name: KvSettingName): unknown {
  const [a, b] = name.split(".");
  return b
    ? (o.lethe as unknown as Record<string, unknown>)[b]
    : (o as unknown as Record<string, unknown>)[a];
}

function withSetting(name: KvSettingName, x: unknown): KvPolicyOptions {
  const o = { ...DEFAULT_KV_OPTIONS, lethe: { ...DEFAULT_KV_OPTIONS.lethe } };
  const [a, b] = name.split(".");
  if (b) (o.lethe as unknown as Record<string, unknown>)[b] = x;
  else (o as unknown as Record<string, unknown>)[a] = x;
  return o;
}

/** Runs a front end; returns the error (null when it accepted). */
function attempt(f: () => void): Error | null {
  try {
    f();
    return null;
  } catch (e) {
    return e as Error;
  }
}

const request = (extra: Record<string, unknown>) =>
  parseCompletion({ prompt: [1], kv_policy: "lethe", ...extra }, REQUEST_DEFAULTS);

Deno.test("kv options: the schema lists every setting once, under one flag, field and file key", () => {
  assertEquals(KV_SETTINGS.map((s) => s.name), [
    "policy",
    "dtype",
    ...TABLE.map((r) => r.name),
  ]);
  const dtype = kvSetting("dtype");
  assertEquals([dtype.flag, dtype.field, dtype.fileKey, dtype.default], [
    "--kv-dtype",
    "kv_dtype",
    "kv_dtype",
    "f16",
  ]);
  for (const r of TABLE) {
    const s = kvSetting(r.name);
    assertEquals([s.flag, s.field, s.fileKey], [r.flag, r.field, r.field], r.name);
    assert(s.doc.length > 0 && !s.doc.includes("\n"), `${r.name}: one-line doc`);
  }
  const policy = kvSetting("policy");
  assertEquals([policy.flag, policy.field, policy.fileKey, policy.default], [
    "--kv",
    "kv_policy",
    null,
    "full",
  ]);
  assertEquals(Object.keys(KV_FLAG_OPTIONS).sort(), KV_SETTINGS.map((s) => s.flag.slice(2)).sort());
  for (const r of TABLE) assertEquals(kvSetting(r.name).default, read(DEFAULT_KV_OPTIONS, r.name), r.name);
});

Deno.test("kv options: CLI flag, request field, file key and library agree on every good and bad value", () => {
  for (const r of TABLE) {
    for (const x of [...r.good.map((v) => [v, true] as const), ...r.bad.map((v) => [v, false] as const)]) {
      const [value, ok] = x;
      const what = `${r.name} = ${JSON.stringify(value)}`;
      // CLI: the flag's text (`=`: parseArgs takes "-1" after a space for a flag).
      let cli: ReturnType<typeof parseCli> | null = null;
      const cliErr = attempt(() => (cli = parseCli([`${r.flag}=${value}`])));
      // Server: the request field, with a pruning policy so the budget/sink rule applies as in the library.
      let req: ReturnType<typeof request> | null = null;
      const reqErr = attempt(() => (req = request({ [r.field]: value })));
      // kv_defaults.json: the key.
      let file: KvPolicyOptions | null = null;
      const fileErr = attempt(() => (file = parseKvDefaults(JSON.stringify({ [r.field]: value }), "f")));
      // Library: full options with this one setting changed.
      const libErr = attempt(() => validateKvOptions(withSetting(r.name, value)));
      assertEquals(
        { cli: cliErr === null, server: reqErr === null, file: fileErr === null, library: libErr === null },
        { cli: ok, server: ok, file: ok, library: ok },
        `${what}: ${[cliErr, reqErr, fileErr, libErr].map((e) => e?.message).join(" | ")}`,
      );
      if (ok) {
        const kv = cli!.options.kv;
        const parsed = r.name.startsWith("lethe.")
          ? (kv.lethe as Record<string, number>)[r.name.slice(6)]
          : (kv as Record<string, unknown>)[r.name];
        assertEquals(parsed, value, `${what}: CLI`);
        assertEquals(read(req!.kv as KvPolicyOptions, r.name), value, `${what}: server`);
        assertEquals(read(file!, r.name), value, `${what}: file`);
        continue;
      }
      assert(cliErr!.message.startsWith(`${r.flag} must be `), `${what}: CLI says ${cliErr!.message}`);
      assert(
        cliErr!.message.endsWith(`got "${value}"`),
        `${what}: CLI quotes the argument: ${cliErr!.message}`,
      );
      assert(reqErr instanceof ApiError, `${what}: ${reqErr}`);
      assertEquals(reqErr.param, r.field, what);
      // As OpenAI-style APIs do: a fraction where an integer belongs is a type error, else a value error.
      const fraction = kvSetting(r.name).type === "integer" && !Number.isInteger(value);
      assertEquals(reqErr.code, fraction ? "invalid_type" : "invalid_value", what);
      assert(reqErr.message.startsWith(`'${r.field}' must be `), `${what}: server says ${reqErr.message}`);
      assert(!reqErr.message.includes("--"), `${what}: a request error names no flag: ${reqErr.message}`);
      assert(
        fileErr!.message.startsWith(`f: invalid KV option: ${r.flag}: "${r.field}" must be `),
        `${what}: file says ${fileErr!.message}`,
      );
      assert(libErr instanceof KvOptionError, what);
      assert(
        libErr.message.startsWith(`invalid KV option: kv.${r.name} must be `),
        `${what}: library says ${libErr.message}`,
      );
    }
    for (const value of WRONG_TYPES) {
      const what = `${r.name} = ${JSON.stringify(value)}`;
      const reqErr = attempt(() => request({ [r.field]: value }));
      assert(reqErr instanceof ApiError, `${what}: ${reqErr}`);
      assertEquals([reqErr.param, reqErr.code], [r.field, "invalid_type"], what);
      assertThrows(
        () => parseKvDefaults(JSON.stringify({ [r.field]: value }), "f"),
        new RegExp(`f: invalid KV option: ${r.flag}: "${r.field}" must be`),
        what,
      );
      assertThrows(() => validateKvOptions(withSetting(r.name, value)), KvOptionError, what);
    }
    for (const text of NOT_NUMBERS) {
      assertThrows(
        () => parseCli([`${r.flag}=${text}`]),
        new RegExp(`^Error: ${r.flag} must be .*, got "${text}"$`),
      );
    }
  }
});

Deno.test("kv options: the policy is a name from the list; a model's kv_defaults.json may not choose it", () => {
  for (const name of POLICY_NAMES) {
    assertEquals(parseCli(["--kv", name]).options.kv.policy, name);
    assertEquals(request({ kv_policy: name }).kv.policy, name);
    assertEquals(createPolicy(name, DEFAULT_KV_OPTIONS).name, name);
  }
  assertEquals(parseCli([]).options.kv.policy, "full");
  for (const bad of ["bogus", "", "FULL"]) {
    assertThrows(() => parseCli(["--kv", bad]), new RegExp(`--kv must be one of full, .*, got "${bad}"`));
    const e = attempt(() => request({ kv_policy: bad }));
    assert(e instanceof ApiError);
    assertEquals([e.param, e.code], ["kv_policy", "invalid_value"]);
    assert(e.message.startsWith("'kv_policy' must be one of full, streaming"), e.message);
    assertThrows(() => createPolicy(bad, DEFAULT_KV_OPTIONS));
  }
  const wrongType = attempt(() => request({ kv_policy: 3 }));
  assert(wrongType instanceof ApiError);
  assertEquals([wrongType.param, wrongType.code], ["kv_policy", "invalid_type"]);
  assertThrows(
    () => parseKvDefaults('{"kv_policy": "lethe"}', "f"),
    /^Error: f: unknown key "kv_policy" \(a run chooses its policy, not the model\); accepted: kv_dtype, kv_budget, kv_sink, kv_recent_ratio, kv_window, lethe_tau, lethe_segments, lethe_gamma, lethe_interval, lethe_adaptive_recent, rkv_lambda, rkv_threshold, note$/,
  );
});

Deno.test("kv options: the budget must exceed the sinks by 2 for pruning policies; each front end says so", () => {
  // Server: the request's own fields, or the request's over the server's defaults; the error blames kv_budget.
  for (
    const [body, defaults] of [
      [{ kv_budget: 5 }, {}],
      [{ kv_sink: 255 }, {}],
      [{ kv_sink: 15 }, { budget: 16 }],
      [{ kv_budget: 8 }, { sink: 7 }],
    ] as const
  ) {
    const e = attempt(() =>
      parseCompletion({ prompt: [1], kv_policy: "h2o", ...body }, { ...REQUEST_DEFAULTS, kv: defaults })
    );
    assert(e instanceof ApiError, JSON.stringify(body));
    assertEquals([e.param, e.code], ["kv_budget", "invalid_value"]);
    assert(
      /^'kv_budget' must exceed 'kv_sink' by at least 2, got \d+ with 'kv_sink' \d+$/.test(e.message),
      e.message,
    );
  }
  // FullKV keeps everything: budget and sink do not matter (createPolicy never checked them).
  assertEquals(request({ kv_policy: "full", kv_budget: 5 }).kv.budget, 5);
  assertEquals(request({ kv_budget: 6, kv_sink: 4 }).kv.budget, 6);
  assertThrows(
    () => parseKvDefaults('{"kv_sink": 255}', "f"),
    /^Error: f: invalid KV option: --kv-budget: "kv_budget" must exceed "kv_sink" by at least 2, got 256 with "kv_sink" 255$/,
  );
  assertThrows(
    () => validateKvOptions({ ...DEFAULT_KV_OPTIONS, budget: 5 }),
    /^KvOptionError: invalid KV option: kv.budget must exceed kv.sink by at least 2, got 5 with kv.sink 4$/,
  );
  assertThrows(() => createPolicy("lethe", { ...DEFAULT_KV_OPTIONS, budget: 5 }), KvOptionError);
  createPolicy("full", { ...DEFAULT_KV_OPTIONS, budget: 5 });
});

Deno.test("kv options: each front end words the same error its own way", () => {
  const e = new KvOptionError(kvSetting("lethe.gamma"), 1.5, "range");
  assertEquals(e.message, "invalid KV option: kv.lethe.gamma must be a number in (0, 1], got 1.5");
  assertEquals(e.format((s) => s.flag), "--lethe-gamma must be a number in (0, 1], got 1.5");
  assertEquals(e.format((s) => `'${s.field}'`), "'lethe_gamma' must be a number in (0, 1], got 1.5");
  assertEquals(kvLibraryName(kvSetting("budget")), "kv.budget");
  assertEquals(
    new KvOptionError(kvSetting("budget"), "x", "type").format((s) => s.flag),
    '--kv-budget must be an integer in [1, 1000000000], got "x"',
  );
});

/** Runs a Deno script; returns its exit code and output. */
async function run(
  script: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-no-legacy-abort",
      "--allow-read",
      "--allow-env",
      "--allow-net",
      script,
      ...args,
    ],
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

Deno.test("kv options: --help of generate and serve lists every KV flag with its default", async () => {
  const defaults: Record<string, string> = {
    "--kv": "full",
    "--kv-dtype": "f16",
    ...Object.fromEntries(TABLE.map((r) => [r.flag, String(read(DEFAULT_KV_OPTIONS, r.name))])),
  };
  assertEquals(defaults["--kv-budget"], "256");
  for (const script of [CLI, SERVE]) {
    const r = await run(script, ["--help"]);
    assertEquals(r.code, 0, r.stderr);
    for (const s of KV_SETTINGS) {
      const line = new RegExp(
        `^  ${esc(s.flag)} ${s.metavar} +\\S.*\\(default ${esc(defaults[s.flag])}\\)$`,
        "m",
      );
      assert(line.test(r.stdout), `${script}: ${s.flag}\n${r.stdout}`);
    }
  }
});

Deno.test("kv options: generate and serve reject a bad KV flag with exit code 2, naming the flag", async () => {
  for (const script of [CLI, SERVE]) {
    for (
      const [args, want] of [
        [["--kv-sink=-1"], '--kv-sink must be an integer in [0, 1000000000], got "-1"'],
        [["--lethe-tau", "1e308"], '--lethe-tau must be a number in (1, 1000000], got "1e308"'],
        [
          ["--kv", "nope"],
          '--kv must be one of full, streaming, h2o, snapkv, pyramidkv, lethe, rkv, got "nope"',
        ],
        // Checked before the model loads, over its kv_defaults.json (stories260K has none: budget 256).
        [
          ["--kv", "lethe", "--kv-sink", "255", "--model", STORIES_DIR, "--prompt-ids", "1"],
          "--kv-budget must exceed --kv-sink by at least 2, got 256 with --kv-sink 255",
        ],
      ] as const
    ) {
      // serve takes no --prompt-ids.
      const a = script === SERVE
        ? args.filter((x, i) => x !== "--prompt-ids" && args[i - 1] !== "--prompt-ids")
        : args;
      const r = await run(script, [...a]);
      assertEquals(r.code, 2, `${script} ${a.join(" ")}: ${r.stderr}`);
      assert(r.stderr.includes(want), `${script} ${a.join(" ")}: ${r.stderr}`);
      assert(!r.stderr.includes("    at "), "no stack trace");
    }
  }
});

Deno.test("kv options: the KV dtype is a name from the list, through the CLI, a request, kv_defaults.json and the library", () => {
  for (const good of ["f16", "f32", "int8"]) {
    assertEquals(parseCli(["--kv-dtype", good]).options.kv?.dtype, good);
    assertEquals(request({ kv_dtype: good }).kv.dtype, good);
    assertEquals(parseKvDefaults(`{"kv_dtype": "${good}"}`, "f").dtype, good);
  }
  for (const bad of ["fp8", "", "F16", "bf16"]) {
    assertThrows(
      () => parseCli(["--kv-dtype", bad]),
      new RegExp(`--kv-dtype must be one of f16, f32, int8, got "${bad}"`),
    );
    const e = attempt(() => request({ kv_dtype: bad }));
    assert(e instanceof ApiError);
    assertEquals([e.param, e.code], ["kv_dtype", "invalid_value"]);
    assertThrows(
      () => parseKvDefaults(`{"kv_dtype": "${bad}"}`, "f"),
      /"kv_dtype" must be one of f16, f32, int8/,
    );
    assertThrows(
      () => checkKvOptions({ ...DEFAULT_KV_OPTIONS, dtype: bad as never }),
      /kv\.dtype must be one of/,
    );
  }
  const wrongType = attempt(() => request({ kv_dtype: 8 }));
  assert(wrongType instanceof ApiError);
  assertEquals([wrongType.param, wrongType.code], ["kv_dtype", "invalid_type"]);
});
