/**
 * The mutation catalogue: each kind edits one file (or the set of files) of a model directory held in
 * memory, drawing every choice from the case's {@link Rng}. A mutator returns what it did (for the report and
 * for replaying by eye), or null when it does not apply to this directory (e.g. a tokenizer edit on a model
 * without tokenizer.json, or a header edit on a safetensors file an earlier mutation already broke); the
 * case builder then draws another kind.
 */
import { KV_SETTINGS } from "../../src/kv/options.ts";
import type { Rng } from "./rng.ts";
import {
  buildSt,
  concat,
  type HeaderEntry,
  headerLength,
  lengthPrefix,
  offsetsOf,
  parseSt,
  shardSt,
  type StFile,
  tensorNames,
} from "./st.ts";

/** The file names the loaders read (shards are named model-0000i-of-0000n.safetensors). */
export const CONFIG = "config.json";
export const WEIGHTS = "model.safetensors";
export const INDEX = "model.safetensors.index.json";
export const TOKENIZER = "tokenizer.json";
export const TOKENIZER_CONFIG = "tokenizer_config.json";
export const KV_DEFAULTS = "kv_defaults.json";

/** A base model directory: its name (for messages) and its files' bytes. */
export interface BaseModel {
  name: string;
  files: ReadonlyMap<string, Uint8Array>;
}

/** One applied mutation. */
export interface Mutation {
  /** The catalogue kind, `area.what` (e.g. `config.huge`, `st.offsets`). */
  kind: string;
  /** The file it changed ("*" for the whole directory). */
  file: string;
  /** What exactly it did. */
  detail: string;
}

/** What a mutator works on: the case's files (edited in place), its base and the other bases. */
export interface MutationContext {
  rng: Rng;
  files: Map<string, Uint8Array>;
  base: BaseModel;
  bases: readonly BaseModel[];
}

type Applied = { file: string; detail: string } | null;

/** A mutation kind of the catalogue. */
export interface MutationKind {
  kind: string;
  /** Relative draw weight. */
  weight: number;
  apply(c: MutationContext): Applied;
}

// ---------------------------------------------------------------------------------------------------------
// JSON helpers

const RAW = "@@raw@@";

/** A value written verbatim into JSON text (`1e999` parses as Infinity; JSON.stringify cannot write it). */
function raw(literal: string): string {
  return `${RAW}${literal}${RAW}`;
}

/** JSON text with {@link raw} literals substituted. */
function stringify(value: unknown, indent?: number): string {
  const text = JSON.stringify(value, null, indent);
  return text.replace(new RegExp(`"${RAW}(.*?)${RAW}"`, "g"), "$1");
}

/** How a value is shown in a detail line. */
function show(v: unknown): string {
  const s = typeof v === "string" && v.startsWith(RAW) ? v.slice(RAW.length, -RAW.length) : JSON.stringify(v);
  return s === undefined ? "undefined" : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

const utf8 = new TextEncoder();
const decoder = new TextDecoder();

/** A file's JSON object, or null when absent, not JSON, or not an object. */
function readJson(c: MutationContext, file: string): Record<string, unknown> | null {
  const bytes = c.files.get(file);
  if (!bytes) return null;
  try {
    const v = JSON.parse(decoder.decode(bytes));
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

function writeJson(c: MutationContext, file: string, value: unknown): void {
  c.files.set(file, utf8.encode(stringify(value, 1)));
}

/** Values of the wrong type for any field. */
const WRONG_TYPES: readonly unknown[] = ["192", "", true, false, null, [192], [], { value: 192 }, {}];

/** Numbers far outside any sane range (raw literals: ±Infinity through JSON's 1e999). */
const HUGE: readonly unknown[] = [
  1e8,
  2 ** 31,
  2 ** 32 + 1,
  2 ** 53,
  2 ** 53 + 2,
  1e15,
  1e308,
  raw("1e999"),
  raw("123456789012345678901234567890"),
];
const NEGATIVE: readonly unknown[] = [-1, -2, -192, -1e8, raw("-0"), raw("-1e999")];
const FRACTIONAL: readonly unknown[] = [0.5, 1.5, 191.5, 4.000001, 1e-300, raw("5e-324")];
const NUMERIC_STRINGS: readonly unknown[] = ["NaN", "Infinity", "-Infinity", "1e8", "192", "0x10", " 4"];

/** Garbles a JSON text: truncation, a flipped byte, a non-JSON or non-object document. */
function garbleJson(c: MutationContext, file: string): Applied {
  const bytes = c.files.get(file);
  const r = c.rng;
  const how = r.pick([
    "truncate",
    "flip-byte",
    "empty",
    "array",
    "null",
    "number",
    "string",
    "trailing-comma",
    "bom",
    "invalid-utf8",
    "deep-nesting",
    "nul",
  ]);
  let out: Uint8Array;
  switch (how) {
    case "truncate": {
      if (!bytes || bytes.byteLength < 2) return null;
      const at = r.int(1, bytes.byteLength - 1);
      out = bytes.slice(0, at);
      c.files.set(file, out);
      return { file, detail: `truncated to ${at} of ${bytes.byteLength} bytes` };
    }
    case "flip-byte": {
      if (!bytes || bytes.byteLength === 0) return null;
      out = bytes.slice();
      const at = r.int(0, out.byteLength - 1);
      out[at] = r.pick([0x00, 0x22, 0x2c, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0xff, r.int(0, 255)]);
      c.files.set(file, out);
      return { file, detail: `byte ${at} set to 0x${out[at].toString(16)}` };
    }
    case "empty":
      out = new Uint8Array(0);
      break;
    case "array":
      out = utf8.encode("[1, 2, 3]");
      break;
    case "null":
      out = utf8.encode("null");
      break;
    case "number":
      out = utf8.encode("42");
      break;
    case "string":
      out = utf8.encode('"config"');
      break;
    case "trailing-comma": {
      if (!bytes) return null;
      const text = decoder.decode(bytes).replace(/\}\s*$/, ",}");
      out = utf8.encode(text);
      break;
    }
    case "bom":
      if (!bytes) return null;
      out = concat(new Uint8Array([0xef, 0xbb, 0xbf]), bytes);
      break;
    case "invalid-utf8": {
      if (!bytes || bytes.byteLength < 4) return null;
      out = bytes.slice();
      const at = r.int(1, out.byteLength - 3);
      out.set([0xc3, 0x28, 0xa0], at);
      break;
    }
    case "deep-nesting": {
      const depth = r.pick([1000, 100_000, 1_000_000]);
      out = utf8.encode(`{"a": ${"[".repeat(depth)}${"]".repeat(depth)}}`);
      c.files.set(file, out);
      return { file, detail: `nesting ${depth} deep` };
    }
    case "nul":
      out = new Uint8Array(r.int(1, 64));
      break;
    default:
      return null;
  }
  c.files.set(file, out);
  return { file, detail: how };
}

/** Sets `key` of a JSON file's object to `value`; null when the file is not an object. */
function setField(c: MutationContext, file: string, key: string, value: unknown, what: string): Applied {
  const json = readJson(c, file);
  if (!json) return null;
  json[key] = value;
  writeJson(c, file, json);
  return { file, detail: `${key} ${what} ${show(value)}` };
}

// ---------------------------------------------------------------------------------------------------------
// config.json

const CONFIG_NUMERIC = [
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
  "vocab_size",
  "max_position_embeddings",
  "rms_norm_eps",
  "rope_theta",
  "bos_token_id",
  "eos_token_id",
];

/** A numeric config field (present ones preferred; head_dim may be added). */
function configNumericField(c: MutationContext): string {
  return c.rng.chance(0.3) ? c.rng.pick(["num_hidden_layers", "vocab_size"]) : c.rng.pick(CONFIG_NUMERIC);
}

function configNumber(c: MutationContext, key: string): number | null {
  const v = readJson(c, CONFIG)?.[key];
  return typeof v === "number" ? v : null;
}

const CONFIG_KINDS: MutationKind[] = [
  {
    kind: "config.delete",
    weight: 1,
    apply(c) {
      const json = readJson(c, CONFIG);
      if (!json) return null;
      const key = c.rng.pick(Object.keys(json));
      delete json[key];
      writeJson(c, CONFIG, json);
      return { file: CONFIG, detail: `deleted ${key}` };
    },
  },
  {
    kind: "config.retype",
    weight: 1,
    apply(c) {
      const json = readJson(c, CONFIG);
      if (!json) return null;
      const key = c.rng.chance(0.7) ? c.rng.pick(CONFIG_NUMERIC) : c.rng.pick(Object.keys(json));
      return setField(c, CONFIG, key, c.rng.pick(WRONG_TYPES), "=");
    },
  },
  {
    kind: "config.huge",
    weight: 1.5,
    apply(c) {
      const key = configNumericField(c);
      const value = key === "num_hidden_layers" && c.rng.chance(0.5) ? 1e8 : c.rng.pick(HUGE);
      return setField(c, CONFIG, key, value, "=");
    },
  },
  {
    kind: "config.negative",
    weight: 1,
    apply: (c) => setField(c, CONFIG, configNumericField(c), c.rng.pick(NEGATIVE), "="),
  },
  {
    kind: "config.zero",
    weight: 1,
    apply: (c) => setField(c, CONFIG, configNumericField(c), 0, "="),
  },
  {
    kind: "config.fractional",
    weight: 1,
    apply: (c) => setField(c, CONFIG, configNumericField(c), c.rng.pick(FRACTIONAL), "="),
  },
  {
    kind: "config.numeric-string",
    weight: 1,
    apply: (c) => setField(c, CONFIG, configNumericField(c), c.rng.pick(NUMERIC_STRINGS), "="),
  },
  {
    kind: "config.heads",
    weight: 1.5,
    apply(c) {
      const heads = configNumber(c, "num_attention_heads");
      const hidden = configNumber(c, "hidden_size");
      if (heads === null || hidden === null) return null;
      switch (c.rng.int(0, 5)) {
        case 0: // kv heads that do not divide the query heads
          return setField(c, CONFIG, "num_key_value_heads", c.rng.pick([heads - 1, heads + 1, 5, 7]), "=");
        case 1: // query heads that divide neither the hidden size nor by the kv heads
          return setField(c, CONFIG, "num_attention_heads", c.rng.pick([7, 11, heads + 1]), "=");
        case 2: // more kv heads than query heads
          return setField(c, CONFIG, "num_key_value_heads", heads * 2, "=");
        case 3: // odd head_dim (RoPE rotates pairs)
          return setField(c, CONFIG, "head_dim", c.rng.pick([1, 3, 33, hidden / heads + 1]), "=");
        case 4: // a head_dim that does not match hidden / heads
          return setField(c, CONFIG, "head_dim", c.rng.pick([2, hidden, (hidden / heads) * 2]), "=");
        default: // hidden size not a multiple of heads
          return setField(c, CONFIG, "hidden_size", hidden + c.rng.pick([1, 2, 3]), "=");
      }
    },
  },
  {
    kind: "config.token-ids",
    weight: 1.5,
    apply(c) {
      const vocab = configNumber(c, "vocab_size");
      if (vocab === null) return null;
      const key = c.rng.chance(0.7) ? "eos_token_id" : "bos_token_id";
      const value = c.rng.pick([
        vocab,
        vocab + 1,
        vocab + 1000,
        2 ** 31,
        -1,
        1.5,
        "2",
        [],
        [2, vocab + 5],
        [2, "x"],
        [[2]],
        [vocab - 1, -3],
      ]);
      return setField(c, CONFIG, key, value, "=");
    },
  },
  {
    kind: "config.model-type",
    weight: 1,
    apply(c) {
      switch (c.rng.int(0, 3)) {
        case 0:
          return setField(
            c,
            CONFIG,
            "model_type",
            c.rng.pick(["mistral", "", null, 42, "QWEN2", "qwen2 ", "llama\u0000"]),
            "=",
          );
        case 1:
          return setField(c, CONFIG, "hidden_act", c.rng.pick(["gelu", "relu", 1, null]), "=");
        case 2:
          return setField(c, CONFIG, "use_sliding_window", c.rng.pick([true, "yes", 1]), "=");
        default:
          return setField(
            c,
            CONFIG,
            c.rng.pick(["mlp_bias", "attention_bias", "tie_word_embeddings"]),
            c.rng.pick([true, false, "true", 1, null]),
            "=",
          );
      }
    },
  },
  {
    kind: "config.rope-scaling",
    weight: 1,
    apply(c) {
      const good = {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      };
      const value = c.rng.pick<unknown>([
        good,
        { ...good, factor: 0 },
        { ...good, factor: -8 },
        { ...good, factor: "8" },
        { ...good, factor: raw("1e999") },
        { ...good, low_freq_factor: 4, high_freq_factor: 1 },
        { ...good, original_max_position_embeddings: 0 },
        { ...good, original_max_position_embeddings: 1e300 },
        { rope_type: "llama3" },
        { type: "yarn", factor: 4 },
        { rope_type: "default" },
        { rope_type: null },
        "llama3",
        [],
        5,
      ]);
      return setField(c, CONFIG, "rope_scaling", value, "=");
    },
  },
  {
    kind: "config.shape",
    weight: 1.5,
    apply(c) {
      const json = readJson(c, CONFIG);
      if (!json) return null;
      const key = c.rng.pick([
        "num_hidden_layers",
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_key_value_heads",
        "tie_word_embeddings",
        "attention_bias",
        "model_type",
      ]);
      const v = json[key];
      let value: unknown;
      if (key === "tie_word_embeddings" || key === "attention_bias") value = !(v === true);
      else if (key === "model_type") value = v === "llama" ? "qwen2" : "llama";
      else if (key === "num_key_value_heads") value = c.rng.pick([1, json.num_attention_heads]);
      else if (typeof v === "number") value = v + c.rng.pick([-1, 1, 2, -2, 64]);
      else return null;
      return setField(c, CONFIG, key, value, "→");
    },
  },
  {
    kind: "config.context",
    weight: 1,
    apply: (c) => setField(c, CONFIG, "max_position_embeddings", c.rng.pick([1, 2, 4, 5, 8, 9]), "="),
  },
  {
    kind: "config.norms",
    weight: 1,
    apply(c) {
      const key = c.rng.pick(["rms_norm_eps", "rope_theta"]);
      return setField(c, CONFIG, key, c.rng.pick([0, 1, 1e-45, 1e-30, 1e30, 1e300, raw("1e999")]), "=");
    },
  },
  {
    kind: "config.duplicate-key",
    weight: 1,
    apply(c) {
      const bytes = c.files.get(CONFIG);
      if (!bytes || !readJson(c, CONFIG)) return null;
      const key = c.rng.pick(["num_hidden_layers", "vocab_size", "model_type", "hidden_size"]);
      const value = c.rng.pick(["1e8", "0", '"gpt2"', "null", "-1"]);
      const text = decoder.decode(bytes).replace(/\}\s*$/, `, "${key}": ${value}}`);
      c.files.set(CONFIG, utf8.encode(text));
      return { file: CONFIG, detail: `"${key}" repeated at the end as ${value}` };
    },
  },
  { kind: "config.bad-json", weight: 1.5, apply: (c) => garbleJson(c, CONFIG) },
];

// ---------------------------------------------------------------------------------------------------------
// safetensors

/** The safetensors files of the case (the single file, or shards once sharded). */
function stFiles(c: MutationContext): string[] {
  return [...c.files.keys()].filter((f) => f.endsWith(".safetensors"));
}

/** A safetensors file of the case whose header still parses, and its parts. */
function pickSt(c: MutationContext): { file: string; st: StFile } | null {
  const files = stFiles(c).filter((f) => parseSt(c.files.get(f)!) !== null);
  if (files.length === 0) return null;
  const file = c.rng.pick(files);
  return { file, st: parseSt(c.files.get(file)!)! };
}

function pickTensor(c: MutationContext, st: StFile): string | null {
  const names = tensorNames(st.header);
  return names.length ? c.rng.pick(names) : null;
}

/** Edits one tensor's header entry and rewrites the file around the same data section. */
function editEntry(
  c: MutationContext,
  edit: (entry: HeaderEntry, name: string, st: StFile) => string | null,
): Applied {
  const p = pickSt(c);
  if (!p) return null;
  const name = pickTensor(c, p.st);
  if (!name) return null;
  const entry = p.st.header[name] as HeaderEntry;
  if (entry === null || typeof entry !== "object") return null;
  const what = edit(entry, name, p.st);
  if (what === null) return null;
  c.files.set(p.file, buildSt(p.st.header, p.st.data));
  return { file: p.file, detail: `${name}: ${what}` };
}

/** Bit patterns of non-finite or overflowing values per dtype. */
const NONFINITE: Record<string, { bytes: number; values: [string, number][] }> = {
  BF16: { bytes: 2, values: [["NaN", 0x7fc0], ["+Inf", 0x7f80], ["-Inf", 0xff80], ["max", 0x7f7f]] },
  F16: { bytes: 2, values: [["NaN", 0x7e00], ["+Inf", 0x7c00], ["-Inf", 0xfc00], ["max", 0x7bff]] },
  F32: {
    bytes: 4,
    values: [["NaN", 0x7fc00000], ["+Inf", 0x7f800000], ["-Inf", 0xff800000], ["max", 0x7f7fffff]],
  },
};

const ST_KINDS: MutationKind[] = [
  {
    kind: "st.header-length",
    weight: 1.5,
    apply(c) {
      const files = stFiles(c).filter((f) => c.files.get(f)!.byteLength >= 8);
      if (!files.length) return null;
      const file = c.rng.pick(files);
      const bytes = c.files.get(file)!.slice();
      const n = BigInt(headerLength(bytes));
      const k = BigInt(c.rng.int(2, 4096));
      const value = c.rng.pick([
        n + 1n,
        n - 1n,
        n + k,
        n - k < 0n ? 0n : n - k,
        0n,
        1n,
        2n ** 32n,
        2n ** 63n - 1n,
        2n ** 64n - 1n,
        BigInt(bytes.byteLength - 8),
        BigInt(bytes.byteLength),
        100_000_001n,
      ]);
      bytes.set(lengthPrefix(value), 0);
      c.files.set(file, bytes);
      return { file, detail: `header length ${n} → ${value}` };
    },
  },
  {
    kind: "st.header-json",
    weight: 1.5,
    apply(c) {
      const files = stFiles(c).filter((f) => c.files.get(f)!.byteLength >= 16);
      if (!files.length) return null;
      const file = c.rng.pick(files);
      const bytes = c.files.get(file)!.slice();
      const len = Math.min(headerLength(bytes), bytes.byteLength - 8);
      if (len < 4) return null;
      const how = c.rng.pick(["flip", "close-early", "not-object", "invalid-utf8", "nul", "spaces"]);
      let at = 8;
      switch (how) {
        case "flip":
          at = 8 + c.rng.int(0, len - 1);
          bytes[at] = c.rng.pick([0x22, 0x2c, 0x3a, 0x7b, 0x7d, 0x5b, 0x5d, 0x30, 0x2d, c.rng.int(0, 255)]);
          break;
        case "close-early": // a valid prefix, then garbage
          at = 8 + c.rng.int(1, len - 2);
          bytes[at] = 0x7d;
          break;
        case "not-object": {
          const t = c.rng.pick(["[]", "null", "1", '"x"', "{}"]);
          const text = t + " ".repeat(len - t.length);
          bytes.set(utf8.encode(text), 8);
          return { file, detail: `header replaced by ${t}` };
        }
        case "invalid-utf8":
          at = 8 + c.rng.int(0, len - 2);
          bytes.set([0xc3, 0x28], at);
          break;
        case "nul":
          at = 8 + c.rng.int(0, len - 1);
          bytes[at] = 0;
          break;
        default:
          bytes.fill(0x20, 8, 8 + len);
          break;
      }
      c.files.set(file, bytes);
      return { file, detail: `${how} at byte ${at}` };
    },
  },
  {
    kind: "st.dtype",
    weight: 1.5,
    apply: (c) =>
      editEntry(c, (entry) => {
        const was = entry.dtype;
        const to = c.rng.pick<unknown>([
          "BF16",
          "F16",
          "F32",
          "F64",
          "I8",
          "U8",
          "BOOL",
          "bf16",
          "",
          5,
          null,
        ]);
        if (to === was) return null;
        entry.dtype = to;
        if (c.rng.chance(0.1)) delete entry.dtype;
        return `dtype ${show(was)} → ${"dtype" in entry ? show(to) : "(deleted)"}`;
      }),
  },
  {
    kind: "st.shape",
    weight: 1.5,
    apply: (c) =>
      editEntry(c, (entry) => {
        const shape = entry.shape;
        if (!Array.isArray(shape)) return null;
        const was = JSON.stringify(shape);
        const s = shape.slice();
        const i = c.rng.int(0, Math.max(0, s.length - 1));
        switch (c.rng.int(0, 8)) {
          case 0:
            s[i] = (s[i] ?? 1) + c.rng.pick([1, -1]);
            break;
          case 1:
            s[i] = c.rng.pick([0, -1, 1.5, 2 ** 53, 2 ** 31, 1e300, "64", null]);
            break;
          case 2:
            s.unshift(1); // same element count, one more dimension
            break;
          case 3:
            s.reverse(); // transposed: same bytes, wrong layout
            break;
          case 4:
            s.length = 0;
            break;
          case 5:
            s.push(2);
            break;
          case 6:
            entry.shape = c.rng.pick<unknown>(["[64]", 64, null, {}]);
            return `shape ${was} → ${show(entry.shape)}`;
          case 7:
            delete entry.shape;
            return `shape ${was} deleted`;
          default:
            s[i] = (s[i] ?? 1) * 2;
            break;
        }
        entry.shape = s;
        return `shape ${was} → ${JSON.stringify(s)}`;
      }),
  },
  {
    kind: "st.offsets",
    weight: 2,
    apply(c) {
      const p = pickSt(c);
      if (!p) return null;
      const names = tensorNames(p.st.header);
      if (!names.length) return null;
      const idx = c.rng.int(0, names.length - 1);
      const name = names[idx];
      const entry = p.st.header[name] as HeaderEntry;
      const o = offsetsOf(entry);
      if (!o) return null;
      const [b, e] = o;
      const dataSize = p.st.data.byteLength;
      const k = c.rng.pick([1, 2, 4, 64, 4096]);
      let to: unknown;
      let what: string;
      switch (c.rng.int(0, 8)) {
        case 0:
          to = [b + k, e + k];
          what = `shifted by +${k}`;
          break;
        case 1:
          to = [Math.max(0, b - k), Math.max(0, e - k)];
          what = `shifted by -${k}`;
          break;
        case 2:
          to = [e, b];
          what = "swapped (backwards)";
          break;
        case 3: {
          // overlap: start inside the previous tensor, same length
          const prev = idx > 0 ? offsetsOf(p.st.header[names[idx - 1]]) : null;
          if (!prev || prev[1] - prev[0] < 2) return null;
          const start = prev[0] + c.rng.int(0, prev[1] - prev[0] - 1);
          to = [start, start + (e - b)];
          what = `overlaps ${names[idx - 1]}`;
          break;
        }
        case 4:
          to = [dataSize - (e - b) + k, dataSize + k];
          what = `runs ${k} bytes past the data section`;
          break;
        case 5:
          to = c.rng.pick<unknown>([
            [b],
            [b, e, e],
            [b + 0.5, e + 0.5],
            [-1, e - b - 1],
            [String(b), String(e)],
            null,
            [
              2 ** 53,
              2 ** 53 + (e - b),
            ],
          ]);
          what = `data_offsets = ${JSON.stringify(to)}`;
          break;
        case 6: {
          // gap: move every later tensor up by k bytes (the data grows), a valid but gapped layout
          for (const n of names.slice(idx)) {
            const oo = offsetsOf(p.st.header[n]);
            if (oo) (p.st.header[n] as HeaderEntry).data_offsets = [oo[0] + k, oo[1] + k];
          }
          const data = concat(p.st.data.subarray(0, b), new Uint8Array(k), p.st.data.subarray(b));
          c.files.set(p.file, buildSt(p.st.header, data));
          return { file: p.file, detail: `${name}: ${k}-byte gap before it (later tensors moved)` };
        }
        case 7: {
          // alias another tensor of the same size exactly
          const same = names.find((n) => {
            const oo = offsetsOf(p.st.header[n]);
            return n !== name && oo !== null && oo[1] - oo[0] === e - b;
          });
          if (!same) return null;
          to = offsetsOf(p.st.header[same]);
          what = `aliases ${same}`;
          break;
        }
        default:
          to = [b, b];
          what = "empty range";
          break;
      }
      entry.data_offsets = to;
      c.files.set(p.file, buildSt(p.st.header, p.st.data));
      return { file: p.file, detail: `${name}: data_offsets [${b}, ${e}] ${what}` };
    },
  },
  {
    kind: "st.truncate",
    weight: 1.5,
    apply(c) {
      const files = stFiles(c);
      if (!files.length) return null;
      const file = c.rng.pick(files);
      const bytes = c.files.get(file)!;
      const len = bytes.byteLength >= 8 ? headerLength(bytes) : 0;
      const at = c.rng.pick([
        c.rng.int(0, 7),
        Math.min(bytes.byteLength - 1, 8 + c.rng.int(0, len)),
        c.rng.int(0, bytes.byteLength - 1),
        bytes.byteLength - 1,
        bytes.byteLength - c.rng.int(2, 64),
      ]);
      const cut = Math.max(0, Math.min(bytes.byteLength - 1, at));
      c.files.set(file, bytes.slice(0, cut));
      return { file, detail: `truncated to ${cut} of ${bytes.byteLength} bytes` };
    },
  },
  {
    kind: "st.trailing",
    weight: 1,
    apply(c) {
      const files = stFiles(c);
      if (!files.length) return null;
      const file = c.rng.pick(files);
      const n = c.rng.pick([1, 3, 8, 4096, c.rng.int(1, 100_000)]);
      c.files.set(file, concat(c.files.get(file)!, c.rng.bytes(n)));
      return { file, detail: `${n} trailing bytes` };
    },
  },
  {
    kind: "st.nonfinite",
    weight: 1.5,
    apply(c) {
      const p = pickSt(c);
      if (!p) return null;
      const name = pickTensor(c, p.st);
      if (!name) return null;
      const entry = p.st.header[name] as HeaderEntry;
      const o = offsetsOf(entry);
      const spec = NONFINITE[String(entry.dtype)];
      if (!o || !spec || o[1] > p.st.data.byteLength) return null;
      const count = (o[1] - o[0]) / spec.bytes;
      if (count < 1) return null;
      const [label, bits] = c.rng.pick(spec.values);
      const n = c.rng.pick([1, Math.min(count, 8), count]);
      const data = p.st.data.slice();
      const view = new DataView(data.buffer);
      for (let j = 0; j < n; j++) {
        const at = o[0] + (n === count ? j : c.rng.int(0, count - 1)) * spec.bytes;
        if (spec.bytes === 2) view.setUint16(at, bits, true);
        else view.setUint32(at, bits, true);
      }
      c.files.set(p.file, buildSt(p.st.header, data));
      return { file: p.file, detail: `${name}: ${n === count ? "every" : n} value(s) set to ${label}` };
    },
  },
  {
    kind: "st.remove-tensor",
    weight: 1,
    apply(c) {
      const p = pickSt(c);
      if (!p) return null;
      const name = pickTensor(c, p.st);
      if (!name) return null;
      delete p.st.header[name];
      c.files.set(p.file, buildSt(p.st.header, p.st.data));
      return { file: p.file, detail: `removed ${name}` };
    },
  },
  {
    kind: "st.rename-tensor",
    weight: 1,
    apply(c) {
      const p = pickSt(c);
      if (!p) return null;
      const name = pickTensor(c, p.st);
      if (!name) return null;
      const to = c.rng.pick([
        `${name}.orig`,
        name.replace("model.", "transformer."),
        name.replace(/layers\.(\d+)/, (_, i) => `layers.${Number(i) + 100}`),
        "",
        name.toUpperCase(),
      ]);
      if (to === name || to in p.st.header) return null;
      const header: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(p.st.header)) header[k === name ? to : k] = v;
      c.files.set(p.file, buildSt(header, p.st.data));
      return { file: p.file, detail: `${name} renamed ${JSON.stringify(to)}` };
    },
  },
  {
    kind: "st.extra-tensor",
    weight: 1,
    apply(c) {
      const p = pickSt(c);
      if (!p) return null;
      const size = p.st.data.byteLength;
      const n = c.rng.pick([1, 16, 1000]);
      const aliased = c.rng.chance(0.5);
      const entry = aliased
        ? { dtype: "F32", shape: [1], data_offsets: [0, 4] }
        : { dtype: "F32", shape: [n], data_offsets: [size, size + 4 * n] };
      p.st.header["extra.unused.weight"] = entry;
      const data = aliased ? p.st.data : concat(p.st.data, new Uint8Array(4 * n));
      c.files.set(p.file, buildSt(p.st.header, data));
      return {
        file: p.file,
        detail: aliased ? "unused tensor aliasing bytes [0, 4)" : `unused F32 [${n}] appended`,
      };
    },
  },
  {
    kind: "st.metadata",
    weight: 0.5,
    apply(c) {
      const p = pickSt(c);
      if (!p) return null;
      const value = c.rng.pick<unknown>([[], "pt", null, 5, { format: 5 }, { format: ["pt"] }, { x: {} }]);
      p.st.header.__metadata__ = value;
      c.files.set(p.file, buildSt(p.st.header, p.st.data));
      return { file: p.file, detail: `__metadata__ = ${JSON.stringify(value)}` };
    },
  },
  {
    kind: "st.duplicate-key",
    weight: 0.5,
    apply(c) {
      const p = pickSt(c);
      if (!p) return null;
      const name = pickTensor(c, p.st);
      if (!name) return null;
      const text = JSON.stringify(p.st.header).replace(
        /\}\s*$/,
        `,${JSON.stringify(name)}:{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`,
      );
      c.files.set(p.file, buildSt(p.st.header, p.st.data, text));
      return { file: p.file, detail: `${name} repeated last with 4 bytes` };
    },
  },
  {
    kind: "st.large-header",
    weight: 0.5,
    apply(c) {
      const p = pickSt(c);
      if (!p) return null;
      switch (c.rng.int(0, 2)) {
        case 0: {
          // Many valid zero-byte tensors nobody reads.
          const n = c.rng.pick([10_000, 50_000, 200_000]);
          for (let i = 0; i < n; i++) {
            p.st.header[`unused.${i}`] = { dtype: "F32", shape: [0], data_offsets: [0, 0] };
          }
          c.files.set(p.file, buildSt(p.st.header, p.st.data));
          return { file: p.file, detail: `${n} extra zero-byte tensors` };
        }
        case 1: {
          // Whitespace: valid JSON, a large header.
          const mb = c.rng.pick([1, 16, 64]);
          const text = JSON.stringify(p.st.header) + " ".repeat(mb << 20);
          c.files.set(p.file, buildSt(p.st.header, p.st.data, text));
          return { file: p.file, detail: `header padded with ${mb} MiB of spaces` };
        }
        default: {
          const mb = c.rng.pick([1, 8]);
          p.st.header.__metadata__ = { format: "pt", note: "x".repeat(mb << 20) };
          c.files.set(p.file, buildSt(p.st.header, p.st.data));
          return { file: p.file, detail: `a ${mb} MiB __metadata__ string` };
        }
      }
    },
  },
  {
    kind: "st.tiny-file",
    weight: 0.5,
    apply(c) {
      const files = stFiles(c);
      if (!files.length) return null;
      const file = c.rng.pick(files);
      const n = c.rng.int(0, 8);
      c.files.set(file, n === 8 ? lengthPrefix(0) : c.rng.bytes(n));
      return { file, detail: `replaced by ${n} bytes` };
    },
  },
];

// ---------------------------------------------------------------------------------------------------------
// Sharded checkpoints (model.safetensors.index.json)

/** Shards model.safetensors into 2–3 files plus an index (when not yet sharded); returns the shard names. */
function ensureSharded(c: MutationContext): string[] | null {
  if (c.files.has(INDEX)) {
    const shards = stFiles(c).filter((f) => f !== WEIGHTS);
    return shards.length ? shards : null;
  }
  const bytes = c.files.get(WEIGHTS);
  const st = bytes && parseSt(bytes);
  if (!st || tensorNames(st.header).some((n) => offsetsOf(st.header[n]) === null)) return null;
  const { shards, weightMap } = shardSt(st, c.rng.int(2, 3));
  for (const [file, data] of shards) c.files.set(file, data);
  const total = shards.reduce((s, [, d]) => s + d.byteLength, 0);
  writeJson(c, INDEX, { metadata: { total_size: total }, weight_map: weightMap });
  if (c.rng.chance(0.7)) c.files.delete(WEIGHTS); // else the index must win over the single file
  return shards.map(([f]) => f);
}

function editIndex(
  c: MutationContext,
  edit: (wm: Record<string, unknown>, shards: string[]) => string | null,
): Applied {
  const shards = ensureSharded(c);
  if (!shards) return null;
  const index = readJson(c, INDEX);
  const wm = index?.weight_map;
  if (!index || wm === null || typeof wm !== "object" || Array.isArray(wm)) return null;
  const what = edit(wm as Record<string, unknown>, shards);
  if (what === null) return null;
  writeJson(c, INDEX, index);
  return { file: INDEX, detail: what };
}

const INDEX_KINDS: MutationKind[] = [
  {
    kind: "index.sharded",
    weight: 1,
    apply(c) {
      const had = c.files.has(WEIGHTS);
      const shards = ensureSharded(c);
      if (!shards) return null;
      return {
        file: INDEX,
        detail: `${shards.length} shards${c.files.has(WEIGHTS) && had ? ", model.safetensors kept" : ""}`,
      };
    },
  },
  {
    kind: "index.bad-json",
    weight: 1,
    apply: (c) => ensureSharded(c) ? garbleJson(c, INDEX) : null,
  },
  {
    kind: "index.weight-map",
    weight: 1,
    apply(c) {
      if (!ensureSharded(c)) return null;
      const index = readJson(c, INDEX);
      if (!index) return null;
      const value = c.rng.pick<unknown>([undefined, null, [], "model.safetensors", 5, {}]);
      if (value === undefined) delete index.weight_map;
      else index.weight_map = value;
      writeJson(c, INDEX, index);
      return {
        file: INDEX,
        detail: value === undefined ? "weight_map deleted" : `weight_map = ${JSON.stringify(value)}`,
      };
    },
  },
  {
    kind: "index.shard-name",
    weight: 1,
    apply: (c) =>
      editIndex(c, (wm) => {
        const name = c.rng.pick(Object.keys(wm));
        const to = c.rng.pick<unknown>([
          "../model.safetensors",
          "sub/model.safetensors",
          "",
          5,
          null,
          "model-00009-of-00002.safetensors",
          "config.json",
          "tokenizer.json",
          "MODEL.safetensors",
        ]);
        wm[name] = to;
        return `${name} → ${JSON.stringify(to)}`;
      }),
  },
  {
    kind: "index.missing-shard",
    weight: 1,
    apply(c) {
      const shards = ensureSharded(c);
      if (!shards) return null;
      const file = c.rng.pick(shards);
      c.files.delete(file);
      return { file, detail: `shard ${file} deleted` };
    },
  },
  {
    kind: "index.wrong-shard",
    weight: 1,
    apply: (c) =>
      editIndex(c, (wm, shards) => {
        const name = c.rng.pick(Object.keys(wm));
        const other = shards.find((s) => s !== wm[name]);
        if (!other) return null;
        wm[name] = other;
        return `${name} mapped to ${other}, which lacks it`;
      }),
  },
  {
    kind: "index.omit-tensor",
    weight: 1,
    apply: (c) =>
      editIndex(c, (wm) => {
        const name = c.rng.pick(Object.keys(wm));
        delete wm[name];
        return `${name} left out of weight_map`;
      }),
  },
  {
    kind: "index.extra-entry",
    weight: 1,
    apply: (c) =>
      editIndex(c, (wm, shards) => {
        const shard = c.rng.pick(shards);
        wm["model.layers.99.mlp.up_proj.weight"] = shard;
        return `weight_map lists a tensor absent from ${shard}`;
      }),
  },
  {
    kind: "index.duplicate-tensor",
    weight: 0.5,
    apply(c) {
      const shards = ensureSharded(c);
      if (!shards || shards.length < 2) return null;
      // Copy one tensor of shard A into shard B as well: the index still names A.
      const [a, b] = [shards[0], shards[1]];
      const sa = parseSt(c.files.get(a) ?? new Uint8Array()),
        sb = parseSt(c.files.get(b) ?? new Uint8Array());
      if (!sa || !sb) return null;
      const name = pickTensor(c, sa);
      const o = name ? offsetsOf(sa.header[name]) : null;
      if (!name || !o) return null;
      const bytes = sa.data.subarray(o[0], o[1]);
      sb.header[name] = {
        ...(sa.header[name] as HeaderEntry),
        data_offsets: [sb.data.byteLength, sb.data.byteLength + bytes.byteLength],
      };
      c.files.set(b, buildSt(sb.header, concat(sb.data, bytes)));
      return { file: b, detail: `${name} present in ${a} (indexed) and ${b}` };
    },
  },
];

// ---------------------------------------------------------------------------------------------------------
// tokenizer.json and tokenizer_config.json

function tokenizerJson(c: MutationContext): Record<string, unknown> | null {
  return readJson(c, TOKENIZER);
}

function modelOf(tok: Record<string, unknown>): Record<string, unknown> | null {
  const m = tok.model;
  return m !== null && typeof m === "object" && !Array.isArray(m) ? m as Record<string, unknown> : null;
}

function vocabOf(tok: Record<string, unknown>): Record<string, unknown> | null {
  const v = modelOf(tok)?.vocab;
  return v !== null && typeof v === "object" && !Array.isArray(v) ? v as Record<string, unknown> : null;
}

function editTokenizer(c: MutationContext, edit: (tok: Record<string, unknown>) => string | null): Applied {
  const tok = tokenizerJson(c);
  if (!tok) return null;
  const what = edit(tok);
  if (what === null) return null;
  writeJson(c, TOKENIZER, tok);
  return { file: TOKENIZER, detail: what };
}

const TOKENIZER_KINDS: MutationKind[] = [
  {
    kind: "tokenizer.bad-json",
    weight: 1.5,
    apply: (c) => c.files.has(TOKENIZER) ? garbleJson(c, TOKENIZER) : null,
  },
  {
    kind: "tokenizer.retype",
    weight: 1.5,
    apply: (c) =>
      editTokenizer(c, (tok) => {
        const path = c.rng.pick([
          "model",
          "model.vocab",
          "model.merges",
          "added_tokens",
          "pre_tokenizer",
          "decoder",
          "normalizer",
          "post_processor",
          "pre_tokenizer.pretokenizers",
        ]);
        const value = c.rng.pick<unknown>(["x", 5, [], {}, null, true, [5]]);
        const [head, tail] = path.split(".");
        if (tail === undefined) tok[head] = value;
        else {
          const parent = tok[head];
          if (parent === null || typeof parent !== "object") return null;
          (parent as Record<string, unknown>)[tail] = value;
        }
        return `${path} = ${JSON.stringify(value)}`;
      }),
  },
  {
    kind: "tokenizer.vocab-ids",
    weight: 1.5,
    apply: (c) =>
      editTokenizer(c, (tok) => {
        const vocab = vocabOf(tok);
        if (!vocab) return null;
        const keys = Object.keys(vocab);
        const key = c.rng.pick(keys);
        const value = c.rng.pick<unknown>([
          vocab[c.rng.pick(keys)], // a duplicate id
          1.5,
          "5",
          -1,
          1e9,
          2 ** 32,
          1e308,
          "NaN",
          null,
          [3],
        ]);
        vocab[key] = value;
        return `vocab[${JSON.stringify(key)}] = ${JSON.stringify(value)}`;
      }),
  },
  {
    kind: "tokenizer.merges",
    weight: 1.5,
    apply: (c) =>
      editTokenizer(c, (tok) => {
        const model = modelOf(tok);
        if (!model || !Array.isArray(model.merges)) return null;
        const merges = model.merges as unknown[];
        switch (c.rng.int(0, 3)) {
          case 0:
            delete model.merges;
            return "merges deleted";
          case 1:
            model.merges = [];
            return "merges emptied";
          default: {
            const at = c.rng.int(0, Math.max(0, merges.length - 1));
            const bad = c.rng.pick<unknown>([
              "zz qq",
              "a",
              "a b c",
              ["a"],
              ["a", "b", "c"],
              [1, 2],
              5,
              null,
              "",
            ]);
            merges[at] = bad;
            return `merges[${at}] = ${JSON.stringify(bad)}`;
          }
        }
      }),
  },
  {
    kind: "tokenizer.added-tokens",
    weight: 1.5,
    apply: (c) =>
      editTokenizer(c, (tok) => {
        const added = tok.added_tokens;
        if (!Array.isArray(added) || added.length === 0) return null;
        const at = c.rng.int(0, added.length - 1);
        const t = added[at] as Record<string, unknown>;
        const field = c.rng.pick(["id", "id", "content", "special", "drop"]);
        if (field === "drop") {
          added.splice(at, 1);
          return `added token ${JSON.stringify(t.content)} removed (its special use stays)`;
        }
        const configVocab = Number(readJson(c, CONFIG)?.vocab_size ?? 1000);
        const value = field === "id"
          ? c.rng.pick<unknown>([configVocab, configVocab + 100, 2 ** 31, -1, 1.5, "673", null, undefined, 0])
          : field === "content"
          ? c.rng.pick<unknown>(["", 5, null, undefined, "(", "a"])
          : c.rng.pick<unknown>(["yes", 1, null]);
        if (value === undefined) delete t[field];
        else t[field] = value;
        return `added_tokens[${at}].${field} = ${value === undefined ? "(deleted)" : JSON.stringify(value)}`;
      }),
  },
  {
    kind: "tokenizer.model-type",
    weight: 1,
    apply: (c) =>
      editTokenizer(c, (tok) => {
        const model = modelOf(tok);
        if (!model) return null;
        const [key, value] = c.rng.pick<[string, unknown]>([
          ["type", "WordPiece"],
          ["type", "Unigram"],
          ["type", 5],
          ["byte_fallback", true],
          ["continuing_subword_prefix", "##"],
          ["ignore_merges", "yes"],
        ]);
        model[key] = value;
        return `model.${key} = ${JSON.stringify(value)}`;
      }),
  },
  {
    kind: "tokenizer.components",
    weight: 1.5,
    apply: (c) =>
      editTokenizer(c, (tok) => {
        const [key, value] = c.rng.pick<[string, unknown]>([
          ["pre_tokenizer", { type: "Split", pattern: { Regex: "(" }, behavior: "Isolated" }],
          ["pre_tokenizer", { type: "Split", pattern: { Regex: "[a-" }, behavior: "Isolated" }],
          ["pre_tokenizer", { type: "Split", pattern: { Regex: "\\p{Foo}" }, behavior: "Isolated" }],
          ["pre_tokenizer", {
            type: "Sequence",
            pretokenizers: [{ type: "Split", pattern: { Regex: "x" }, behavior: "Weird" }, {
              type: "ByteLevel",
            }],
          }],
          ["pre_tokenizer", { type: "Split", pattern: {}, behavior: "Isolated" }],
          ["pre_tokenizer", { type: "Whitespace" }],
          ["pre_tokenizer", { type: "Sequence", pretokenizers: 5 }],
          ["normalizer", { type: "Foo" }],
          ["normalizer", { type: "Replace", pattern: { Regex: ")" }, content: "x" }],
          ["normalizer", { type: "Sequence", normalizers: [null] }],
          ["decoder", { type: "WordPiece" }],
          ["decoder", null],
          ["post_processor", {
            type: "TemplateProcessing",
            single: [{ SpecialToken: { id: "<s>" } }],
            special_tokens: {},
          }],
          ["post_processor", {
            type: "TemplateProcessing",
            single: [{ SpecialToken: { id: "<s>" } }, { Sequence: { id: "A" } }],
            special_tokens: { "<s>": { ids: [999999] } },
          }],
          ["post_processor", { type: "TemplateProcessing", single: 5 }],
          ["post_processor", { type: "BertProcessing" }],
          ["post_processor", { type: "Mystery" }],
        ]);
        tok[key] = value;
        return `${key} = ${JSON.stringify(value)}`;
      }),
  },
  {
    kind: "tokenizer.foreign",
    weight: 0.5,
    apply(c) {
      const other = c.bases.find((b) => b !== c.base && b.files.has(TOKENIZER));
      if (!other) return null;
      c.files.set(TOKENIZER, other.files.get(TOKENIZER)!);
      const cfg = other.files.get(TOKENIZER_CONFIG);
      if (cfg) c.files.set(TOKENIZER_CONFIG, cfg);
      return { file: TOKENIZER, detail: `tokenizer of ${other.name} (ids beyond this model's vocabulary)` };
    },
  },
  {
    kind: "tokenizer-config.bad-json",
    weight: 1,
    apply: (c) => c.files.has(TOKENIZER_CONFIG) ? garbleJson(c, TOKENIZER_CONFIG) : null,
  },
  {
    kind: "tokenizer-config.retype",
    weight: 1,
    apply(c) {
      if (!c.files.has(TOKENIZER_CONFIG)) return null;
      const key = c.rng.pick(["bos_token", "eos_token", "add_bos_token", "tokenizer_class", "chat_template"]);
      return setField(
        c,
        TOKENIZER_CONFIG,
        key,
        c.rng.pick<unknown>([5, [], { content: 7 }, null, "yes", {}]),
        "=",
      );
    },
  },
  {
    kind: "tokenizer-config.special-missing",
    weight: 1,
    apply(c) {
      if (!c.files.has(TOKENIZER_CONFIG)) return null;
      const key = c.rng.pick(["bos_token", "eos_token", "pad_token"]);
      const value = c.rng.pick<unknown>(["<|not-in-vocab|>", { content: "<nope>" }, "", "\u0000"]);
      return setField(c, TOKENIZER_CONFIG, key, value, "=");
    },
  },
  {
    kind: "tokenizer-config.llama-class",
    weight: 0.5,
    apply(c) {
      const json = readJson(c, TOKENIZER_CONFIG);
      if (!json) return null;
      json.tokenizer_class = "LlamaTokenizerFast";
      json.add_bos_token = c.rng.pick<unknown>([true, "yes", 1]);
      json.add_eos_token = c.rng.pick<unknown>([true, false, null]);
      if (c.rng.chance(0.5)) json.bos_token = "<|missing-bos|>";
      writeJson(c, TOKENIZER_CONFIG, json);
      return {
        file: TOKENIZER_CONFIG,
        detail: `LlamaTokenizerFast, add_bos_token ${show(json.add_bos_token)}, bos ${show(json.bos_token)}`,
      };
    },
  },
];

// ---------------------------------------------------------------------------------------------------------
// kv_defaults.json

/** The keys kv_defaults.json accepts (from the KV settings schema). */
const KV_KEYS: readonly string[] = KV_SETTINGS.flatMap((s) => s.fileKey === null ? [] : [s.fileKey]);

function kvJson(c: MutationContext): Record<string, unknown> {
  return readJson(c, KV_DEFAULTS) ?? {};
}

function setKv(c: MutationContext, key: string, value: unknown): Applied {
  const json = kvJson(c);
  // defineProperty: a "__proto__" key must become an own property, as JSON.parse makes it.
  Object.defineProperty(json, key, { value, enumerable: true, writable: true, configurable: true });
  writeJson(c, KV_DEFAULTS, json);
  return { file: KV_DEFAULTS, detail: `${key} = ${show(value)}` };
}

const KV_KINDS: MutationKind[] = [
  {
    kind: "kv.unknown-key",
    weight: 1,
    apply: (c) =>
      setKv(
        c,
        c.rng.pick(["foo", "kv_policy", "policy", "KV_RECENT_RATIO", "kv_budget ", "", "__proto__"]),
        1,
      ),
  },
  {
    kind: "kv.huge",
    weight: 1,
    apply: (c) =>
      setKv(
        c,
        c.rng.pick(KV_KEYS),
        c.rng.pick([1e308, raw("1e999"), raw("-1e999"), -1e308, 2 ** 53 + 1, 1e15]),
      ),
  },
  {
    kind: "kv.retype",
    weight: 1,
    apply: (c) => setKv(c, c.rng.pick(KV_KEYS), c.rng.pick<unknown>(["0.7", "NaN", true, null, [1], {}, ""])),
  },
  {
    kind: "kv.edge",
    weight: 1,
    apply: (c) => setKv(c, c.rng.pick(KV_KEYS), c.rng.pick([0, -1, 1, 0.5, 1.5, 2, 1e-300, 65536, 3.7])),
  },
  { kind: "kv.bad-json", weight: 1, apply: (c) => garbleJson(c, KV_DEFAULTS) },
];

// ---------------------------------------------------------------------------------------------------------
// Missing and extra files

const FILE_KINDS: MutationKind[] = [
  {
    kind: "files.missing",
    weight: 1.5,
    apply(c) {
      const present = [...c.files.keys()];
      if (!present.length) return null;
      const file = c.rng.chance(0.6)
        ? c.rng.pick(
          [CONFIG, WEIGHTS, TOKENIZER, TOKENIZER_CONFIG, KV_DEFAULTS].filter((f) => c.files.has(f)),
        )
        : c.rng.pick(present);
      if (file === undefined) return null;
      c.files.delete(file);
      return { file, detail: `${file} deleted` };
    },
  },
  {
    kind: "files.empty",
    weight: 1,
    apply(c) {
      const present = [...c.files.keys()];
      if (!present.length) return null;
      const file = c.rng.pick(present);
      c.files.set(file, new Uint8Array(0));
      return { file, detail: `${file} emptied` };
    },
  },
  {
    kind: "files.none",
    weight: 0.2,
    apply(c) {
      c.files.clear();
      return { file: "*", detail: "every file deleted" };
    },
  },
  {
    kind: "files.extra",
    weight: 0.3,
    apply(c) {
      const file = c.rng.pick([
        "README.md",
        "generation_config.json",
        "model.bin",
        "model-00001-of-00001.safetensors",
      ]);
      c.files.set(file, c.rng.bytes(c.rng.int(0, 256)));
      return { file, detail: `unrelated ${file} added` };
    },
  },
];

/** The whole catalogue. */
export const MUTATION_KINDS: readonly MutationKind[] = [
  ...CONFIG_KINDS,
  ...ST_KINDS,
  ...INDEX_KINDS,
  ...TOKENIZER_KINDS,
  ...KV_KINDS,
  ...FILE_KINDS,
];
