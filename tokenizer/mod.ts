/**
 * Byte-level BPE tokenizer, streaming detokenizer and chat templates for Lethe (TypeScript; chat templates
 * are rendered with `@huggingface/jinja`).
 *
 * ```ts
 * const tok = await Tokenizer.fromFile("model/tokenizer.json"); // + tokenizer_config.json beside it
 * const ids = tok.encodeChat([{ role: "user", content: "What is 1+1?" }]); // template from the config
 * const stream = new IncrementalDecoder(tok, { skipSpecialTokens: true });
 * for (const id of generated) out.write(stream.push(id)); // never half a UTF-8 character
 * out.write(stream.flush());
 * ```
 *
 * - Loads Hugging Face `tokenizer.json` (vocab, merges as "a b" strings or [a, b] pairs, added tokens with
 *   their lstrip/rstrip/single_word/normalized flags, normalizer, pre-tokenizer, post-processor, decoder).
 *   The split regex is read from the file and translated from Oniguruma to a JS `u`-mode RegExp
 *   ({@link onigToJsSource}); unsupported components throw at load.
 * - Ids match `@huggingface/tokenizers` exactly on the Qwen2.5 and Llama-3.1 vocabularies (tests/tokenizer.test.ts).
 * - Chat templates: the model's own Jinja `chat_template` is rendered with `@huggingface/jinja`; models without
 *   one fall back to the DeepSeek-R1, ChatML (Qwen2.5) and Llama-3 families, recognised from the vocabulary
 *   and rendered in TypeScript (see chat.ts).
 *
 * @module
 */
export { Tokenizer } from "./tokenizer.ts";
export { cleanUpTokenization } from "./tokenizer.ts";
export type { AddedToken, DecodeOptions, EncodeOptions } from "./tokenizer.ts";
export { MAX_TOKEN_ID, TokenizerError, validateTokenizerConfig, validateTokenizerJson } from "./validate.ts";
export { IncrementalDecoder } from "./stream.ts";
export {
  applyChatTemplate,
  chatTemplateSource,
  chatTemplateVariables,
  detectChatTemplate,
  JinjaChatTemplate,
  renderChatParts,
} from "./chat.ts";
export type {
  ChatMessage,
  ChatPart,
  ChatTemplateName,
  ChatTemplateOptions,
  DetectedChatTemplate,
  JinjaChatTemplateOptions,
} from "./chat.ts";
export { onigToJsSource, onigToRegExp } from "./regex.ts";
