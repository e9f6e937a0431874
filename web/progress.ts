/// <reference lib="dom" />
/** The load progress bar: bytes uploaded, of how many, and the tensor just placed on the GPU. */
import type { LoadProgress } from "../mod.ts";
import { formatBytes } from "./charts.ts";

export class ProgressView {
  readonly #root: HTMLElement;
  readonly #bar: HTMLProgressElement;
  readonly #text: HTMLElement;

  /** `root` holds a `<progress>` and an element for the text. */
  constructor(root: HTMLElement) {
    this.#root = root;
    this.#bar = root.querySelector("progress")!;
    this.#text = root.querySelector(".progress-text")!;
  }

  /** Shows a phase before the weights stream (reading headers, compiling kernels). */
  phase(text: string): void {
    this.#root.hidden = false;
    this.#root.dataset.state = "loading";
    this.#text.textContent = text;
  }

  /** Shows one progress report. */
  update(p: LoadProgress): void {
    this.#root.hidden = false;
    this.#bar.max = Math.max(1, p.totalBytes);
    this.#bar.value = p.loadedBytes;
    const pct = p.totalBytes > 0 ? Math.floor((100 * p.loadedBytes) / p.totalBytes) : 100;
    this.#text.textContent = `${formatBytes(p.loadedBytes)} / ${
      formatBytes(p.totalBytes)
    } (${pct}%) · ${p.tensor}`;
    if (p.done) this.#text.textContent += " · compiling kernels…";
  }

  /** The load finished. */
  done(text: string): void {
    this.#bar.value = this.#bar.max;
    this.#root.dataset.state = "done";
    this.#text.textContent = text;
  }

  /** The load failed. */
  failed(text: string): void {
    this.#root.dataset.state = "error";
    this.#text.textContent = text;
  }
}
