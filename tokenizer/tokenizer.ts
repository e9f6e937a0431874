/**
 * Byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json` (+ optional `tokenizer_config.json`).
 *
 * Pipeline of `encode`, as in the Rust `tokenizers` crate: split out added tokens that match the raw text
 * (leftmost-longest), normalize the rest, split out added tokens that match normalized text, pre-tokenize
 * (regex splits, then the byte-level alphabet), run BPE per pre-token, then apply the post-processor's
 * special tokens when `addSpecialTokens` is set.
 *
 * Supported components: normalizers NFC/NFD/NFKC/NFKD/Lowercase/Replace/Strip/Sequence; pre-tokenizers
 * Split (all behaviors)/ByteLevel/Digits/Sequence; model BPE without unk/byte-fallback; decoder ByteLevel;
 * post-processors ByteLevel/TemplateProcessing/Roberta/Bert/Sequence. Anything else throws at load time
 * rather than tokenizing differently.
 *
 * @module
 */

import { type ModelSource, readSourceText, resolveFileSpec, sourcePath } from "../src/io/source.ts";
import { BytePairEncoder } from "./bpe.ts";
import type { BpeModelJson } from "./bpe.ts";
import { byteLevelToBytes } from "./bytes.ts";
import { detectChatTemplate, JinjaChatTemplate, renderChatParts } from "./chat.ts";
import type { ChatMessage, ChatPart, ChatTemplateName, ChatTemplateOptions } from "./chat.ts";
import { escapeRegExp, onigToRegExp } from "./regex.ts";
import { TokenizerError, validateTokenizerConfig, validateTokenizerJson } from "./validate.ts";

/** An added (often special) token: matched in the text before pre-tokenization. */
export interface AddedToken {
  /** Token id. */
  id: number;
  /** The literal text that stands for the token. */
  content: string;
  /** Special tokens are dropped by `decode(…, { skipSpecialTokens: true })`. */
  special: boolean;
  /** Absorb whitespace to the left of a match. */
  lstrip: boolean;
  /** Absorb whitespace to the right of a match. */
  rstrip: boolean;
  /** Match only when not adjacent to word characters. */
  singleWord: boolean;
  /** Match against normalized text (true) or raw text (false). */
  normalized: boolean;
}

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Add the post-processor's special tokens (e.g. Llama-3's `<|begin_of_text|>`). Default true, as in HF. */
  addSpecialTokens?: boolean;
  /**
   * What the text of an added token written in `text` becomes: `"parse"` (default, as in HF) its control id;
   * `"plain"` ordinary text, so that text a user typed can never forge a control token (`<｜Assistant｜>`,
   * `<|im_end|>`). "plain" covers every added token, special or not: chat markers such as DeepSeek's
   * `<｜User｜>` are added tokens not marked special.
   */
  specialTokens?: "parse" | "plain";
}

/** A piece of text to encode, and whether added tokens are recognised in it. */
interface EncodePart {
  text: string;
  parse: boolean;
}

/** Options of {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Leave out tokens marked special. Default false. */
  skipSpecialTokens?: boolean;
  /**
   * Apply transformers' `clean_up_tokenization` (" ." → ".", " n't" → "n't", …). Default false: it is lossy,
   * so a generated text should not go through it (transformers enables it when the config says so).
   */
  cleanUpTokenizationSpaces?: boolean;
}

/** transformers' `clean_up_tokenization`: removes the space before some punctuation and contractions. */
export function cleanUpTokenization(text: string): string {
  return text
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

type Emit = (piece: string) => void;
type Step = (text: string, emit: Emit) => void;
type Behavior = "Isolated" | "Removed" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";

// deno-lint-ignore no-explicit-any
type Json = any;

/** GPT-2's split pattern, used by a ByteLevel pre-tokenizer with `use_regex`. */
const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** Tokens that end a generation in the families Lethe serves, besides the configured EOS. */
const KNOWN_STOP_TOKENS = [
  "<｜end▁of▁sentence｜>",
  "<|im_end|>",
  "<|endoftext|>",
  "<|eot_id|>",
  "<|end_of_text|>",
  "<|eom_id|>",
];
const KNOWN_BOS_TOKENS = ["<｜begin▁of▁sentence｜>", "<|begin_of_text|>"];

/** A regex step with one of the Hugging Face split behaviors. */
function splitStep(re: RegExp, behavior: Behavior, invert: boolean): Step {
  if (behavior === "Isolated" && !invert) {
    // Fast path used by Qwen2 and Llama-3: every match and every gap is a piece.
    return (text, emit) => {
      re.lastIndex = 0;
      let last = 0;
      let m: RegExpExecArray | null;
      while ((m = re.exec(text)) !== null) {
        const s = m.index, e = s + m[0].length;
        if (e === s) {
          re.lastIndex = s + 1; // empty matches split nothing
          continue;
        }
        if (s > last) emit(text.slice(last, s));
        emit(m[0]);
        last = e;
      }
      if (last < text.length) emit(text.slice(last));
    };
  }
  return (text, emit) => {
    // Spans covering the text: [start, end, isDelimiter].
    const spans: Array<[number, number, boolean]> = [];
    re.lastIndex = 0;
    let last = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(text)) !== null) {
      const s = m.index, e = s + m[0].length;
      if (e === s) {
        re.lastIndex = s + 1;
        continue;
      }
      if (s > last) spans.push([last, s, invert]);
      spans.push([s, e, !invert]);
      last = e;
    }
    if (last < text.length) spans.push([last, text.length, invert]);
    const pieces: Array<[number, number]> = [];
    let prevDelim = false;
    if (behavior === "MergedWithNext") {
      for (let i = spans.length - 1; i >= 0; i--) {
        const [s, e, d] = spans[i];
        if (d && !prevDelim && pieces.length > 0) pieces[pieces.length - 1][0] = s;
        else pieces.push([s, e]);
        prevDelim = d;
      }
      pieces.reverse();
    } else {
      for (const [s, e, d] of spans) {
        if (behavior === "Removed") {
          if (!d) pieces.push([s, e]);
        } else if (behavior === "Isolated") {
          pieces.push([s, e]);
        } else if (behavior === "MergedWithPrevious" && d && !prevDelim && pieces.length > 0) {
          pieces[pieces.length - 1][1] = e;
        } else if (behavior === "Contiguous" && d && prevDelim) {
          pieces[pieces.length - 1][1] = e;
        } else {
          pieces.push([s, e]);
        }
        prevDelim = d;
      }
    }
    for (const [s, e] of pieces) emit(text.slice(s, e));
  };
}

function patternOf(p: Json, where: string): RegExp {
  if (typeof p?.Regex === "string") return onigToRegExp(p.Regex);
  if (typeof p?.String === "string") return new RegExp(escapeRegExp(p.String), "gu");
  throw new Error(`tokenizer: ${where} has no String/Regex pattern`);
}

function buildPreTokenizer(cfg: Json): { run: Step; byteLevel: boolean } {
  const steps: Step[] = [];
  let byteLevel = false;
  const add = (c: Json): void => {
    switch (c?.type) {
      case "Sequence":
        for (const sub of c.pretokenizers ?? []) add(sub);
        break;
      case "Split": {
        const behavior = (c.behavior ?? "Isolated") as Behavior;
        if (
          !["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"].includes(behavior)
        ) {
          throw new Error(`tokenizer: unsupported split behavior ${behavior}`);
        }
        steps.push(splitStep(patternOf(c.pattern, "Split"), behavior, c.invert === true));
        break;
      }
      case "ByteLevel":
        byteLevel = true;
        if (c.add_prefix_space === true) steps.push((t, emit) => emit(t.startsWith(" ") ? t : " " + t));
        if (c.use_regex !== false) steps.push(splitStep(onigToRegExp(GPT2_PATTERN), "Isolated", false));
        break;
      case "Digits":
        steps.push(splitStep(c.individual_digits ? /\p{N}/gu : /\p{N}+/gu, "Isolated", false));
        break;
      default:
        throw new Error(`tokenizer: unsupported pre-tokenizer ${JSON.stringify(c?.type)}`);
    }
  };
  if (cfg != null) add(cfg);
  let run: Step = (t, emit) => emit(t);
  for (let i = steps.length - 1; i >= 0; i--) {
    const step = steps[i], inner = run;
    run = i === steps.length - 1 ? step : (t, emit) => step(t, (p) => inner(p, emit));
  }
  return { run, byteLevel };
}

function buildNormalizer(cfg: Json): ((s: string) => string) | null {
  if (cfg == null) return null;
  switch (cfg.type) {
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD":
      return (s) => s.normalize(cfg.type);
    case "Lowercase":
      return (s) => s.toLowerCase();
    case "Strip": {
      const left = cfg.strip_left !== false, right = cfg.strip_right !== false;
      return (s) => left && right ? s.trim() : left ? s.trimStart() : right ? s.trimEnd() : s;
    }
    case "Replace": {
      const re = patternOf(cfg.pattern, "Replace");
      const content = String(cfg.content);
      return (s) => s.replace(re, () => content);
    }
    case "Sequence": {
      const parts = (cfg.normalizers ?? []).map(buildNormalizer).filter((f: unknown) => f !== null);
      return (s) => parts.reduce((acc: string, f: (s: string) => string) => f(acc), s);
    }
    default:
      throw new Error(`tokenizer: unsupported normalizer ${JSON.stringify(cfg.type)}`);
  }
}

/** Special-token ids the post-processor puts around a single sequence. */
function buildPostProcessor(cfg: Json): { prefix: number[]; suffix: number[] } {
  if (cfg == null) return { prefix: [], suffix: [] };
  switch (cfg.type) {
    case "ByteLevel":
      return { prefix: [], suffix: [] };
    case "TemplateProcessing": {
      const prefix: number[] = [], suffix: number[] = [];
      let seen = false;
      for (const item of cfg.single ?? []) {
        if (item.Sequence) {
          seen = true;
        } else if (item.SpecialToken) {
          const ids = cfg.special_tokens?.[item.SpecialToken.id]?.ids;
          if (!Array.isArray(ids)) {
            throw new Error(`tokenizer: template token ${item.SpecialToken.id} has no ids`);
          }
          (seen ? suffix : prefix).push(...ids);
        }
      }
      return { prefix, suffix };
    }
    case "RobertaProcessing":
    case "BertProcessing":
      return { prefix: [cfg.cls[1]], suffix: [cfg.sep[1]] };
    case "Sequence": {
      let prefix: number[] = [], suffix: number[] = [];
      for (const sub of cfg.processors ?? []) {
        const p = buildPostProcessor(sub);
        prefix = [...p.prefix, ...prefix];
        suffix = [...suffix, ...p.suffix];
      }
      return { prefix, suffix };
    }
    default:
      throw new Error(`tokenizer: unsupported post-processor ${JSON.stringify(cfg.type)}`);
  }
}

function checkDecoder(cfg: Json): void {
  if (cfg?.type === "ByteLevel") return;
  if (cfg?.type === "Sequence" && (cfg.decoders ?? []).every((d: Json) => d?.type === "ByteLevel")) return;
  throw new Error(
    `tokenizer: unsupported decoder ${JSON.stringify(cfg?.type)} (only ByteLevel is implemented)`,
  );
}

/** Leftmost-longest matcher over a set of added tokens. */
class AddedMatcher {
  private readonly re: RegExp;
  private readonly contents: string[];
  constructor(private readonly byContent: Map<string, AddedToken>) {
    // Alternatives ordered longest first make JS's leftmost-first alternation leftmost-longest.
    this.contents = [...byContent.keys()].sort((a, b) => b.length - a.length);
    this.re = new RegExp(this.contents.map(escapeRegExp).join("|"), "gu");
  }

  /** The longest token at `s` shorter than `longest` that `accept` takes (a vetoed match's fallback). */
  private shorter(
    text: string,
    s: number,
    longest: number,
    accept: (start: number, end: number) => boolean,
  ): string | null {
    for (const c of this.contents) {
      if (c.length < longest && text.startsWith(c, s) && accept(s, s + c.length)) return c;
    }
    return null;
  }

  /**
   * Splits `text` into runs of text (with their start offset) and matched tokens. `accept(start, end)`, when
   * given, vetoes matches: a vetoed match is ordinary text and the search goes on after its first character.
   */
  split(
    text: string,
    onText: (s: string, start: number) => void,
    onToken: (id: number) => void,
    accept?: (start: number, end: number) => boolean,
  ): void {
    const re = this.re;
    re.lastIndex = 0;
    let last = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(text)) !== null) {
      let tok = this.byContent.get(m[0])!;
      let s = m.index, e = s + m[0].length;
      if (accept && !accept(s, e)) {
        // A vetoed match (it runs into plain text) may still contain an accepted shorter token at s.
        const c = this.shorter(text, s, e - s, accept);
        if (c === null) {
          re.lastIndex = s + 1;
          continue;
        }
        tok = this.byContent.get(c)!;
        e = s + c.length;
      }
      if (tok.singleWord && (isWordChar(text, s - 1) || isWordChar(text, e))) {
        re.lastIndex = s + 1;
        continue;
      }
      if (tok.lstrip) { while (s > last && isSpace(text, s - 1)) s--; }
      if (tok.rstrip) { while (e < text.length && isSpace(text, e)) e++; }
      if (s > last) onText(text.slice(last, s), last);
      onToken(tok.id);
      last = e;
      re.lastIndex = e;
    }
    if (last < text.length) onText(last === 0 ? text : text.slice(last), last);
  }
}

const WORD_RE = /[\p{L}\p{N}_]/u;
const SPACE_RE = /\p{White_Space}/u;
function isWordChar(text: string, i: number): boolean {
  return i >= 0 && i < text.length && WORD_RE.test(text[i]);
}
function isSpace(text: string, i: number): boolean {
  return SPACE_RE.test(text[i]);
}

function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v !== null && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return null;
}

const UTF8 = new TextEncoder();

/** A byte-level BPE tokenizer (Qwen2, Llama-3 and DeepSeek-R1-Distill vocabularies). */
export class Tokenizer {
  /** Number of token ids known to the tokenizer (largest model or added id + 1). */
  readonly vocabSize: number;
  /** Id of the beginning-of-sequence token from the config (or a known BOS token), or null. */
  readonly bosId: number | null;
  /** Id of the end-of-sequence token from the config (or a known EOS token), or null. */
  readonly eosId: number | null;
  /** Ids that end a generation: the EOS plus the family's known end-of-turn tokens present here. */
  readonly stopIds: readonly number[];
  /** The chat template family recognised from the config or vocabulary, or null. */
  readonly chatTemplate: ChatTemplateName | null;
  /** Default system prompt of the recognised template (Qwen2.5's ChatML), or null. */
  readonly defaultSystemPrompt: string | null;
  /**
   * The Jinja source of the model's own chat template (`chat_template` of `tokenizer_config.json`), rendered
   * in place of the {@link chatTemplate} family; null when the config has none (or only a text that never
   * reads `messages`, which cannot render a conversation).
   */
  readonly chatTemplateSource: string | null;
  readonly #jinja: JinjaChatTemplate | null;
  /** Added tokens, in file order. */
  readonly addedTokens: readonly AddedToken[];

  private readonly model: BytePairEncoder;
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly rawMatcher: AddedMatcher | null;
  private readonly normMatcher: AddedMatcher | null;
  private readonly normalize: ((s: string) => string) | null;
  private readonly preTokenize: Step;
  private post: { prefix: number[]; suffix: number[] };
  private readonly bytesCache: (Uint8Array | null | undefined)[] = [];

  private constructor(json: Json, config: Json, file: string, configFile: string) {
    // Shapes first: a malformed file is a TokenizerError naming the file and the field.
    validateTokenizerJson(json, file);
    validateTokenizerConfig(config, configFile);
    // What the shape checks cannot see (a merge of unknown tokens, an unsupported option) still names the file.
    const named = <T>(build: () => T): T => {
      try {
        return build();
      } catch (e) {
        if (e instanceof TokenizerError) throw e;
        throw new TokenizerError(file, null, (e as Error).message.replace(/^tokenizer: /, ""));
      }
    };
    const model = json.model;
    if (model.byte_fallback === true) {
      throw new TokenizerError(file, "model.byte_fallback", "BPE is not supported");
    }
    if (model.continuing_subword_prefix || model.end_of_word_suffix) {
      throw new TokenizerError(file, "model", "subword prefixes/suffixes are not supported");
    }
    this.model = named(() => new BytePairEncoder({ ...model, merges: model.merges ?? [] } as BpeModelJson));
    this.normalize = named(() => buildNormalizer(json.normalizer));
    const pre = named(() => buildPreTokenizer(json.pre_tokenizer));
    if (!pre.byteLevel) {
      throw new TokenizerError(
        file,
        "pre_tokenizer",
        "has no ByteLevel step (the pre-tokenizer of a byte-level BPE needs one)",
      );
    }
    this.preTokenize = pre.run;
    named(() => checkDecoder(json.decoder));
    this.post = named(() => buildPostProcessor(json.post_processor));

    const added: AddedToken[] = [];
    for (const t of json.added_tokens ?? []) {
      const tok: AddedToken = {
        id: t.id,
        content: t.content,
        special: t.special === true,
        lstrip: t.lstrip === true,
        rstrip: t.rstrip === true,
        singleWord: t.single_word === true,
        normalized: t.normalized ?? !t.special,
      };
      added.push(tok);
      this.addedById.set(tok.id, tok);
      this.addedByContent.set(tok.content, tok);
    }
    this.addedTokens = added;
    const raw = new Map<string, AddedToken>(), norm = new Map<string, AddedToken>();
    for (const t of added) {
      if (t.content === "") continue;
      if (t.normalized && this.normalize) norm.set(this.normalize(t.content), t);
      else raw.set(t.content, t);
    }
    this.rawMatcher = raw.size > 0 ? new AddedMatcher(raw) : null;
    this.normMatcher = norm.size > 0 ? new AddedMatcher(norm) : null;

    let maxId = this.model.idToToken.length - 1;
    for (const t of added) maxId = Math.max(maxId, t.id);
    this.vocabSize = maxId + 1;
    for (const id of [...this.post.prefix, ...this.post.suffix]) {
      if (this.idToToken(id) === undefined) {
        throw new TokenizerError(
          file,
          "post_processor",
          `adds token id ${id}, which is not in the vocabulary`,
        );
      }
    }

    // A named BOS/EOS must exist: silently running without one would change every prompt and stop.
    const idOf = (v: unknown, key: string): number | null => {
      const s = tokenString(v);
      if (s === null) return null;
      const id = this.tokenToId(s);
      if (id === undefined) {
        throw new TokenizerError(configFile, key, `${JSON.stringify(s)} is not in the vocabulary of ${file}`);
      }
      return id;
    };
    const firstKnown = (names: string[]): number | null => {
      for (const n of names) {
        const id = this.addedByContent.get(n)?.id;
        if (id !== undefined) return id;
      }
      return null;
    };
    this.bosId = config?.bos_token !== undefined
      ? idOf(config.bos_token, "bos_token")
      : firstKnown(KNOWN_BOS_TOKENS);
    this.eosId = config?.eos_token !== undefined
      ? idOf(config.eos_token, "eos_token")
      : firstKnown(KNOWN_STOP_TOKENS);
    const stops = new Set<number>();
    if (this.eosId !== null) stops.add(this.eosId);
    for (const n of KNOWN_STOP_TOKENS) {
      const id = this.addedByContent.get(n)?.id;
      if (id !== undefined) stops.add(id);
    }
    this.stopIds = [...stops];

    // transformers rebuilds the post-processor of Llama tokenizer classes from add_bos_token/add_eos_token
    // (DeepSeek-R1-Distill configs use LlamaTokenizerFast), ignoring the one in tokenizer.json.
    if (config?.tokenizer_class === "LlamaTokenizerFast" || config?.tokenizer_class === "LlamaTokenizer") {
      const addBos = config.add_bos_token ?? true, addEos = config.add_eos_token ?? false;
      this.post = {
        prefix: addBos && this.bosId !== null ? [this.bosId] : [],
        suffix: addEos && this.eosId !== null ? [this.eosId] : [],
      };
    }

    const detected = detectChatTemplate(config, (t) => this.addedByContent.has(t));
    this.chatTemplate = detected?.name ?? null;
    this.defaultSystemPrompt = detected?.defaultSystemPrompt ?? null;
    const jinja = JinjaChatTemplate.fromConfig(config, configFile);
    this.#jinja = jinja !== null && /\bmessages\b/.test(jinja.source) ? jinja : null;
    this.chatTemplateSource = this.#jinja?.source ?? null;
  }

  /**
   * Builds a tokenizer from parsed `tokenizer.json` and (optionally) `tokenizer_config.json` objects. A
   * malformed one throws a {@link TokenizerError} naming the file (`file`, `configFile`) and the field.
   */
  static fromJson(
    json: unknown,
    config?: unknown,
    file = "tokenizer.json",
    configFile = "tokenizer_config.json",
  ): Tokenizer {
    return new Tokenizer(json, config ?? null, file, configFile);
  }

  /**
   * Reads `tokenizer.json` and, when the source has it, `tokenizer_config.json` from a model source (a
   * directory, URL, browser files or memory; see `ModelSource`). Errors name the file.
   */
  static async fromSource(source: ModelSource, file = "tokenizer.json"): Promise<Tokenizer> {
    const slash = file.lastIndexOf("/");
    const configFile = `${file.slice(0, slash + 1)}tokenizer_config.json`;
    const [text, configText] = await Promise.all([
      readSourceText(source, file),
      readSourceText(source, configFile),
    ]);
    const parse = (t: string, f: string): unknown => {
      try {
        return JSON.parse(t);
      } catch (e) {
        throw new TokenizerError(sourcePath(source, f), null, `not valid JSON (${(e as Error).message})`);
      }
    };
    if (text === null) throw new TokenizerError(sourcePath(source, file), null, "no such file");
    return new Tokenizer(
      parse(text, file),
      configText === null ? null : parse(configText, configFile),
      sourcePath(source, file),
      sourcePath(source, configFile),
    );
  }

  /**
   * Reads a local `tokenizer.json` (or a directory holding it) and, when present beside it,
   * `tokenizer_config.json`. Local paths need the Deno entry (`deno.ts`); elsewhere use {@link fromSource}.
   */
  static async fromFile(path: string): Promise<Tokenizer> {
    const { source, file } = resolveFileSpec(path, (name) => name.endsWith(".json"));
    return await Tokenizer.fromSource(source, file ?? "tokenizer.json");
  }

  /**
   * Encodes text to token ids. Added/special tokens written in the text are recognised unless
   * `specialTokens` is `"plain"` (see {@link EncodeOptions}).
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const parse = (options.specialTokens ?? "parse") === "parse";
    return this.#encodeParts([{ text, parse }], options.addSpecialTokens ?? true);
  }

  /**
   * Encodes the concatenation of `parts` as one text (pre-tokenization runs across part boundaries exactly
   * as for the joined string), recognising an added token only where its match lies wholly inside a part
   * with `parse` set. With every part parsed this is `encode(joined)`.
   */
  #encodeParts(parts: readonly EncodePart[], addSpecial: boolean): number[] {
    const out: number[] = [];
    if (addSpecial) out.push(...this.post.prefix);
    const text = parts.length === 1 ? parts[0].text : parts.map((p) => p.text).join("");
    // Parsed ranges [start, end), merged where parts touch.
    const ranges: [number, number][] = [];
    let at = 0;
    for (const p of parts) {
      const end = at + p.text.length;
      if (p.parse && end > at) {
        const last = ranges[ranges.length - 1];
        if (last && last[1] === at) last[1] = end;
        else ranges.push([at, end]);
      }
      at = end;
    }
    const allParsed = ranges.length === 1 && ranges[0][0] === 0 && ranges[0][1] === text.length;
    const within = (s: number, e: number): boolean => ranges.some(([a, b]) => a <= s && e <= b);
    const accept = allParsed ? undefined : within;
    const pushId = (id: number): void => {
      out.push(id);
    };
    const model = this.model;
    const encodePiece = (piece: string): void => model.encodeWord(piece, out);
    const encodeNormalized = (s: string): void => this.preTokenize(s, encodePiece);
    const encodeRaw = (s: string, start: number): void => {
      const n = this.normalize ? this.normalize(s) : s;
      // Normalized added tokens are matched in normalized text, whose offsets are not the raw text's: they
      // are recognised only in a run that lies wholly inside a parsed range.
      if (this.normMatcher && (allParsed || within(start, start + s.length))) {
        this.normMatcher.split(n, encodeNormalized, pushId);
      } else encodeNormalized(n);
    };
    if (this.rawMatcher && ranges.length > 0) this.rawMatcher.split(text, encodeRaw, pushId, accept);
    else if (text.length > 0) encodeRaw(text, 0);
    if (addSpecial) out.push(...this.post.suffix);
    return out;
  }

  /** Decodes ids to text; invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(this.decodeBytes(ids, options));
    return options.cleanUpTokenizationSpaces ? cleanUpTokenization(text) : text;
  }

  /** The raw bytes that `ids` stand for (unknown ids are skipped, as in Hugging Face's decode). */
  decodeBytes(ids: ArrayLike<number>, options: DecodeOptions = {}): Uint8Array {
    const skip = options.skipSpecialTokens ?? false;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      if (skip && this.isSpecial(ids[i])) continue;
      const b = this.tokenBytes(ids[i]);
      if (b === null) continue;
      parts.push(b);
      total += b.length;
    }
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  /** Bytes of one token (an added token's UTF-8 content), or null for an unknown id. */
  tokenBytes(id: number): Uint8Array | null {
    let b = this.bytesCache[id];
    if (b !== undefined) return b;
    const added = this.addedById.get(id);
    if (added) {
      b = UTF8.encode(added.content);
    } else {
      const t = this.model.idToToken[id];
      b = t === undefined ? null : byteLevelToBytes(t) ?? UTF8.encode(t);
    }
    if (Number.isInteger(id) && id >= 0) this.bytesCache[id] = b;
    return b;
  }

  /** True for added tokens marked special. */
  isSpecial(id: number): boolean {
    return this.addedById.get(id)?.special === true;
  }

  /** Id of a token spelled as in the vocabulary (byte-level alphabet) or an added token's content. */
  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.model.vocab.get(token);
  }

  /** The vocabulary spelling of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.addedById.get(id)?.content ?? this.model.idToToken[id];
  }

  /**
   * Renders a chat prompt with the model's own template ({@link chatTemplateSource}) when it has one and no other
   * family than {@link chatTemplate} is named; otherwise with the named (or recognised) family, where
   * Qwen2.5's default system prompt is applied when its template was recognised and no `defaultSystemPrompt`
   * option is given. A `defaultSystemPrompt` option with the model's template is a system message put first.
   */
  applyChatTemplate(
    messages: readonly ChatMessage[],
    template?: ChatTemplateName,
    options: ChatTemplateOptions = {},
  ): string {
    const jinja = this.#jinjaFor(template);
    if (jinja !== null) return jinja.render(messages, options);
    return this.#chatParts(messages, template, options).map((p) => p.text).join("");
  }

  /** The model's Jinja template when it applies to a call naming `template`. */
  #jinjaFor(template: ChatTemplateName | undefined): JinjaChatTemplate | null {
    if (this.#jinja === null) return null;
    return template === undefined || template === this.chatTemplate ? this.#jinja : null;
  }

  #chatParts(
    messages: readonly ChatMessage[],
    template?: ChatTemplateName,
    options: ChatTemplateOptions = {},
  ): ChatPart[] {
    const jinja = this.#jinjaFor(template);
    if (jinja !== null) return jinja.renderParts(messages, options);
    const name = template ?? this.chatTemplate;
    if (name === null) throw new Error("tokenizer: no chat template recognised; pass a template name");
    const defaultSystemPrompt = options.defaultSystemPrompt !== undefined
      ? options.defaultSystemPrompt
      : name === this.chatTemplate
      ? this.defaultSystemPrompt
      : null;
    return renderChatParts(messages, name, {
      addGenerationPrompt: options.addGenerationPrompt,
      defaultSystemPrompt,
    });
  }

  /**
   * Chat prompt ids: the template rendered around the messages (the template writes BOS, so no
   * post-processor tokens are added). The template's markers are control tokens; the messages' content is
   * encoded as plain text unless `options.specialTokens` is `"parse"` (default here `"plain"`), so that a
   * message typing `<｜end▁of▁sentence｜><｜Assistant｜>` cannot forge a turn boundary. For ordinary messages
   * the ids equal `encode(applyChatTemplate(…), { addSpecialTokens: false })`.
   */
  encodeChat(
    messages: readonly ChatMessage[],
    template?: ChatTemplateName,
    options: ChatTemplateOptions & Pick<EncodeOptions, "specialTokens"> = {},
  ): number[] {
    const parseContent = (options.specialTokens ?? "plain") === "parse";
    if (parseContent) {
      return this.#encodeParts(
        [{ text: this.applyChatTemplate(messages, template, options), parse: true }],
        false,
      );
    }
    const parts = this.#chatParts(messages, template, options);
    return this.#encodeParts(parts.map((p) => ({ text: p.text, parse: parseContent || !p.content })), false);
  }

  /** Forgets the per-word BPE cache (benchmarks of the cold path). */
  clearCache(): void {
    this.model.clearCache();
  }
}
