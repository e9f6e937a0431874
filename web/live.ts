/// <reference lib="dom" />
/**
 * Live statistics of one generation: KV bytes over decode steps (what the policy holds against what the full
 * cache would hold), tokens kept per layer, decode speed, and the final statistics table.
 */
import type { GenerationStats, ModelConfig, PruneRound } from "../mod.ts";
import { BarChart, formatBytes, LineChart } from "./charts.ts";

/** What the page's charts read from the cache after each step (`SequenceKv`'s public methods). */
export interface KvProbe {
  liveBytes(): number;
  allocatedBytes(): number;
  lens(): number[];
}

/** KV bytes one token costs in one layer: K and V rows (f32) plus its position and score. */
export function kvBytesPerTokenLayer(c: ModelConfig): number {
  return 2 * c.numKvHeads * c.headDim * 4 + 8;
}

/** Tokens per second over the last `window` tokens. */
class Speed {
  readonly #times: number[] = [];
  readonly #window: number;
  constructor(window = 16) {
    this.#window = window;
  }
  tick(now: number): number {
    this.#times.push(now);
    if (this.#times.length > this.#window + 1) this.#times.shift();
    const n = this.#times.length - 1;
    return n > 0 ? (1000 * n) / (now - this.#times[0]) : 0;
  }
}

export class LivePanel {
  readonly #kv: LineChart;
  readonly #layers: BarChart;
  readonly #speed: LineChart;
  readonly #table: HTMLTableElement;
  #config: ModelConfig | null = null;
  #prompt = 0;
  #cap: number | null = null;
  #live: number[] = [];
  #allocated: number[] = [];
  #full: number[] = [];
  #tokS: number[] = [];
  #lens: number[] = [];
  #rounds: number[] = [];
  #clock = new Speed();
  #frame = 0;

  constructor(kv: HTMLElement, layers: HTMLElement, speed: HTMLElement, table: HTMLTableElement) {
    this.#kv = new LineChart(kv, "KV cache bytes", formatBytes);
    this.#layers = new BarChart(layers, "tokens kept per layer");
    this.#speed = new LineChart(speed, "decode tok/s", (v) => v.toFixed(v < 10 ? 1 : 0));
    this.#table = table;
  }

  /** A new generation: `cap` is the policy's tokens per layer (null for `full`). */
  start(config: ModelConfig, promptTokens: number, cap: number | null): void {
    this.#config = config;
    this.#prompt = promptTokens;
    this.#cap = cap;
    this.#live = [];
    this.#allocated = [];
    this.#full = [];
    this.#tokS = [];
    this.#lens = [];
    this.#rounds = [];
    this.#clock = new Speed();
    this.#table.replaceChildren();
    this.#draw();
  }

  /** After decode step `step` (1, 2, …). */
  step(step: number, kv: KvProbe): void {
    const c = this.#config!;
    this.#live.push(kv.liveBytes());
    this.#allocated.push(kv.allocatedBytes());
    this.#full.push((this.#prompt + step) * c.numLayers * kvBytesPerTokenLayer(c));
    this.#lens = kv.lens();
    this.#schedule();
  }

  /** After each generated token. */
  token(): void {
    const rate = this.#clock.tick(performance.now());
    if (rate > 0) this.#tokS.push(rate);
    this.#schedule();
  }

  /** After each pruning round (marked on the KV chart at the current step). */
  prune(_round: PruneRound): void {
    this.#rounds.push(Math.max(0, this.#live.length - 1));
  }

  /** The generation's final statistics. */
  finish(s: GenerationStats, loadMs: number | null): void {
    cancelAnimationFrame(this.#frame);
    this.#frame = 0;
    this.#lens = s.kv_tokens_per_layer;
    this.#draw();
    const rows: [string, string][] = [
      ["prompt tokens", `${s.prefill_tokens} at ${s.prefill_tok_s.toFixed(0)} tok/s`],
      ["generated tokens", String(s.decode_tokens)],
      ["decode speed", `${s.decode_tok_s.toFixed(1)} tok/s`],
      ["KV policy", `${s.kv_policy} (${s.kv_dtype})`],
      ["KV live peak", formatBytes(s.kv_bytes_live_peak)],
      ["KV allocated peak", formatBytes(s.kv_bytes_peak)],
      ["full f16 KV would hold", formatBytes(s.kv_bytes_full_equivalent)],
      ["pruning rounds", String(s.prune_rounds)],
      ["weights", formatBytes(s.weights_bytes)],
    ];
    if (loadMs !== null) rows.push(["model load", `${(loadMs / 1000).toFixed(2)} s`]);
    this.#table.replaceChildren(...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = k;
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(th, td);
      return tr;
    }));
  }

  /** Redraws at most once per animation frame. */
  #schedule(): void {
    if (this.#frame) return;
    this.#frame = requestAnimationFrame(() => {
      this.#frame = 0;
      this.#draw();
    });
  }

  #draw(): void {
    this.#kv.render([
      { name: "full would hold", cls: "s-full", values: this.#full },
      { name: "allocated", cls: "s-alloc", values: this.#allocated },
      { name: "live", cls: "s-live", values: this.#live },
    ], this.#rounds);
    this.#layers.render(this.#lens, this.#cap);
    this.#speed.render([{ name: "tok/s", cls: "s-speed", values: this.#tokS }]);
  }
}
