/**
 * Chat templates for the model families Lethe serves, written out in TypeScript.
 *
 * Hugging Face ships chat templates as Jinja programs in `tokenizer_config.json`. Lethe does not interpret
 * Jinja: it recognises which family a template belongs to (by the marker tokens it prints) and renders that
 * family's format directly. Families:
 * - `deepseek-r1`: DeepSeek-R1 and its distills (Qwen and Llama based).
 *   `<｜begin▁of▁sentence｜>{last system}<｜User｜>{u}<｜Assistant｜>{a}<｜end▁of▁sentence｜>…<｜Assistant｜><think>\n`.
 *   As in the official template, an assistant turn keeps only the text after its last `</think>`.
 * - `chatml`: Qwen2/Qwen2.5 (`<|im_start|>{role}\n{content}<|im_end|>\n`, generation prompt
 *   `<|im_start|>assistant\n`); Qwen's template adds a default system prompt when the first message is not
 *   a system message, which {@link detectChatTemplate} reports so callers can reproduce it.
 * - `llama3`: the plain Llama-3 header format (`<|start_header_id|>{role}<|end_header_id|>\n\n{trimmed}<|eot_id|>`).
 *
 * Tool calls and the date preamble of Llama-3.1's long template are not reproduced.
 *
 * @module
 */

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
  let text: string | null = null;
  const ct = (config as { chat_template?: unknown } | null | undefined)?.chat_template;
  if (typeof ct === "string") {
    text = ct;
  } else if (Array.isArray(ct)) {
    const entry = ct.find((t) => t?.name === "default") ?? ct[0];
    if (typeof entry?.template === "string") text = entry.template;
  }
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
