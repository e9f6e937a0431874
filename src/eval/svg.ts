/**
 * A small dependency-free SVG line-chart writer for the evaluation reports: axes with "nice" ticks, one
 * polyline + markers per series, a legend. Each series is a `<g class="series" data-name="…">` so tests
 * (and readers of the SVG source) can find it.
 */

/** One line of a chart. */
export interface Series {
  name: string;
  points: [number, number][];
  /** CSS colour; a palette colour by index when absent. */
  color?: string;
  /** Draw dashed (reference lines such as `full`). */
  dashed?: boolean;
}

/** A line chart. */
export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Logarithmic x axis (base 2), e.g. for KV budgets. */
  xLog2?: boolean;
  /** Fixed y range; computed from the data when absent. */
  yMin?: number;
  yMax?: number;
  width?: number;
  height?: number;
}

/** Colour-blind-friendly palette (Okabe–Ito) plus a few extra hues. */
export const PALETTE: readonly string[] = [
  "#000000",
  "#E69F00",
  "#56B4E9",
  "#009E73",
  "#D55E00",
  "#CC79A7",
  "#0072B2",
  "#F0E442",
  "#7F7F7F",
  "#8C564B",
];

/** Escapes text for XML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  }
  return ticks;
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  return String(+v.toPrecision(4));
}

const n2 = (v: number): string => v.toFixed(2);

/** Renders a line chart as a standalone SVG document. */
export function lineChart(chart: LineChart): string {
  const W = chart.width ?? 640;
  const H = chart.height ?? 400;
  const legendW = 150;
  const m = { left: 64, right: legendW + 16, top: 36, bottom: 48 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const pts = chart.series.flatMap((s) => s.points).filter(([x, y]) =>
    Number.isFinite(x) && Number.isFinite(y)
  );
  const tx = (x: number) => (chart.xLog2 ? Math.log2(Math.max(x, 1e-12)) : x);
  let x0 = pts.length ? Math.min(...pts.map((p) => tx(p[0]))) : 0;
  let x1 = pts.length ? Math.max(...pts.map((p) => tx(p[0]))) : 1;
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  let y0 = chart.yMin ?? (pts.length ? Math.min(0, ...pts.map((p) => p[1])) : 0);
  let y1 = chart.yMax ?? (pts.length ? Math.max(...pts.map((p) => p[1])) : 1);
  if (y1 === y0) [y0, y1] = [y0 - 1, y1 + 1];
  if (chart.yMax === undefined) y1 += (y1 - y0) * 0.05;
  const sx = (x: number) => m.left + ((tx(x) - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((Math.min(Math.max(y, y0), y1) - y0) / (y1 - y0)) * ph;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${
      escapeXml(chart.title)
    }</text>`,
  );
  // Grid and ticks.
  const xTicks = chart.xLog2
    ? [...new Set(pts.map((p) => p[0]))].sort((a, b) => a - b)
    : niceTicks(x0, x1, 6);
  out.push(`<g class="axes" stroke="#cccccc" stroke-width="1">`);
  for (const t of xTicks) {
    out.push(`<line x1="${n2(sx(t))}" y1="${m.top}" x2="${n2(sx(t))}" y2="${m.top + ph}"/>`);
  }
  const yTicks = niceTicks(y0, y1, 5);
  for (const t of yTicks) {
    out.push(`<line x1="${m.left}" y1="${n2(sy(t))}" x2="${m.left + pw}" y2="${n2(sy(t))}"/>`);
  }
  out.push(`</g>`);
  out.push(
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333333"/>`,
  );
  out.push(`<g class="ticks" fill="#333333">`);
  for (const t of xTicks) {
    out.push(`<text x="${n2(sx(t))}" y="${m.top + ph + 16}" text-anchor="middle">${fmt(t)}</text>`);
  }
  for (const t of yTicks) {
    out.push(`<text x="${m.left - 6}" y="${n2(sy(t) + 4)}" text-anchor="end">${fmt(t)}</text>`);
  }
  out.push(`</g>`);
  out.push(
    `<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">${escapeXml(chart.xLabel)}</text>`,
  );
  out.push(
    `<text x="16" y="${m.top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${m.top + ph / 2})">${
      escapeXml(chart.yLabel)
    }</text>`,
  );
  // Series.
  chart.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const valid = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    const dash = s.dashed ? ` stroke-dasharray="6 4"` : "";
    out.push(`<g class="series" data-name="${escapeXml(s.name)}">`);
    if (valid.length > 1) {
      const d = valid.map(([x, y]) => `${n2(sx(x))},${n2(sy(y))}`).join(" ");
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${d}"/>`);
    }
    if (valid.length <= 40) {
      for (const [x, y] of valid) {
        out.push(`<circle cx="${n2(sx(x))}" cy="${n2(sy(y))}" r="3" fill="${color}"/>`);
      }
    }
    out.push(`</g>`);
    const ly = m.top + 8 + i * 18;
    const lx = W - legendW;
    out.push(
      `<g class="legend"><line x1="${lx}" y1="${ly}" x2="${lx + 20}" y2="${ly}" stroke="${color}" ` +
        `stroke-width="2"${dash}/><text x="${lx + 26}" y="${ly + 4}">${escapeXml(s.name)}</text></g>`,
    );
  });
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
