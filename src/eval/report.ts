/**
 * Reports of the evaluation harness: the headline (Lethe's KV reduction at the smallest budget that keeps it
 * within 1 point of `full`, against the baselines at that budget), Markdown tables, SVG charts, and the
 * marker-delimited section of bench/RESULTS.md that `deno task results` regenerates.
 */
import { POLICY_NAMES } from "../kv/policy.ts";
import type { CellResult, EvalResults } from "./harness.ts";
import {
  BOOTSTRAP_RESAMPLES,
  BOOTSTRAP_SEED,
  type PairedTest,
  pairedTest,
  SIGNIFICANCE,
  standing,
} from "./stats.ts";
import { lineChart, type Series } from "./svg.ts";

/** Markers of the generated section in bench/RESULTS.md. */
export const BEGIN_MARKER = "<!-- eval:begin -->";
export const END_MARKER = "<!-- eval:end -->";

/** Markers of the generated headline table in README.md. */
export const HEADLINE_BEGIN_MARKER = "<!-- headline:begin -->";
export const HEADLINE_END_MARKER = "<!-- headline:end -->";

/**
 * Replaces the text between the markers with `body` (markers kept); appends the markers (and body) at the end
 * when absent. Text outside the markers is returned byte for byte.
 */
export function replaceMarkedSection(
  doc: string,
  body: string,
  begin: string = BEGIN_MARKER,
  end: string = END_MARKER,
): string {
  const b = doc.indexOf(begin);
  const e = b < 0 ? -1 : doc.indexOf(end, b + begin.length);
  const inner = `\n${body.trim()}\n`;
  if (b < 0 || e < 0) {
    const sep = doc.length === 0 ? "" : doc.endsWith("\n\n") ? "" : doc.endsWith("\n") ? "\n" : "\n\n";
    return `${doc}${sep}${begin}${inner}${end}\n`;
  }
  return doc.slice(0, b + begin.length) + inner + doc.slice(e);
}

/** The quality figure of a cell: accuracy (tasks) or the fraction of tokens before divergence (fidelity). */
export function quality(r: EvalResults, c: CellResult): number {
  return (r.kind === "tasks" ? c.accuracy : c.agree_frac) ?? 0;
}

/** Lethe's headline against the baselines. */
export interface Headline {
  metric: "accuracy" | "agreement";
  full: CellResult;
  /** The chosen Lethe cell (default τ/γ), or null when the run has no Lethe cells. */
  lethe: CellResult | null;
  /** Whether the chosen cell is within 1 point of full (else it is the best Lethe cell there is). */
  within: boolean;
  /** Baseline cells at the chosen budget. */
  baselines: CellResult[];
  /** The Lethe ablation cell (any τ/γ) with the largest reduction within 1 point, if any. */
  bestAblation: CellResult | null;
}

/** Within 1 point (0.01) of full, with a little slack for float sums. */
const within1 = (v: number, full: number): boolean => v >= full - 0.01 - 1e-9;

/** Computes the headline of a results file. */
export function headline(r: EvalResults): Headline | null {
  const full = r.cells.find((c) => c.policy === "full");
  if (!full) return null;
  const fq = quality(r, full);
  const lethe = r.cells.filter((c) => c.policy === "lethe" && !c.ablation);
  // Rank by the live peak (what the policy keeps); allocated bytes also hold the engine's up-front reservation.
  const byMemory = (a: CellResult, b: CellResult) =>
    a.kv_live_peak_ratio - b.kv_live_peak_ratio || a.kv_peak_ratio - b.kv_peak_ratio;
  const ok = lethe.filter((c) => within1(quality(r, c), fq)).sort(byMemory);
  let chosen: CellResult | null = ok[0] ?? null;
  const within = chosen !== null;
  if (!chosen && lethe.length) {
    chosen = [...lethe].sort((a, b) => quality(r, b) - quality(r, a) || (b.budget ?? 0) - (a.budget ?? 0))[0];
  }
  const baselines = chosen
    ? r.cells.filter((c) => c.budget === chosen!.budget && c.policy !== "lethe" && c.policy !== "full")
    : [];
  const abl = r.cells.filter((c) => c.policy === "lethe" && within1(quality(r, c), fq)).sort(byMemory);
  return {
    metric: r.kind === "tasks" ? "accuracy" : "agreement",
    full,
    lethe: chosen,
    within,
    baselines,
    bestAblation: abl[0] ?? null,
  };
}

const pct = (
  v: number | null,
  d = 1,
): string => (v === null || !Number.isFinite(v) ? "–" : `${(v * 100).toFixed(d)}%`);
const kb = (v: number): string => `${(v / 1024).toFixed(1)} KiB`;
const num = (v: number | null, d = 3): string => (v === null || !Number.isFinite(v) ? "–" : v.toFixed(d));

/** A p-value as the report prints it: three decimals, or "< 0.001". */
export function formatP(p: number): string {
  return p < 0.001 ? "< 0.001" : p.toFixed(3);
}

const points = (x: number): string => `${x >= 0 ? "+" : "−"}${Math.abs(x * 100).toFixed(1)}`;

/**
 * A paired test in words, A against B: the accuracy difference in points with its 95% bootstrap interval,
 * McNemar's p and the discordant samples (A only right vs B only right).
 */
export function testText(t: PairedTest): string {
  return `${points(t.diff)} points [${points(t.ci[0])}, ${points(t.ci[1])}], McNemar p ${
    t.p < 0.001 ? "" : "= "
  }${formatP(t.p)} (${t.aOnly} vs ${t.bOnly} of ${t.n})`;
}

/** The note under the comparison: what the tests are and what "ahead" means. */
export const TESTS_NOTE =
  `_Paired on per-sample outcomes: the difference is Lethe's accuracy minus the baseline's in points, ` +
  `with a 95% bootstrap interval (${BOOTSTRAP_RESAMPLES.toLocaleString("en-US")} paired resamples, seed ` +
  `${BOOTSTRAP_SEED}); McNemar is the exact two-sided test on the samples only one of the two gets right ` +
  `(Lethe's vs the baseline's). "yes" needs p < ${SIGNIFICANCE} against every baseline at equal or lower memory, ` +
  `"no" a baseline ahead with p < ${SIGNIFICANCE}; anything else is a tie._`;

/** One sentence per figure: the headline in words. */
export function headlineText(r: EvalResults): string {
  const h = headline(r);
  if (!h || !h.lethe) return "_No Lethe cells in this run._";
  const L = h.lethe;
  const q = (c: CellResult) =>
    r.kind === "tasks"
      ? `${pct(c.accuracy)} accuracy`
      : `${c.agree_tokens}/${c.tokens} tokens agreeing, mean KL ${num(c.kl_mean, 4)}`;
  const mem = (c: CellResult) =>
    `${pct(1 - c.kv_live_peak_ratio)} less peak live KV (${pct(c.kv_reduction)} less allocated)`;
  const lines: string[] = [];
  const vs = `(full: ${q(h.full)})`;
  lines.push(
    h.within
      ? `**Lethe stays within 1 point of full down to budget ${L.budget} tokens/layer: ${q(L)} ${vs} with ${
        mem(L)
      }.**`
      : `**No Lethe budget stays within 1 point of full on ${h.metric}; its best is budget ${L.budget}: ${
        q(L)
      } ` +
        `${vs} with ${mem(L)}.**`,
  );
  if (r.kind === "tasks" && (h.full.accuracy ?? 0) === 0) {
    lines.push("");
    lines.push(
      "_full scores 0 on these samples, so the accuracy comparison says nothing (pipeline check only)._",
    );
  }
  if (h.baselines.length) {
    lines.push("");
    lines.push(`At the same budget (${L.budget}):`);
    for (const b of h.baselines) {
      const t = r.kind === "tasks" ? cellTest(L, b) : null;
      lines.push(`- ${b.policy}: ${q(b)}, ${mem(b)}${t ? `; Lethe − ${b.policy}: ${testText(t)}` : ""}`);
    }
  }
  lines.push("");
  lines.push(
    "_Live KV = bytes of the tokens kept; allocated also counts the free slots the cache holds (its initial " +
      "reservation and growth headroom), as `Engine.generate` sizes it._",
  );
  const cmp = budgetComparison(r);
  if (cmp.length) {
    lines.push("");
    const metricName = r.kind === "tasks" ? "accuracy" : "agreeing tokens (then lower mean KL)";
    lines.push(`Lethe against the best baseline at each budget, by ${metricName}:`);
    lines.push("");
    const tested = cmp.some((x) => x.test);
    lines.push(
      "| budget | Lethe | its live KV vs full | best baseline at ≤ Lethe's live KV | its live KV vs full | " +
        (tested ? "Lethe − best (95% CI), McNemar | " : "") + "Lethe ahead |",
    );
    lines.push(`| --- | --- | --- | --- | --- |${tested ? " --- |" : ""} --- |`);
    for (const x of cmp) {
      const verdict = x.tested || r.kind !== "tasks" ? x.verdict : `${x.verdict} (untested)`;
      lines.push(
        `| ${x.budget} | ${q(x.lethe)} | ${pct(x.lethe.kv_live_peak_ratio)} | ${x.best.policy}: ${
          q(x.best)
        } | ` +
          `${pct(x.best.kv_live_peak_ratio)} | ${
            tested ? `${x.test ? testText(x.test) : "–"} | ` : ""
          }${verdict} |`,
      );
    }
    lines.push("");
    lines.push(
      tested
        ? TESTS_NOTE
        : r.kind === "tasks"
        ? "_No per-sample outcomes in this run: the verdicts compare the figures alone, untested._"
        : "_One sequence: the verdicts compare its figures alone; there are no samples to test._",
    );
  }
  if (h.bestAblation && h.bestAblation !== L && h.bestAblation.kv_live_peak_ratio < L.kv_live_peak_ratio) {
    const a = h.bestAblation;
    lines.push("");
    lines.push(
      `Best ablation within 1 point: τ=${a.tau}, γ=${a.gamma} at budget ${a.budget}: ${q(a)}, ` +
        `${mem(a)}.`,
    );
  }
  return lines.join("\n");
}

/**
 * Lethe against its peers at one budget: ahead of every one, tied, behind one, or no peer at equal memory (–).
 * With per-sample outcomes (tasks) "yes" and "no" need a paired test with p < 0.05; without them (fidelity: one
 * sequence) the verdict compares the figures alone and `tested` is false.
 */
export type Verdict = "yes" | "tied" | "no" | "–";

/** The paired test of two cells' per-sample outcomes (null without predictions on both). */
export function cellTest(a: CellResult, b: CellResult): PairedTest | null {
  return a.predictions && b.predictions ? pairedTest(a.predictions, b.predictions) : null;
}

/** One budget's row of {@link budgetComparison}. */
export interface BudgetComparison {
  budget: number;
  lethe: CellResult;
  /** The best baseline at equal or lower memory (or the best of all when none is a peer). */
  best: CellResult;
  verdict: Verdict;
  /** Lethe against `best`, paired on per-sample outcomes (null without them). */
  test: PairedTest | null;
  /** Whether the verdict rests on paired tests (every peer's cell has per-sample outcomes). */
  tested: boolean;
}

/**
 * Per budget: Lethe (default τ/γ) against the best baseline at equal or lower memory. Tasks with per-sample
 * outcomes: "yes" when Lethe is ahead of every peer with McNemar p < 0.05, "no" when a peer is ahead of Lethe
 * with p < 0.05, else "tied". Otherwise the figures decide (fidelity: agreement, then lower KL).
 */
export function budgetComparison(r: EvalResults): BudgetComparison[] {
  // Tasks: accuracy. Fidelity: agreement, then lower KL breaks ties.
  const key = (c: CellResult): [number, number] => [quality(r, c), -(c.kl_mean ?? 0)];
  const better = (a: CellResult, b: CellResult) => {
    const [x1, x2] = key(a);
    const [y1, y2] = key(b);
    return x1 - y1 || x2 - y2;
  };
  const out: BudgetComparison[] = [];
  for (const lethe of r.cells.filter((c) => c.policy === "lethe" && !c.ablation && c.budget !== null)) {
    const base = r.cells.filter((c) => c.budget === lethe.budget && !c.ablation && c.policy !== "lethe");
    if (!base.length) continue;
    // Baselines that hold more live KV than Lethe (e.g. SnapKV, which only compresses the prompt) are not
    // at equal memory: "ahead" is judged against those within 5% of Lethe's live peak or below.
    const peers = base.filter((b) => b.kv_live_peak_ratio <= lethe.kv_live_peak_ratio * 1.05);
    // The best baseline: highest quality, then the least live KV.
    const best = [...(peers.length ? peers : base)].sort((a, b) =>
      better(b, a) || a.kv_live_peak_ratio - b.kv_live_peak_ratio
    )[0];
    const tests = peers.map((b) =>
      cellTest(lethe, b)
    );
    const tested = r.kind === "tasks" && peers.length > 0 && tests.every((t) => t !== null);
    let verdict: Verdict;
    if (!peers.length) verdict = "–";
    else if (tested) {
      const st = tests.map((t) => standing(t!));
      verdict = st.includes("behind") ? "no" : st.every((x) => x === "ahead") ? "yes" : "tied";
    } else {
      const worst = Math.min(...peers.map((b) => better(lethe, b)));
      verdict = worst < 0 ? "no" : worst > 0 ? "yes" : "tied";
    }
    out.push({ budget: lethe.budget!, lethe, best, verdict, test: cellTest(lethe, best), tested });
  }
  return out;
}

/** The main table (every non-ablation cell) as Markdown. */
export function mainTable(r: EvalResults, cells: CellResult[] = r.cells.filter((c) => !c.ablation)): string {
  const fams = r.kind === "tasks"
    ? [...new Set(cells.flatMap((c) => Object.keys(c.per_family ?? {})))].sort()
    : [];
  const head = r.kind === "tasks"
    ? ["policy", "budget", "τ", "γ", "accuracy", ...fams, "tokens"]
    : ["policy", "budget", "τ", "γ", "agree tokens", "agree", "mean KL", "max KL"];
  head.push("peak KV", "vs full", "reduction", "live vs full", "decode tok/s", "rounds");
  const rows = cells.map((c) => {
    const row = [
      c.policy,
      c.budget === null ? "–" : String(c.budget),
      c.tau === null ? "" : String(c.tau),
      c.gamma === null ? "" : String(c.gamma),
    ];
    if (r.kind === "tasks") {
      row.push(`${pct(c.accuracy)} (${c.correct}/${c.n})`);
      for (const f of fams) {
        const s = c.per_family?.[f];
        row.push(s ? `${pct(s.accuracy, 0)} (${s.correct}/${s.n})` : "–");
      }
      row.push(c.tokens.toFixed(0));
    } else {
      row.push(`${c.agree_tokens}/${c.tokens}`, pct(c.agree_frac), num(c.kl_mean, 4), num(c.kl_max, 3));
    }
    row.push(
      kb(c.kv_bytes_peak),
      pct(c.kv_peak_ratio),
      pct(c.kv_reduction),
      pct(c.kv_live_peak_ratio),
      c.decode_tok_s.toFixed(1),
      c.prune_rounds.toFixed(c.n > 1 ? 1 : 0),
    );
    return row;
  });
  return [
    `| ${head.join(" | ")} |`,
    `| ${head.map(() => "---").join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
  ].join("\n");
}

/** The chart files a results set produces, name → SVG text. */
export function charts(r: EvalResults): Map<string, string> {
  const out = new Map<string, string>();
  const full = r.cells.find((c) => c.policy === "full");
  const budgets = [...new Set(r.cells.filter((c) => c.budget !== null).map((c) => c.budget!))].sort((a, b) =>
    a - b
  );
  const metric = r.kind === "tasks" ? "accuracy (%)" : "tokens agreeing with full (%)";
  const byPolicy = (value: (c: CellResult) => number | null): Series[] => {
    const s: Series[] = [];
    POLICY_NAMES.forEach((p, i) => {
      const color = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#D55E00", "#0072B2"][i];
      if (p === "full") {
        if (full && budgets.length) {
          const v = value(full);
          if (v !== null) s.push({ name: "full", points: budgets.map((b) => [b, v]), dashed: true, color });
        }
        return;
      }
      const cells = r.cells.filter((c) => c.policy === p && !c.ablation && c.budget !== null)
        .sort((a, b) => a.budget! - b.budget!);
      if (cells.length) s.push({ name: p, color, points: cells.map((c) => [c.budget!, value(c) ?? NaN]) });
    });
    return s;
  };
  if (budgets.length) {
    const q = (c: CellResult) => quality(r, c) * 100;
    out.set(
      r.kind === "tasks" ? "accuracy.svg" : "agreement.svg",
      lineChart({
        title: `${r.model}: ${metric} vs KV budget`,
        xLabel: "KV budget (tokens per layer)",
        yLabel: metric,
        series: byPolicy(q),
        xLog2: true,
        yMin: 0,
        yMax: 100,
      }),
    );
    if (r.kind === "fidelity") {
      out.set(
        "kl.svg",
        lineChart({
          title: `${r.model}: mean KL(full ‖ policy) vs KV budget`,
          xLabel: "KV budget (tokens per layer)",
          yLabel: "mean KL (nats)",
          series: byPolicy((c) => c.kl_mean),
          xLog2: true,
        }),
      );
    }
    out.set(
      "memory.svg",
      lineChart({
        title: `${r.model}: peak KV allocated vs full`,
        xLabel: "KV budget (tokens per layer)",
        yLabel: "peak KV vs full (%)",
        series: byPolicy((c) => c.kv_peak_ratio * 100),
        xLog2: true,
        yMin: 0,
      }),
    );
    const abl = r.cells.filter((c) => c.policy === "lethe" && c.budget !== null);
    const pairs = [...new Set(abl.map((c) => `${c.tau}|${c.gamma}`))].sort();
    if (pairs.length > 1) {
      out.set(
        "ablation.svg",
        lineChart({
          title: `${r.model}: Lethe τ/γ ablation`,
          xLabel: "KV budget (tokens per layer)",
          yLabel: metric,
          xLog2: true,
          yMin: 0,
          yMax: 100,
          series: pairs.map((k) => {
            const [t, g] = k.split("|");
            const cells = abl.filter((c) => `${c.tau}|${c.gamma}` === k).sort((a, b) =>
              a.budget! - b.budget!
            );
            return { name: `τ=${t} γ=${g}`, points: cells.map((c) => [c.budget!, q(c)] as [number, number]) };
          }),
        }),
      );
    }
  }
  const steps = Object.entries(r.trace.kv_steps);
  if (steps.length) {
    out.set(
      "kv_steps.svg",
      lineChart({
        title: `${r.model}: live KV over decode steps (budget ${r.trace.budget}, ${r.trace.sample})`,
        xLabel: "decode step",
        yLabel: "live KV (KiB)",
        yMin: 0,
        series: steps.map(([label, t]) => ({
          name: label.replace(/ τ=.*/, ""),
          dashed: label === "full",
          points: t.map(([s, live]) => [s, live / 1024] as [number, number]),
        })),
      }),
    );
  }
  const rounds = r.trace.lethe_rounds;
  if (rounds.length) {
    const L = rounds[0].kept.length;
    const layers = Array.from({ length: L }, (_, l) => l);
    out.set(
      "lethe_kept.svg",
      lineChart({
        title: `${r.model}: Lethe kept tokens per layer (budget ${r.trace.budget})`,
        xLabel: "decode step of the pruning round",
        yLabel: "kept tokens",
        yMin: 0,
        series: layers.map((l) => ({ name: `layer ${l}`, points: rounds.map((x) => [x.step, x.kept[l]]) })),
      }),
    );
    if (rounds.some((x) => x.hoyer)) {
      out.set(
        "lethe_hoyer.svg",
        lineChart({
          title: `${r.model}: Lethe Hoyer sparsity per layer (budget ${r.trace.budget})`,
          xLabel: "decode step of the pruning round",
          yLabel: "Hoyer sparsity",
          yMin: 0,
          yMax: 1,
          series: layers.map((l) => ({
            name: `layer ${l}`,
            points: rounds.filter((x) => x.hoyer).map((x) => [x.step, x.hoyer![l]] as [number, number]),
          })),
        }),
      );
    }
  }
  return out;
}

/** The per-run Markdown report (results.md beside results.json); `link` prefixes chart paths. */
export function markdownReport(r: EvalResults, link = "", chartNames?: string[], level = 2): string {
  const h = "#".repeat(level);
  const lines: string[] = [];
  const what = r.kind === "tasks"
    ? `task accuracy on ${r.data?.map((d) => d.split("/").slice(-2).join("/")).join(", ")}`
    : `fidelity to full (${r.settings.tokens} greedy tokens from ${r.trace.sample})`;
  lines.push(`${h} ${r.model}: ${what}${r.partial ? " (partial run)" : ""}`);
  lines.push("");
  const n = r.cells.find((c) => c.policy === "full")?.n ?? 0;
  // A run over a later split (--offset) says which samples it took.
  const offset = Number(r.settings.offset ?? 0);
  const which = offset > 0 ? ` (each family's samples from #${offset} on)` : "";
  lines.push(
    `${r.kind === "tasks" ? `${n} samples${which}, ` : ""}budgets ${r.budgets.join(", ")} tokens/layer; ` +
      `run ${r.created.slice(0, 16).replace("T", " ")} UTC, ${(r.wall_s / 60).toFixed(1)} min. ` +
      `KV ratios are peak bytes against full on the same ${r.kind === "tasks" ? "samples" : "run"}.`,
  );
  // Cells added to a committed run (`deno task eval --add-to`): when, and that full reproduced the run's samples.
  const added = (r.settings.added ?? []) as { created: string; cells: string[]; wall_s: number }[];
  for (const x of added) {
    lines.push("");
    lines.push(
      `Cells ${x.cells.join(", ")} added ${x.created.slice(0, 16).replace("T", " ")} UTC ` +
        `(${
          (x.wall_s / 60).toFixed(1)
        } min; \`--add-to\`: that run's full reproduced each per-sample prediction of full ` +
        `above).`,
    );
  }
  lines.push("");
  lines.push(headlineText(r));
  lines.push("");
  lines.push(mainTable(r));
  const abl = r.cells.filter((c) => c.policy === "lethe");
  if (abl.some((c) => c.ablation)) {
    lines.push("");
    lines.push(`${h}# Lethe ablation (τ × γ)`);
    lines.push("");
    lines.push(
      mainTable(r, abl.sort((a, b) => a.budget! - b.budget! || a.tau! - b.tau! || a.gamma! - b.gamma!)),
    );
  }
  const names = chartNames ?? [...charts(r).keys()];
  if (names.length) {
    lines.push("");
    lines.push(names.map((f) => `![${f}](${link}${f})`).join("\n"));
  }
  return lines.join("\n") + "\n";
}

/** Writes results.json, results.md and the SVG charts into `dir`; returns the paths written. */
export async function writeReport(r: EvalResults, dir: string): Promise<string[]> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/results.json`, JSON.stringify(r, null, 1) + "\n");
  return [`${dir}/results.json`, ...(await renderReport(r, dir))];
}

/** Writes results.md and the SVG charts of `r` into `dir` (its results.json untouched); returns the paths. */
export async function renderReport(r: EvalResults, dir: string): Promise<string[]> {
  const written: string[] = [];
  const put = async (name: string, text: string) => {
    await Deno.writeTextFile(`${dir}/${name}`, text);
    written.push(`${dir}/${name}`);
  };
  const svgs = charts(r);
  for (const [name, svg] of svgs) await put(name, svg);
  await put("results.md", markdownReport(r, "", [...svgs.keys()], 1));
  return written;
}

/** The generated section of bench/RESULTS.md from results found under the eval directory. */
export function resultsSection(entries: { dir: string; results: EvalResults }[]): string {
  const lines: string[] = [];
  lines.push("## Evaluation: KV policies on accuracy, memory and speed");
  lines.push("");
  lines.push(
    "_Generated by `deno task results` from `bench/eval/*/results.json` (written by `deno task eval`); " +
      "edit outside the markers only._",
  );
  if (!entries.length) {
    lines.push("");
    lines.push("No evaluation results yet: run `deno task eval`.");
  }
  for (const { dir, results } of entries) {
    lines.push("");
    lines.push(markdownReport(results, `${dir}/`, undefined, 3).trimEnd());
  }
  return lines.join("\n");
}

/** The headline's "ahead" column for each verdict of {@link budgetComparison}. */
const HEADLINE_VERDICT: Record<Verdict, string> = {
  yes: "yes",
  tied: "**no** (tied)",
  no: "**no** (behind)",
  "–": "– (no baseline at its KV)",
};

/** The baselines the headline names, in its column order. */
const HEADLINE_BASELINES = ["streaming", "h2o", "pyramidkv", "rkv", "snapkv"] as const;

/**
 * The README's headline: one row per task evaluation whose data lies under `bench/data/reasoner-fresh/`
 * (samples drawn with a seed never used while choosing settings) and per Lethe budget, with the targets — Lethe
 * within 1 point of full, at or above every baseline, ahead of the best peer with McNemar p < 0.05 — checked
 * from the per-sample outcomes. Null when there are no such evaluations.
 */
export function headlineTable(entries: { dir: string; results: EvalResults }[]): string | null {
  const fresh = entries.filter((x) =>
    x.results.kind === "tasks" && (x.results.data ?? []).some((d) => d.includes("reasoner-fresh"))
  );
  if (!fresh.length) return null;
  const rows: string[] = [];
  const present = HEADLINE_BASELINES.filter((p) =>
    fresh.some((x) => x.results.cells.some((c) => c.policy === p))
  );
  for (const { results: r } of fresh) {
    const full = r.cells.find((c) => c.budget === null);
    if (!full) continue;
    const family = Object.keys(full.per_family ?? {}).join("+") || r.model;
    const note = r.partial ? " (partial run)" : "";
    const cmp = budgetComparison(r);
    for (const lethe of r.cells.filter((c) => c.policy === "lethe" && !c.ablation && c.budget !== null)) {
      const at = r.cells.filter((c) => c.budget === lethe.budget && !c.ablation && c.policy !== "lethe");
      const acc = (c: CellResult | undefined) => (c ? pct(c.accuracy) : "–");
      const x = cmp.find((y) => y.budget === lethe.budget);
      const within = (lethe.accuracy ?? 0) >= (full.accuracy ?? 0) - 0.01;
      const atLeast = at.every((b) => (lethe.accuracy ?? 0) >= (b.accuracy ?? 0));
      const best = x?.best;
      const t = best ? cellTest(lethe, best) : null;
      const vsBest = best && t
        ? `${best.policy}: ${points(t.diff)} points, p ${t.p < 0.001 ? "" : "= "}${
          formatP(t.p)
        } (${t.aOnly} vs ${t.bOnly})`
        : "–";
      const yes = (b: boolean) => (b ? "yes" : "**no**");
      rows.push(
        `| ${family} (${full.n})${note} | ${acc(full)} | ${lethe.budget} | **${acc(lethe)}** | ${
          pct(lethe.kv_live_peak_ratio)
        } | ${present.map((p) => acc(at.find((c) => c.policy === p))).join(" | ")} | ${vsBest} | ${
          yes(within)
        } | ${yes(atLeast)} | ${x ? HEADLINE_VERDICT[x.verdict] : "–"} |`,
      );
    }
  }
  const names: Record<string, string> = {
    streaming: "StreamingLLM",
    h2o: "H2O",
    pyramidkv: "PyramidKV",
    rkv: "R-KV",
    snapkv: "SnapKV",
  };
  const head = [
    "family (samples)",
    "full",
    "budget",
    "Lethe",
    "Lethe's live KV vs full f16",
    ...present.map((p) => names[p]),
    "Lethe − best baseline at its KV",
    "within 1 point of full",
    "≥ every baseline",
    "ahead, p < 0.05",
  ];
  return [
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => (i >= 1 && i <= 4 + present.length ? " ---: " : " --- ")).join("|")}|`,
    ...rows,
  ].join("\n");
}
