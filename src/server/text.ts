/**
 * The split of a streamed R1 answer into the thought before `</think>` (`reasoning_content`) and the answer
 * after it (`content`). Stop strings are the engine's (`src/engine/stop.ts`), shared with the library and CLI.
 */

/** One piece of a chat answer: thought or answer text. */
export interface ChatPiece {
  kind: "reasoning" | "content";
  text: string;
}

const THINK_END = "</think>";
const THINK_START = "<think>";

/**
 * Splits streamed chat text at the first `</think>`: before it is reasoning, after it is the answer. When
 * the prompt already opened the thought (R1's generation prompt ends with `<think>\n`) the stream starts in
 * reasoning; otherwise it starts as content and only a leading `<think>` opens a thought. Leading newlines
 * of each part are dropped (the templates put one after each tag).
 */
export class ThinkSplitter {
  #mode: "reasoning" | "content" | "start";
  #pending = "";
  #leading = true;

  constructor(startsInThought: boolean) {
    this.#mode = startsInThought ? "reasoning" : "start";
  }

  /** Adds text; returns the pieces that are final now. */
  push(text: string): ChatPiece[] {
    this.#pending += text;
    const out: ChatPiece[] = [];
    for (;;) {
      if (this.#mode === "start") {
        // Wait until we know whether the answer opens with <think>.
        const trimmed = this.#pending.replace(/^\s+/, "");
        if (trimmed.length < THINK_START.length && THINK_START.startsWith(trimmed)) return out;
        if (trimmed.startsWith(THINK_START)) {
          this.#pending = trimmed.slice(THINK_START.length);
          this.#mode = "reasoning";
          this.#leading = true;
        } else {
          this.#mode = "content";
          this.#leading = false;
        }
        continue;
      }
      if (this.#mode === "reasoning") {
        const at = this.#pending.indexOf(THINK_END);
        if (at >= 0) {
          this.#emit(out, "reasoning", this.#pending.slice(0, at));
          this.#pending = this.#pending.slice(at + THINK_END.length);
          this.#mode = "content";
          this.#leading = true;
          continue;
        }
        // Hold back a possible partial "</think>".
        let keep = 0;
        for (let k = Math.min(THINK_END.length - 1, this.#pending.length); k > 0; k--) {
          if (THINK_END.startsWith(this.#pending.slice(this.#pending.length - k))) {
            keep = k;
            break;
          }
        }
        this.#emit(out, "reasoning", this.#pending.slice(0, this.#pending.length - keep));
        this.#pending = this.#pending.slice(this.#pending.length - keep);
        return out;
      }
      this.#emit(out, "content", this.#pending);
      this.#pending = "";
      return out;
    }
  }

  /** Ends the stream. */
  flush(): ChatPiece[] {
    const out: ChatPiece[] = [];
    const kind = this.#mode === "reasoning" ? "reasoning" : "content";
    this.#emit(out, kind, this.#pending);
    this.#pending = "";
    return out;
  }

  #emit(out: ChatPiece[], kind: ChatPiece["kind"], text: string): void {
    if (this.#leading) {
      text = text.replace(/^\n+/, "");
      if (text.length > 0) this.#leading = false;
    }
    if (text.length > 0) out.push({ kind, text });
  }
}

/** Splits a complete answer: `{ reasoning, content }` (reasoning null when there was no thought). */
export function splitThought(
  text: string,
  startsInThought: boolean,
): { reasoning: string | null; content: string } {
  const s = new ThinkSplitter(startsInThought);
  const pieces = [...s.push(text), ...s.flush()];
  let reasoning: string | null = null;
  let content = "";
  for (const p of pieces) {
    if (p.kind === "reasoning") reasoning = (reasoning ?? "") + p.text;
    else content += p.text;
  }
  if (startsInThought && reasoning === null) reasoning = "";
  return { reasoning, content };
}
