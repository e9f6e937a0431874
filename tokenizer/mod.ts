/**
 * Byte-level BPE tokenizer, streaming detokenizer and chat templates for Lethe.
 *
 * @module
 */
export { Tokenizer } from "./tokenizer.ts";
export type { AddedToken, DecodeOptions, EncodeOptions } from "./tokenizer.ts";
export { IncrementalDecoder } from "./stream.ts";
export { applyChatTemplate, detectChatTemplate } from "./chat.ts";
export type { ChatMessage, ChatTemplateName, ChatTemplateOptions, DetectedChatTemplate } from "./chat.ts";
export { onigToJsSource, onigToRegExp } from "./regex.ts";
