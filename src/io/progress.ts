/**
 * Progress of a model load, reported without assuming a terminal: a callback gets every tensor, and the Deno
 * entry registers a terminal bar for `progress: true` (and for the default on large checkpoints when stderr is
 * a terminal). Platform-neutral.
 *
 * @module
 */

/** How far a model load has come: reported after each tensor reaches the GPU, and once more when done. */
export interface LoadProgress {
  /** Bytes of weights read and uploaded so far. */
  loadedBytes: number;
  /** Bytes of weights the load reads in all. */
  totalBytes: number;
  /** The tensor just uploaded (the last one when `done`). */
  tensor: string;
  /** True once, when every weight is on the GPU. */
  done: boolean;
}

/** The progress option of a load: a callback, true (the terminal bar), false (nothing), or undefined (auto). */
export type LoadProgressOption = boolean | ((p: LoadProgress) => void);

/**
 * A progress display the platform provides (a bar on stderr under Deno).
 * @internal
 */
export interface ProgressRenderer {
  /** Adds `bytes` completed; `detail` says what. */
  advance(bytes: number, detail?: string): void;
  /** Draws the final state. */
  finish(): void;
}

/**
 * Registered by a platform entry.
 * @internal
 */
export interface TerminalProgress {
  /** A display of a task of `totalBytes`. */
  create(label: string, totalBytes: number): ProgressRenderer;
  /** Whether to show it by default (e.g. stderr is a terminal). */
  auto(): boolean;
}

let terminal: TerminalProgress | null = null;

/**
 * Registers the platform's progress display (the Deno entry registers its stderr bar).
 * @internal
 */
export function setTerminalProgress(t: TerminalProgress | null): void {
  terminal = t;
}

/** Checkpoints above this many bytes show the terminal bar by default. */
const AUTO_BYTES = 8e6;

/**
 * The reporter of one load: `tensor(name, bytes)` after each tensor, `finish()` at the end.
 * @internal
 */
export function loadReporter(
  option: LoadProgressOption | undefined,
  label: string,
  totalBytes: number,
): { tensor(name: string, bytes: number): void; finish(): void } {
  let loaded = 0;
  let last = "";
  if (typeof option === "function") {
    return {
      tensor(name, bytes) {
        loaded += bytes;
        last = name;
        option({ loadedBytes: loaded, totalBytes, tensor: name, done: false });
      },
      finish() {
        option({ loadedBytes: loaded, totalBytes, tensor: last, done: true });
      },
    };
  }
  const show = option === true
    ? terminal !== null
    : option === undefined && terminal !== null && totalBytes > AUTO_BYTES && terminal.auto();
  const bar = show ? terminal!.create(label, totalBytes) : null;
  return {
    tensor(_name, bytes) {
      bar?.advance(bytes);
    },
    finish() {
      bar?.finish();
    },
  };
}
