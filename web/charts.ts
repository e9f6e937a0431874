/// <reference lib="dom" />
/**
 * Small live SVG charts without dependencies: a line chart (KV bytes and tok/s over decode steps) and a bar
 * chart (tokens kept per layer). Each redraws its whole SVG from the data it is given.
 */

const NS = "http://www.w3.org/2000/svg";
const W = 360, H = 180;
const PAD = { left: 52, right: 14, top: 24, bottom: 30 };

function el<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
  text?: string,
): SVGElementTagNameMap[K] {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** About `count` round tick values from 0 to the first at or above `max`. */
export function ticks(max: number, count = 4): number[] {
  if (!(max > 0)) return [0];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [0];
  while (out[out.length - 1] < max - step * 1e-9) out.push(out.length * step);
  return out;
}

/** Bytes as B / KiB / MiB / GiB. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

/** A chart's empty SVG with its title; returns the SVG. */
function frame(container: HTMLElement, title: string): SVGSVGElement {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "chart" });
  svg.append(el("text", { x: PAD.left, y: 14, class: "chart-title" }, title));
  container.replaceChildren(svg);
  return svg;
}

/** One line of a {@link LineChart}. */
export interface Series {
  name: string;
  /** CSS class of the line (its colour and dash come from style.css). */
  cls: string;
  /** y per x = 0, 1, 2, … */
  values: number[];
}

/** A line chart over decode steps. */
export class LineChart {
  readonly #container: HTMLElement;
  readonly #title: string;
  readonly #format: (y: number) => string;

  constructor(container: HTMLElement, title: string, format: (y: number) => string = String) {
    this.#container = container;
    this.#title = title;
    this.#format = format;
    this.render([]);
  }

  /** Redraws with these series (x = index) and short marks under the given x (pruning rounds). */
  render(series: Series[], marks: number[] = []): void {
    const svg = frame(this.#container, this.#title);
    const n = Math.max(2, ...series.map((s) => s.values.length));
    const yMax = Math.max(1e-9, ...series.flatMap((s) => s.values.filter(Number.isFinite)));
    const yt = ticks(yMax);
    const top = yt[yt.length - 1] || 1;
    const x = (i: number) => PAD.left + (i / (n - 1)) * (W - PAD.left - PAD.right);
    const y = (v: number) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
    for (const v of yt) {
      svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
      svg.append(
        el("text", { x: PAD.left - 4, y: y(v) + 3, class: "tick", "text-anchor": "end" }, this.#format(v)),
      );
    }
    for (const v of ticks(n - 1, 4)) {
      svg.append(
        el("text", { x: x(v), y: H - PAD.bottom + 12, class: "tick", "text-anchor": "middle" }, String(v)),
      );
    }
    svg.append(
      el("text", { x: W - PAD.right, y: H - 4, class: "tick", "text-anchor": "end" }, "decode step"),
    );
    const base = H - PAD.bottom;
    for (const m of marks) {
      svg.append(el("line", { x1: x(m), x2: x(m), y1: base, y2: base - 5, class: "mark" }));
    }
    let lx = W - PAD.right;
    for (const s of [...series].reverse()) {
      const label = el("text", { x: lx, y: 14, class: `legend ${s.cls}`, "text-anchor": "end" }, s.name);
      svg.append(label);
      lx -= s.name.length * 6 + 14;
      if (s.values.length === 0) continue;
      const d = s.values.map((v, i) => `${i === 0 ? "M" : "L"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(
        "",
      );
      svg.append(el("path", { d, class: `line ${s.cls}` }));
    }
  }
}

/** A bar chart: one bar per layer, with an optional dashed cap line. */
export class BarChart {
  readonly #container: HTMLElement;
  readonly #title: string;

  constructor(container: HTMLElement, title: string) {
    this.#container = container;
    this.#title = title;
    this.render([], null);
  }

  /** Redraws with these values (one bar each) and a cap line at `cap` (null: none). */
  render(values: number[], cap: number | null): void {
    const svg = frame(this.#container, cap === null ? this.#title : `${this.#title} (budget ${cap})`);
    const yMax = Math.max(1, cap ?? 0, ...values);
    const yt = ticks(yMax);
    const top = yt[yt.length - 1] || 1;
    const y = (v: number) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
    for (const v of yt) {
      svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
      svg.append(
        el("text", { x: PAD.left - 4, y: y(v) + 3, class: "tick", "text-anchor": "end" }, String(v)),
      );
    }
    const n = Math.max(1, values.length);
    const slot = (W - PAD.left - PAD.right) / n;
    const bw = Math.max(1, slot * 0.7);
    values.forEach((v, i) => {
      const x0 = PAD.left + i * slot + (slot - bw) / 2;
      const bar = el("rect", { x: x0, y: y(v), width: bw, height: Math.max(0, y(0) - y(v)), class: "bar" });
      bar.append(el("title", {}, `layer ${i}: ${v} tokens`));
      svg.append(bar);
      if (n <= 32 || i % Math.ceil(n / 16) === 0) {
        svg.append(
          el(
            "text",
            { x: x0 + bw / 2, y: H - PAD.bottom + 12, class: "tick", "text-anchor": "middle" },
            String(i),
          ),
        );
      }
    });
    svg.append(el("text", { x: W - PAD.right, y: H - 4, class: "tick", "text-anchor": "end" }, "layer"));
    if (cap !== null) {
      svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(cap), y2: y(cap), class: "cap" }));
    }
  }
}
