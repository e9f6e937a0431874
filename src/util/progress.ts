/** A one-line progress bar on stderr (bytes, percent, rate), redrawn in place; silent when disabled. */

/** Formats a byte count as B/KB/MB/GB (decimal). */
export function formatBytes(n: number): string {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} KB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

/** Progress of a byte-counted task. */
export class ProgressBar {
  readonly #label: string;
  readonly #total: number;
  readonly #enabled: boolean;
  readonly #start = performance.now();
  #done = 0;
  #lastDraw = 0;

  constructor(label: string, total: number, enabled = true) {
    this.#label = label;
    this.#total = total;
    this.#enabled = enabled;
  }

  /** Adds `n` completed bytes and redraws at most ~10 times a second. */
  advance(n: number): void {
    this.#done += n;
    const now = performance.now();
    if (now - this.#lastDraw > 100 || this.#done >= this.#total) {
      this.#lastDraw = now;
      this.#draw(false);
    }
  }

  /** Draws the final state and ends the line. */
  finish(): void {
    this.#draw(true);
  }

  #draw(final: boolean): void {
    if (!this.#enabled) return;
    const frac = this.#total > 0 ? Math.min(1, this.#done / this.#total) : 1;
    const width = 30;
    const filled = Math.round(frac * width);
    const secs = (performance.now() - this.#start) / 1000;
    const rate = secs > 0 ? this.#done / secs : 0;
    const line =
      `${this.#label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(frac * 100).toFixed(0)}% ` +
      `${formatBytes(this.#done)}/${formatBytes(this.#total)} ${formatBytes(rate)}/s`;
    const enc = new TextEncoder();
    Deno.stderr.writeSync(enc.encode(`\r${line}${final ? "\n" : ""}`));
  }
}

/** Progress of a task counted in items (e.g. evaluation runs): count, percent, rate, ETA and a detail text. */
export class CountProgress {
  readonly #label: string;
  #total: number;
  readonly #enabled: boolean;
  readonly #start = performance.now();
  #done = 0;
  #detail = "";
  #lastDraw = 0;
  #lastLen = 0;

  constructor(label: string, total: number, enabled = true) {
    this.#label = label;
    this.#total = total;
    this.#enabled = enabled;
  }

  /** Changes the total (when the plan grows after a first measurement). */
  setTotal(total: number): void {
    this.#total = total;
  }

  /** Items completed so far. */
  get done(): number {
    return this.#done;
  }

  /** Adds `n` completed items (and optionally replaces the detail text); redraws at most ~4 times a second. */
  advance(n = 1, detail?: string): void {
    this.#done += n;
    if (detail !== undefined) this.#detail = detail;
    const now = performance.now();
    if (now - this.#lastDraw > 250 || this.#done >= this.#total) {
      this.#lastDraw = now;
      this.#draw(false);
    }
  }

  /** Replaces the detail text (what runs now) and redraws. */
  detail(text: string): void {
    this.#detail = text;
    this.#lastDraw = performance.now();
    this.#draw(false);
  }

  /** Draws the final state and ends the line. */
  finish(): void {
    this.#draw(true);
  }

  #draw(final: boolean): void {
    if (!this.#enabled) return;
    const frac = this.#total > 0 ? Math.min(1, this.#done / this.#total) : 1;
    const width = 24;
    const filled = Math.round(frac * width);
    const secs = (performance.now() - this.#start) / 1000;
    const eta = this.#done > 0 ? (secs / this.#done) * (this.#total - this.#done) : NaN;
    const time = (s: number) =>
      Number.isFinite(s)
        ? (s >= 60 ? `${Math.floor(s / 60)}m${Math.round(s % 60)}s` : `${s.toFixed(0)}s`)
        : "?";
    const line =
      `${this.#label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(frac * 100).toFixed(0)}% ` +
      `${this.#done}/${this.#total} ${time(secs)} elapsed, ETA ${time(eta)} ${this.#detail}`;
    const pad = " ".repeat(Math.max(0, this.#lastLen - line.length));
    this.#lastLen = line.length;
    Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}${pad}${final ? "\n" : ""}`));
  }
}
