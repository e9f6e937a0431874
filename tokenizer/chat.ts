/**
 * Chat templates: the model's own Jinja `chat_template`, or one of three families written out in TypeScript.
 *
 * Hugging Face ships chat templates as Jinja programs in `tokenizer_config.json`. When a model has one,
 * {@link JinjaChatTemplate} renders it with `@huggingface/jinja` (the interpreter transformers.js uses), with
 * the variables transformers passes (`messages`, `add_generation_prompt`, `bos_token`, `eos_token` and the
 * config's other special tokens; `raise_exception` and `strftime_now` come with the interpreter). Without
 * one, the family renderers below are the fallback:
 * - `deepseek-r1`: DeepSeek-R1 and its distills (Qwen and Llama based).
 *   `<｜begin▁of▁sentence｜>{last system}<｜User｜>{u}<｜Assistant｜>{a}<｜end▁of▁sentence｜>…<｜Assistant｜><think>\n`.
 *   As in the official template, an assistant turn keeps only the text after its last `</think>`.
 * - `chatml`: Qwen2/Qwen2.5 (`<|im_start|>{role}\n{content}<|im_end|>\n`, generation prompt
 *   `<|im_start|>assistant\n`); Qwen's template adds a default system prompt when the first message is not
 *   a system message, which {@link detectChatTemplate} reports so callers can reproduce it.
 * - `llama3`: the plain Llama-3 header format (`<|start_header_id|>{role}<|end_header_id|>\n\n{trimmed}<|eot_id|>`).
 *
 * The family renderers do not reproduce tool calls or the date preamble of Llama-3.1's long template; the
 * Jinja path renders whatever the model's template does.
 *
 * @module
 */
import { Template } from "@huggingface/jinja";

/** One chat turn. */
export interface ChatMessage {
  /** "system", "user" or "assistant" (ChatML and Llama-3 accept any role name). */
  role: string;
  /** The message text. */
  content: string;
}

/** Names of the supported chat template families. */
export type ChatTemplateName = "deepseek-r1" | "chatml" | "llama3";

/** Options of {@link applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** End with the prompt that opens the assistant's turn (default true). */
  addGenerationPrompt?: boolean;
  /** ChatML only: system prompt inserted when the first message is not a system message (default none). */
  defaultSystemPrompt?: string | null;
}

/** What {@link detectChatTemplate} found. */
export interface DetectedChatTemplate {
  /** The template family. */
  name: ChatTemplateName;
  /** For ChatML: the default system prompt of Qwen2.5's template, when the template text contains it. */
  defaultSystemPrompt: string | null;
}

const QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/**
 * One piece of a rendered chat prompt: the template's own text (its markers, role headers, separators) or a
 * message's content. Encoders recognise control tokens only in the template's pieces, so a message that
 * contains `<｜end▁of▁sentence｜><｜Assistant｜>` cannot forge a turn boundary.
 */
export interface ChatPart {
  /** The text of the piece. */
  text: string;
  /** True for text that came from a message's content (or a system prompt); roles are template text. */
  content: boolean;
}

/** Renders messages to the prompt text of a template family. Special tokens appear as their text. */
export function applyChatTemplate(
  messages: readonly ChatMessage[],
  template: ChatTemplateName = "deepseek-r1",
  options: ChatTemplateOptions = {},
): string {
  return renderChatParts(messages, template, options).map((p) => p.text).join("");
}

/**
 * Renders messages as {@link applyChatTemplate} does, but as pieces that say which text came from the
 * messages: joined, they are exactly `applyChatTemplate`'s text.
 */
export function renderChatParts(
  messages: readonly ChatMessage[],
  template: ChatTemplateName = "deepseek-r1",
  options: ChatTemplateOptions = {},
): ChatPart[] {
  const genPrompt = options.addGenerationPrompt ?? true;
  const out: ChatPart[] = [];
  const t = (text: string): void => {
    if (text !== "") out.push({ text, content: false });
  };
  const c = (text: string): void => {
    if (text !== "") out.push({ text, content: true });
  };
  switch (template) {
    case "deepseek-r1": {
      let system = "";
      for (const m of messages) if (m.role === "system") system = m.content;
      t("<｜begin▁of▁sentence｜>");
      c(system);
      for (const m of messages) {
        if (m.role === "user") {
          t("<｜User｜>");
          c(m.content);
        } else if (m.role === "assistant") {
          const cut = m.content.lastIndexOf("</think>");
          const content = cut >= 0 ? m.content.slice(cut + "</think>".length) : m.content;
          t("<｜Assistant｜>");
          c(content);
          t("<｜end▁of▁sentence｜>");
        } else if (m.role !== "system") {
          throw new Error(`chat template deepseek-r1: unsupported role ${JSON.stringify(m.role)}`);
        }
      }
      if (genPrompt) t("<｜Assistant｜><think>\n");
      return out;
    }
    case "chatml": {
      const sys = options.defaultSystemPrompt;
      if (sys != null && messages[0]?.role !== "system") {
        t("<|im_start|>system\n");
        c(sys);
        t("<|im_end|>\n");
      }
      for (const m of messages) {
        t(`<|im_start|>${m.role}\n`);
        c(m.content);
        t("<|im_end|>\n");
      }
      if (genPrompt) t("<|im_start|>assistant\n");
      return out;
    }
    case "llama3": {
      t("<|begin_of_text|>");
      for (const m of messages) {
        t(`<|start_header_id|>${m.role}<|end_header_id|>\n\n`);
        c(m.content.trim());
        t("<|eot_id|>");
      }
      if (genPrompt) t("<|start_header_id|>assistant<|end_header_id|>\n\n");
      return out;
    }
    default:
      throw new Error(`unknown chat template ${JSON.stringify(template)}`);
  }
}

/**
 * Recognises the template family from `tokenizer_config.json`'s `chat_template` (a string, or a list of
 * `{name, template}` where the one named "default" is used) and, failing that, from which marker tokens the
 * vocabulary has. Returns null when neither identifies a family.
 */
export function detectChatTemplate(
  config: unknown,
  hasToken: (token: string) => boolean = () => false,
): DetectedChatTemplate | null {
  const text = chatTemplateSource(config);
  if (text !== null) {
    if (text.includes("<｜Assistant｜>")) return { name: "deepseek-r1", defaultSystemPrompt: null };
    if (text.includes("<|im_start|>")) {
      return {
        name: "chatml",
        defaultSystemPrompt: text.includes(QWEN_DEFAULT_SYSTEM) ? QWEN_DEFAULT_SYSTEM : null,
      };
    }
    if (text.includes("<|start_header_id|>")) return { name: "llama3", defaultSystemPrompt: null };
  }
  if (hasToken("<｜Assistant｜>")) return { name: "deepseek-r1", defaultSystemPrompt: null };
  if (hasToken("<|im_start|>")) return { name: "chatml", defaultSystemPrompt: null };
  if (hasToken("<|start_header_id|>")) return { name: "llama3", defaultSystemPrompt: null };
  return null;
}

/** The `chat_template` text of a `tokenizer_config.json` (a string, or the "default" entry of a list), or null. */
export function chatTemplateSource(config: unknown): string | null {
  const ct = (config as { chat_template?: unknown } | null | undefined)?.chat_template;
  if (typeof ct === "string") return ct;
  if (Array.isArray(ct)) {
    const entry = ct.find((t) => t?.name === "default") ?? ct[0];
    if (typeof entry?.template === "string") return entry.template;
  }
  return null;
}

/** Special-token fields of `tokenizer_config.json` that transformers passes to chat templates. */
const SPECIAL_TOKEN_KEYS = [
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
] as const;

/** A special token as the config spells it: a string, or an added-token object with `content`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  const content = (v as { content?: unknown } | null | undefined)?.content;
  return typeof content === "string" ? content : undefined;
}

/** The variables transformers passes to a chat template besides the messages: the config's special tokens. */
export function chatTemplateVariables(config: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (config === null || typeof config !== "object") return out;
  const c = config as Record<string, unknown>;
  for (const key of SPECIAL_TOKEN_KEYS) {
    const t = tokenText(c[key]);
    if (t !== undefined) out[key] = t;
  }
  const extra = c.additional_special_tokens;
  if (Array.isArray(extra)) {
    const list = extra.map(tokenText).filter((t): t is string => t !== undefined);
    (out as Record<string, unknown>).additional_special_tokens = list;
  }
  return out;
}

/** Options of {@link JinjaChatTemplate.render} and {@link JinjaChatTemplate.renderParts}. */
export interface JinjaChatTemplateOptions {
  /** End with the prompt that opens the assistant's turn (default true; passed as `add_generation_prompt`). */
  addGenerationPrompt?: boolean;
  /**
   * A system message put first when the first message is not a system message (default none: the
   * template's own default, such as Qwen2.5's, applies).
   */
  defaultSystemPrompt?: string | null;
}

/** Private-use markers around a content placeholder's index: templates print them unchanged. */
const PH_OPEN = "\uE000", PH_CLOSE = "\uE001";
const PH_RE = /\uE000(\d+)\uE001/g;

/**
 * A model's own Jinja chat template (`chat_template` of `tokenizer_config.json`), rendered with
 * `@huggingface/jinja`. It is parsed on first use; a template that does not parse or render throws an error
 * naming the config file.
 */
export class JinjaChatTemplate {
  /** The template's Jinja source. */
  readonly source: string;
  /** Variables passed to every rendering (special tokens from the config). */
  readonly variables: Readonly<Record<string, unknown>>;
  /** The config file named in errors. */
  readonly file: string;
  #parsed: Template | null = null;

  constructor(source: string, variables: Record<string, unknown> = {}, file = "tokenizer_config.json") {
    this.source = source;
    this.variables = variables;
    this.file = file;
  }

  /** Builds the template of a parsed `tokenizer_config.json`, or returns null when it has no `chat_template`. */
  static fromConfig(config: unknown, file = "tokenizer_config.json"): JinjaChatTemplate | null {
    const source = chatTemplateSource(config);
    return source === null ? null : new JinjaChatTemplate(source, chatTemplateVariables(config), file);
  }

  #run(messages: readonly ChatMessage[], options: JinjaChatTemplateOptions): string {
    try {
      this.#parsed ??= new Template(this.source);
      return this.#parsed.render({
        ...this.variables,
        messages,
        add_generation_prompt: options.addGenerationPrompt ?? true,
      });
    } catch (e) {
      throw new Error(`${this.file}: chat_template failed to render: ${(e as Error).message}`);
    }
  }

  #messages(messages: readonly ChatMessage[], options: JinjaChatTemplateOptions): ChatMessage[] {
    const sys = options.defaultSystemPrompt;
    const list = messages.map((m) => ({ ...m }));
    if (sys != null && messages[0]?.role !== "system") list.unshift({ role: "system", content: sys });
    return list;
  }

  /** Renders messages to prompt text, as transformers' `apply_chat_template(..., tokenize=False)` does. */
  render(messages: readonly ChatMessage[], options: JinjaChatTemplateOptions = {}): string {
    return this.#run(this.#messages(messages, options), options);
  }

  /**
   * Renders as {@link render}, split into template text and message content ({@link ChatPart}). The template
   * is rendered a second time with a placeholder for each message's content, which locates the content in the
   * real rendering; where the template changes content (trims it, or keeps the text after `</think>`), the
   * usual transformations are recognised. Throws when the content cannot be located.
   */
  renderParts(messages: readonly ChatMessage[], options: JinjaChatTemplateOptions = {}): ChatPart[] {
    const list = this.#messages(messages, options);
    const real = this.#run(list, options);
    const contents = list.map((m) => String(m.content ?? ""));
    const marked = this.#run(list.map((m, i) => ({ ...m, content: `${PH_OPEN}${i}${PH_CLOSE}` })), options);
    // marked = T0 ph T1 ph … Tn
    const segments: string[] = [];
    const slots: number[] = [];
    let at = 0;
    for (const m of marked.matchAll(PH_RE)) {
      segments.push(marked.slice(at, m.index));
      slots.push(Number(m[1]));
      at = m.index + m[0].length;
    }
    segments.push(marked.slice(at));
    if (!real.startsWith(segments[0])) throw this.#untracked();
    const chosen: string[] = [];
    const failed = new Set<string>();
    const match = (j: number, pos: number): boolean => {
      if (j === slots.length) return pos === real.length;
      const key = `${j}:${pos}`;
      if (failed.has(key)) return false;
      for (const c of contentVariants(contents[slots[j]])) {
        const next = segments[j + 1];
        if (real.startsWith(c, pos) && real.startsWith(next, pos + c.length)) {
          chosen[j] = c;
          if (match(j + 1, pos + c.length + next.length)) return true;
        }
      }
      failed.add(key);
      return false;
    };
    if (!match(0, segments[0].length)) throw this.#untracked();
    const out: ChatPart[] = [];
    const push = (text: string, content: boolean): void => {
      if (text === "") return;
      const last = out[out.length - 1];
      if (last && last.content === content) last.text += text;
      else out.push({ text, content });
    };
    push(segments[0], false);
    for (let j = 0; j < slots.length; j++) {
      push(chosen[j], true);
      push(segments[j + 1], false);
    }
    return out;
  }

  #untracked(): Error {
    return new Error(
      `${this.file}: chat_template transforms message content in a way Lethe cannot separate from the ` +
        `template's text; encode with specialTokens: "parse"`,
    );
  }
}

/** Ways chat templates commonly print a message's content: as is, trimmed, or after its last `</think>`. */
function contentVariants(content: string): string[] {
  const cut = content.lastIndexOf("</think>");
  const after = cut >= 0 ? content.slice(cut + "</think>".length) : content;
  const all = [content, content.trim(), after, after.trim(), content.trimStart(), content.trimEnd()];
  return [...new Set(all)];
}
