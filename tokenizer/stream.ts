/**
 * Streaming detokenization for generation: text is released only once its bytes form whole UTF-8
 * characters, so a character split across tokens (common for CJK and emoji in byte-level BPE) is never
 * shown as U+FFFD halves.
 *
 * @module
 */

import type { DecodeOptions, Tokenizer } from "./tokenizer.ts";

/** Turns a stream of token ids into text chunks whose concatenation equals `tokenizer.decode(allIds)`. */
export class IncrementalDecoder {
  // TextDecoder's streaming mode holds back an incomplete trailing sequence and replaces invalid bytes
  // exactly as a one-shot decode would; ignoreBOM keeps a leading U+FEFF as text.
  private decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  private readonly skipSpecial: boolean;

  /** A decoder for `tokenizer`'s ids; `skipSpecialTokens` drops special tokens as `decode` does. */
  constructor(private readonly tokenizer: Tokenizer, options: DecodeOptions = {}) {
    this.skipSpecial = options.skipSpecialTokens ?? false;
  }

  /** Adds one token; returns the newly completed text (possibly ""). */
  push(id: number): string {
    if (this.skipSpecial && this.tokenizer.isSpecial(id)) return "";
    const bytes = this.tokenizer.tokenBytes(id);
    if (bytes === null || bytes.length === 0) return "";
    return this.decoder.decode(bytes, { stream: true });
  }

  /** Ends the stream: returns what is left (U+FFFD for an unfinished character) and resets the decoder. */
  flush(): string {
    const rest = this.decoder.decode();
    this.decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    return rest;
  }
}
