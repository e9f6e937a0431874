/**
 * One-line progress bars on stderr, redrawn in place when stderr is a terminal; silent when disabled. When
 * stderr is a pipe or a file there are no `\r` redraws: a plain line at most every 30 s, and the final one.
 */

/** Formats a byte count as B/KB/MB/GB (decimal). */
export function formatBytes(n: number): string {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} KB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

/** Formats seconds as "42s", "1m05s" or "2h03m": rounded to whole seconds first, then split. */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  const t = Math.round(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, "0")}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor(t / 60) % 60).padStart(2, "0")}m`;
}

/** Whether stderr is a terminal (false without the permission to ask, or outside Deno). */
function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

/** Progress of a task counted in bytes or in items: bar, percent, amount (and rate), elapsed, ETA, detail. */
export class Progress {
  readonly #label: string;
  readonly #unit: "bytes" | "items";
  readonly #enabled: boolean;
  readonly #start = performance.now();
  #total: number;
  #done = 0;
  #detail = "";
  #lastDraw = 0;
  #lastLen = 0;
  #lastPlain = performance.now();
  readonly #tty = stderrIsTerminal();

  constructor(label: string, total: number, enabled = true, unit: "bytes" | "items" = "items") {
    this.#label = label;
    this.#total = total;
    this.#enabled = enabled;
    this.#unit = unit;
  }

  /** Changes the total (when the plan grows after a first measurement). */
  setTotal(total: number): void {
    this.#total = total;
  }

  /** Units completed so far. */
  get done(): number {
    return this.#done;
  }

  /** Adds `n` completed units (and optionally replaces the detail text); redraws at most ~10 times a second. */
  advance(n = 1, detail?: string): void {
    this.#done += n;
    if (detail !== undefined) this.#detail = detail;
    const now = performance.now();
    if (now - this.#lastDraw > 100 || this.#done >= this.#total) {
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
    const width = 30;
    const filled = Math.round(frac * width);
    const secs = (performance.now() - this.#start) / 1000;
    const eta = this.#done > 0 ? (secs / this.#done) * (this.#total - this.#done) : NaN;
    const amount = this.#unit === "bytes"
      ? `${formatBytes(this.#done)}/${formatBytes(this.#total)} ${
        formatBytes(secs > 0 ? this.#done / secs : 0)
      }/s`
      : `${this.#done}/${this.#total}`;
    const line =
      `${this.#label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(frac * 100).toFixed(0)}% ` +
      `${amount} ${formatDuration(secs)} elapsed, ETA ${formatDuration(eta)} ${this.#detail}`.trimEnd();
    if (!this.#tty) {
      // A pipe or a file: whole lines only, the last one and one every 30 s at most.
      const now = performance.now();
      if (!final && now - this.#lastPlain < 30_000) return;
      this.#lastPlain = now;
      Deno.stderr.writeSync(new TextEncoder().encode(`${line}\n`));
      return;
    }
    const pad = " ".repeat(Math.max(0, this.#lastLen - line.length));
    this.#lastLen = line.length;
    Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}${pad}${final ? "\n" : ""}`));
  }
}

/** Progress of a byte-counted task (e.g. loading a checkpoint). */
export class ProgressBar extends Progress {
  constructor(label: string, total: number, enabled = true) {
    super(label, total, enabled, "bytes");
  }
}

/** Progress of a task counted in items (e.g. evaluation runs). */
export class CountProgress extends Progress {
  constructor(label: string, total: number, enabled = true) {
    super(label, total, enabled, "items");
  }
}
