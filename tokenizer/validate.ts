/**
 * Shape checks of `tokenizer.json` and `tokenizer_config.json` before the tokenizer trusts them: every field
 * the tokenizer reads is checked for its type (and ids for range and uniqueness), so that a malformed file is
 * a {@link TokenizerError} naming the file and the field — never a stray TypeError from deep inside the
 * loader, nor a silently different tokenization.
 *
 * @module
 */

import { onigToRegExp } from "./regex.ts";

/** Token ids must lie below this (16.7M; real vocabularies stay under 300k). */
export const MAX_TOKEN_ID = 1 << 24;

/** A tokenizer file the tokenizer cannot use; the message names the file and, when one is at fault, the field. */
export class TokenizerError extends Error {
  /** The file at fault (its path, or `tokenizer.json` / `tokenizer_config.json`). */
  readonly file: string;
  /** The field at fault as a path (`model.vocab`, `added_tokens[3].id`), or null. */
  readonly field: string | null;
  constructor(file: string, field: string | null, problem: string) {
    super(field === null ? `${file}: ${problem}` : `${file}: "${field}" ${problem}`);
    this.name = "TokenizerError";
    this.file = file;
    this.field = field;
  }
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** A short rendering of a JSON value for messages. */
function show(v: unknown): string {
  if (v === undefined) return "nothing";
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Checks the file's fields one by one; `fail` throws naming the field. */
class Checker {
  constructor(readonly file: string) {}

  fail(field: string | null, problem: string): never {
    throw new TokenizerError(this.file, field, problem);
  }

  object(v: unknown, field: string, what = "an object"): Record<string, unknown> {
    if (!isObject(v)) this.fail(field, `must be ${what}, got ${show(v)}`);
    return v;
  }

  array(v: unknown, field: string, what = "an array"): unknown[] {
    if (!Array.isArray(v)) this.fail(field, `must be ${what}, got ${show(v)}`);
    return v;
  }

  optBool(o: Record<string, unknown>, key: string, field: string): void {
    const v = o[key];
    if (v !== undefined && v !== null && typeof v !== "boolean") {
      this.fail(`${field}.${key}`, `must be a boolean, got ${show(v)}`);
    }
  }

  optString(o: Record<string, unknown>, key: string, field: string): void {
    const v = o[key];
    if (v !== undefined && v !== null && typeof v !== "string") {
      this.fail(`${field}.${key}`, `must be a string, got ${show(v)}`);
    }
  }

  id(v: unknown, field: string): number {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v >= MAX_TOKEN_ID) {
      this.fail(field, `must be a token id (an integer in [0, ${MAX_TOKEN_ID})), got ${show(v)}`);
    }
    return v;
  }

  /** A Split/Replace pattern: `{String: s}` or `{Regex: onig}` (the regex must translate). */
  pattern(v: unknown, field: string): void {
    const p = this.object(v, field, 'an object {"String": …} or {"Regex": …}');
    if (typeof p.Regex === "string") {
      try {
        onigToRegExp(p.Regex);
      } catch (e) {
        this.fail(`${field}.Regex`, `is not a regex this tokenizer can translate (${(e as Error).message})`);
      }
    } else if (typeof p.String !== "string") {
      this.fail(field, `must be an object {"String": …} or {"Regex": …}, got ${show(v)}`);
    }
  }
}

const NORMALIZERS = ["NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "Replace", "Sequence"];
const PRE_TOKENIZERS = ["Sequence", "Split", "ByteLevel", "Digits"];
const SPLIT_BEHAVIORS = ["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"];
const POST_PROCESSORS = [
  "ByteLevel",
  "TemplateProcessing",
  "RobertaProcessing",
  "BertProcessing",
  "Sequence",
];

function checkNormalizer(c: Checker, v: unknown, field: string): void {
  if (v === undefined || v === null) return;
  const n = c.object(v, field);
  if (typeof n.type !== "string" || !NORMALIZERS.includes(n.type)) {
    c.fail(`${field}.type`, `${show(n.type)} is not a supported normalizer (${NORMALIZERS.join(", ")})`);
  }
  if (n.type === "Sequence") {
    c.array(n.normalizers, `${field}.normalizers`).forEach((s, i) =>
      checkNormalizer(c, s, `${field}.normalizers[${i}]`)
    );
  } else if (n.type === "Replace") {
    c.pattern(n.pattern, `${field}.pattern`);
    if (typeof n.content !== "string") c.fail(`${field}.content`, `must be a string, got ${show(n.content)}`);
  } else if (n.type === "Strip") {
    c.optBool(n, "strip_left", field);
    c.optBool(n, "strip_right", field);
  }
}

function checkPreTokenizer(c: Checker, v: unknown, field: string): void {
  if (v === undefined || v === null) return;
  const p = c.object(v, field);
  if (typeof p.type !== "string" || !PRE_TOKENIZERS.includes(p.type)) {
    c.fail(
      `${field}.type`,
      `${show(p.type)}: unsupported pre-tokenizer (supported: ${PRE_TOKENIZERS.join(", ")})`,
    );
  }
  if (p.type === "Sequence") {
    c.array(p.pretokenizers, `${field}.pretokenizers`).forEach((s, i) =>
      checkPreTokenizer(c, s, `${field}.pretokenizers[${i}]`)
    );
  } else if (p.type === "Split") {
    c.pattern(p.pattern, `${field}.pattern`);
    if (p.behavior !== undefined && !SPLIT_BEHAVIORS.includes(p.behavior as string)) {
      c.fail(`${field}.behavior`, `${show(p.behavior)}: unsupported split behavior`);
    }
    c.optBool(p, "invert", field);
  } else if (p.type === "ByteLevel") {
    c.optBool(p, "add_prefix_space", field);
    c.optBool(p, "use_regex", field);
  } else if (p.type === "Digits") {
    c.optBool(p, "individual_digits", field);
  }
}

function checkPostProcessor(c: Checker, v: unknown, field: string): void {
  if (v === undefined || v === null) return;
  const p = c.object(v, field);
  if (typeof p.type !== "string" || !POST_PROCESSORS.includes(p.type)) {
    c.fail(
      `${field}.type`,
      `${show(p.type)}: unsupported post-processor (supported: ${POST_PROCESSORS.join(", ")})`,
    );
  }
  if (p.type === "Sequence") {
    c.array(p.processors, `${field}.processors`).forEach((s, i) =>
      checkPostProcessor(c, s, `${field}.processors[${i}]`)
    );
  } else if (p.type === "TemplateProcessing") {
    const special = p.special_tokens === undefined || p.special_tokens === null
      ? {}
      : c.object(p.special_tokens, `${field}.special_tokens`);
    for (const [name, t] of Object.entries(special)) {
      const f = `${field}.special_tokens.${name}`;
      const ids = c.array(c.object(t, f).ids, `${f}.ids`, "an array of token ids");
      ids.forEach((id, i) => c.id(id, `${f}.ids[${i}]`));
    }
    if (p.single === undefined || p.single === null) return;
    c.array(p.single, `${field}.single`).forEach((item, i) => {
      const f = `${field}.single[${i}]`;
      const it = c.object(item, f, 'an object {"Sequence": …} or {"SpecialToken": …}');
      if (it.SpecialToken !== undefined) {
        const id = c.object(it.SpecialToken, `${f}.SpecialToken`).id;
        if (typeof id !== "string") c.fail(`${f}.SpecialToken.id`, `must be a string, got ${show(id)}`);
        if (!isObject(special[id]) || !Array.isArray(special[id].ids)) {
          c.fail(`${f}.SpecialToken.id`, `${show(id)} has no entry with ids in "${field}.special_tokens"`);
        }
      } else if (it.Sequence === undefined) {
        c.fail(f, `must be an object {"Sequence": …} or {"SpecialToken": …}, got ${show(item)}`);
      }
    });
  } else if (p.type === "RobertaProcessing" || p.type === "BertProcessing") {
    for (const key of ["cls", "sep"]) {
      const t = p[key];
      if (!Array.isArray(t) || t.length !== 2 || typeof t[0] !== "string") {
        c.fail(`${field}.${key}`, `must be a pair [token, id], got ${show(t)}`);
      }
      c.id(t[1], `${field}.${key}[1]`);
    }
  }
}

function checkDecoder(c: Checker, v: unknown, field: string): void {
  const d = isObject(v) ? v : null;
  const ok = d?.type === "ByteLevel" ||
    (d?.type === "Sequence" && Array.isArray(d.decoders) &&
      d.decoders.every((x: Json) => isObject(x) && x.type === "ByteLevel"));
  if (!ok) {
    c.fail(field, `${show(d?.type ?? v)}: unsupported decoder (only ByteLevel is implemented)`);
  }
}

/**
 * Checks the shape of a parsed `tokenizer.json` (`file` names it in errors): a BPE model whose `vocab` maps
 * each token to a distinct id, `merges` as "a b" strings or [a, b] pairs, well-formed `added_tokens` with
 * distinct ids and contents, and supported normalizer, pre-tokenizer, post-processor and decoder.
 */
export function validateTokenizerJson(json: unknown, file = "tokenizer.json"): void {
  const c: Checker = new Checker(file);
  if (!isObject(json)) c.fail(null, `not a JSON object (got ${show(json)})`);
  const model = c.object(json.model, "model");
  if (model.type !== undefined && model.type !== "BPE") {
    c.fail("model.type", `${show(model.type)} is not supported: only BPE models are`);
  }
  const vocab = c.object(model.vocab, "model.vocab", "an object of token → id");
  const byId = new Map<number, string>();
  for (const tok in vocab) {
    const id = vocab[tok];
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0 || id >= MAX_TOKEN_ID) {
      c.fail("model.vocab", `maps ${show(tok)} to ${show(id)}: ids must be integers in [0, ${MAX_TOKEN_ID})`);
    }
    const other = byId.get(id);
    if (other !== undefined) c.fail("model.vocab", `gives id ${id} to both ${show(other)} and ${show(tok)}`);
    byId.set(id, tok);
  }
  if (model.merges !== undefined && model.merges !== null) {
    const merges = c.array(
      model.merges,
      "model.merges",
      'an array of "left right" strings or [left, right] pairs',
    );
    for (let i = 0; i < merges.length; i++) {
      const m = merges[i];
      const ok = typeof m === "string" ||
        (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string");
      if (!ok) c.fail(`model.merges[${i}]`, `must be "left right" or [left, right], got ${show(m)}`);
    }
  }
  for (const key of ["byte_fallback", "ignore_merges", "fuse_unk"]) c.optBool(model, key, "model");
  for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) c.optString(model, key, "model");

  if (json.added_tokens !== undefined && json.added_tokens !== null) {
    const added = c.array(json.added_tokens, "added_tokens");
    const ids = new Map<number, string>();
    const contents = new Set<string>();
    added.forEach((t, i) => {
      const f = `added_tokens[${i}]`;
      const o = c.object(t, f);
      const id = c.id(o.id, `${f}.id`);
      if (typeof o.content !== "string" || o.content === "") {
        c.fail(`${f}.content`, `must be a non-empty string, got ${show(o.content)}`);
      }
      for (const key of ["special", "lstrip", "rstrip", "single_word", "normalized"]) c.optBool(o, key, f);
      if (ids.has(id)) c.fail(`${f}.id`, `${id} is already the id of added token ${show(ids.get(id))}`);
      if (contents.has(o.content)) c.fail(`${f}.content`, `${show(o.content)} is already an added token`);
      ids.set(id, o.content);
      contents.add(o.content);
    });
  }
  checkNormalizer(c, json.normalizer, "normalizer");
  checkPreTokenizer(c, json.pre_tokenizer, "pre_tokenizer");
  checkPostProcessor(c, json.post_processor, "post_processor");
  checkDecoder(c, json.decoder, "decoder");
}

/** A special-token field of tokenizer_config.json: a string, `{content: string}`, or null/absent. */
function checkTokenField(c: Checker, cfg: Record<string, unknown>, key: string): void {
  const v = cfg[key];
  if (v === undefined || v === null || typeof v === "string") return;
  if (isObject(v) && typeof v.content === "string") return;
  c.fail(key, `must be a token (a string or {"content": string}) or null, got ${show(v)}`);
}

/**
 * Checks the shape of a parsed `tokenizer_config.json` (null: no file): the fields the tokenizer reads —
 * `bos_token`, `eos_token`, `add_bos_token`, `add_eos_token`, `tokenizer_class`, `chat_template`.
 */
export function validateTokenizerConfig(config: unknown, file = "tokenizer_config.json"): void {
  if (config === null || config === undefined) return;
  const c: Checker = new Checker(file);
  if (!isObject(config)) c.fail(null, `not a JSON object (got ${show(config)})`);
  checkTokenField(c, config, "bos_token");
  checkTokenField(c, config, "eos_token");
  for (const key of ["add_bos_token", "add_eos_token"]) {
    const v = config[key];
    if (v !== undefined && v !== null && typeof v !== "boolean") {
      c.fail(key, `must be a boolean, got ${show(v)}`);
    }
  }
  const cls = config.tokenizer_class;
  if (cls !== undefined && cls !== null && typeof cls !== "string") {
    c.fail("tokenizer_class", `must be a string, got ${show(cls)}`);
  }
  const ct = config.chat_template;
  if (ct === undefined || ct === null || typeof ct === "string") return;
  c.array(ct, "chat_template", "a string or an array of {name, template}").forEach((t, i) => {
    const o = c.object(t, `chat_template[${i}]`, "an object {name, template}");
    if (typeof o.template !== "string") {
      c.fail(`chat_template[${i}].template`, `must be a string, got ${show(o.template)}`);
    }
  });
}
