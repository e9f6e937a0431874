/**
 * Stop strings, one implementation for the library, the CLI and the server: generated text is held back while
 * it could still become the start of a stop string; at a match the earliest one in the text wins, whatever the
 * order of the list, and neither the stop string nor anything after it is ever returned.
 */

/** Holds back text that could still become the start of a stop string; the stop string is never returned. */
export class StopStrings {
  readonly #stops: string[];
  /** Characters held back: one less than the longest stop string. */
  readonly #hold: number;
  #pending = "";
  #text = "";
  /** True once a stop string was seen. */
  stopped = false;

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
    this.#hold = Math.max(0, ...this.#stops.map((s) => s.length - 1));
  }

  /** Adds generated text; returns the part that is final now. */
  push(text: string): string {
    if (this.stopped) return "";
    this.#pending += text;
    // The held-back text always ends the returned text, so every match lies inside `pending`: the earliest wins.
    let first = -1;
    for (const s of this.#stops) {
      const at = this.#pending.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      this.stopped = true;
      const out = this.#pending.slice(0, first);
      this.#pending = "";
      this.#text += out;
      return out;
    }
    let end = Math.max(0, this.#pending.length - this.#hold);
    // Never cut a surrogate pair.
    if (end > 0 && end < this.#pending.length && /[\uD800-\uDBFF]/.test(this.#pending[end - 1])) end--;
    const out = this.#pending.slice(0, end);
    this.#pending = this.#pending.slice(end);
    this.#text += out;
    return out;
  }

  /** Ends the stream: returns whatever was held back (nothing after a stop). */
  flush(): string {
    const out = this.stopped ? "" : this.#pending;
    this.#pending = "";
    this.#text += out;
    return out;
  }

  /** Everything returned so far. */
  get text(): string {
    return this.#text;
  }
}
