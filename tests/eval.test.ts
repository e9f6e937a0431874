/**
 * The evaluation harness: answer extraction and normalisation, KL, the SVG writer, the RESULTS.md section
 * replacement, and small end-to-end runs (stories260K fidelity; the task pipeline on a model with a tokenizer).
 */
import nodeAssert from "node:assert";
import {
  answersMatch,
  extractBoxed,
  extractModelAnswer,
  gsm8kReference,
  lastNumber,
  normalizeAnswer,
} from "../src/eval/extract.ts";
import { argmax, klDivergence, klFromLogits } from "../src/eval/kl.ts";
import { lineChart } from "../src/eval/svg.ts";
import {
  BEGIN_MARKER,
  budgetComparison,
  charts,
  END_MARKER,
  headline,
  headlineTable,
  headlineText,
  markdownReport,
  replaceMarkedSection,
  resultsSection,
  writeReport,
} from "../src/eval/report.ts";
import {
  type CellResult,
  type CellSpec,
  type EvalResults,
  forcedRun,
  limitPerFamily,
  parseSamples,
  planCells,
  runFidelity,
  runTasks,
  scoreOutput,
} from "../src/eval/harness.ts";
import { Engine } from "../src/engine/engine.ts";
import { DEFAULT_KV_OPTIONS } from "../src/kv/policy.ts";
import { STORIES_DIR } from "./support/models.ts";

function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}
function assertEquals(actual: unknown, expected: unknown, msg?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, msg);
}
function assertAlmostEquals(actual: number, expected: number, tol: number): void {
  assert(Math.abs(actual - expected) <= tol, `${actual} is not within ${tol} of ${expected}`);
}

Deno.env.set("XDG_RUNTIME_DIR", Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp");

Deno.test("extract: \\boxed with nested braces, the last box wins, unbalanced is null", () => {
  assertEquals(extractBoxed("so \\boxed{\\frac{1}{2}} done"), "\\frac{1}{2}");
  assertEquals(extractBoxed("\\boxed{1} then \\boxed{\\sqrt{x^{2}}+1}"), "\\sqrt{x^{2}}+1");
  assertEquals(extractBoxed("\\boxed{\\{1,2\\}}"), "\\{1,2\\}");
  assertEquals(extractBoxed("\\fbox{7}"), "7");
  assertEquals(extractBoxed("\\boxed 5"), "5");
  assertEquals(extractBoxed("\\boxed{12"), null);
  assertEquals(extractBoxed("no box"), null);
});

Deno.test("extract: GSM8K references, last numbers, negatives, commas", () => {
  assertEquals(gsm8kReference("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18"), "18");
  assertEquals(gsm8kReference("#### 1,234"), "1234");
  assertEquals(gsm8kReference("#### -7"), "-7");
  assertEquals(gsm8kReference("no marker"), null);
  assertEquals(lastNumber("a 3, b 4, so 1,000 total"), "1,000");
  assertEquals(lastNumber("values 3, 45"), "45");
  assertEquals(lastNumber("it is −12 degrees"), "-12");
  assertEquals(lastNumber("ratio 3/4"), "3/4");
  assertEquals(lastNumber("none"), null);
  assertEquals(extractModelAnswer("<think>maybe 5</think>The answer is 1,250 dollars."), "1250");
  assertEquals(extractModelAnswer("<think>try \\boxed{3}</think> so \\boxed{-4}"), "-4");
  assertEquals(extractModelAnswer("The total is $18.00."), "18");
  assertEquals(extractModelAnswer("<think>x = 7"), "7"); // cut off inside the thought
  assertEquals(extractModelAnswer("nothing here"), null);
});

Deno.test("extract: normalisation and matching", () => {
  assertEquals(normalizeAnswer(" $1,000$ "), "1000");
  assertEquals(normalizeAnswer("18.0"), "18");
  assertEquals(normalizeAnswer("2.50"), "2.5");
  assertEquals(normalizeAnswer("\\dfrac{3}{4}"), "3/4");
  assertEquals(normalizeAnswer("\\frac12"), "1/2");
  assertEquals(normalizeAnswer("90^\\circ"), "90");
  assertEquals(normalizeAnswer("\\text{(C)}"), "(C)");
  assertEquals(normalizeAnswer("x = 5"), "5");
  assertEquals(normalizeAnswer("\\left( 3, \\frac{\\pi}{2} \\right)"), "(3,\\frac{\\pi}{2})");
  assert(answersMatch("\\frac{1}{2}", "0.5"));
  assert(answersMatch("1/2", "\\dfrac{1}{2}"));
  assert(answersMatch("-3", "−3"));
  assert(answersMatch("1,000", "1000.00"));
  assert(answersMatch("\\$5", "5"));
  assert(!answersMatch("5", "-5"));
  assert(!answersMatch(null, "5"));
  assert(!answersMatch("1,2", "12")); // a list is not a thousands separator
  assert(answersMatch("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"));
});

Deno.test("samples: held-out, MATH-500 and GSM8K rows; exact scoring of the text after </think>", () => {
  const wrap = (q: string) => `<Q>${q}</Q>`;
  const held = parseSamples(
    `{"prompt":"P1","answer":"42","family":"walk"}\n{"prompt":"P2","answer":"7","family":"sum"}\n` +
      `{"prompt":"P3","answer":"1","family":"walk"}\n`,
    "x",
    wrap,
  );
  assertEquals(held.map((s) => [s.family, s.prompt, s.scoring]), [
    ["walk", "P1", "exact"],
    ["sum", "P2", "exact"],
    ["walk", "P3", "exact"],
  ]);
  assertEquals(limitPerFamily(held, 1).map((s) => s.prompt), ["P1", "P2"]);
  assertEquals(limitPerFamily(held, 1, 1).map((s) => s.prompt), ["P3"]);
  const math = parseSamples(`{"problem":"2+2?","answer":"4","unique_id":"m/1"}`, "math500", wrap);
  assertEquals(math[0].id, "m/1");
  assert(String(math[0].prompt).startsWith("<Q>2+2?\n"));
  const gsm = parseSamples(`{"question":"q","answer":"work\\n#### 1,200"}`, "gsm8k_test", wrap);
  assertEquals(gsm[0].reference, "1200");
  assertEquals(scoreOutput(held[0], "<think>\nx\n</think>\n\n42 ").correct, true);
  assertEquals(scoreOutput(held[0], "<think>\nx\n</think>\n\n42.0").correct, false);
  assertEquals(scoreOutput(held[0], "42").correct, false); // no </think>: the thought never ended
  assertEquals(scoreOutput(gsm[0], "</think> so \\boxed{1200}").correct, true);
});

Deno.test("KL: hand-computed values, logits path, zero on identical inputs", () => {
  // KL([.5,.5] ‖ [.25,.75]) = .5 ln 2 + .5 ln(2/3)
  const want = 0.5 * Math.log(2) + 0.5 * Math.log(2 / 3);
  assertAlmostEquals(klDivergence([0.5, 0.5], [0.25, 0.75]), want, 1e-12);
  assertAlmostEquals(
    klFromLogits([Math.log(0.5), Math.log(0.5)], [Math.log(0.25), Math.log(0.75)]),
    want,
    1e-12,
  );
  // Logits shifted by a constant are the same distribution.
  assertAlmostEquals(klFromLogits([1, 2, 3], [101, 102, 103]), 0, 1e-12);
  assertEquals(klDivergence([1, 0], [1, 0]), 0);
  assertEquals(klDivergence([0.5, 0.5], [1, 0]), Infinity);
  // KL([.9,.1] ‖ [.5,.5]) = .9 ln 1.8 + .1 ln .2
  assertAlmostEquals(klDivergence([0.9, 0.1], [0.5, 0.5]), 0.9 * Math.log(1.8) + 0.1 * Math.log(0.2), 1e-12);
  assertEquals(argmax([1, 5, 5, 2]), 1);
});

/** A minimal well-formedness check: balanced tags, quoted attributes, one root, escaped text. */
function assertWellFormedXml(xml: string): void {
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<\?[^>]*\?>|<!--[\s\S]*?-->/g;
  let last = 0;
  let roots = 0;
  for (let m = tag.exec(xml); m; m = tag.exec(xml)) {
    const text = xml.slice(last, m.index);
    assert(!/[<>]/.test(text), `stray < or > in text: ${text.slice(0, 40)}`);
    assert(!/&(?!amp;|lt;|gt;|quot;|apos;|#\d+;)/.test(text), `unescaped & in: ${text.slice(0, 40)}`);
    last = m.index + m[0].length;
    if (!m[2]) continue;
    if (m[1]) assertEquals(stack.pop(), m[2], `closing </${m[2]}>`);
    else if (!m[4]) {
      if (stack.length === 0) roots++;
      stack.push(m[2]);
    } else if (stack.length === 0) roots++;
  }
  assert(!/[<>]/.test(xml.slice(last)), "trailing markup that is not a tag");
  assertEquals(stack, []);
  assertEquals(roots, 1);
}

Deno.test("SVG: well-formed, one group per series with its points, names escaped", () => {
  const svg = lineChart({
    title: "a <b> & c",
    xLabel: "budget",
    yLabel: "acc",
    xLog2: true,
    series: [
      { name: "full", points: [[16, 90], [64, 90]], dashed: true },
      { name: "lethe τ=2 & γ", points: [[16, 50], [32, 70], [64, 88]] },
      { name: "empty", points: [] },
      { name: "nan", points: [[16, NaN], [32, 1]] },
    ],
  });
  assertWellFormedXml(svg);
  assert(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  const groups = [...svg.matchAll(/<g class="series" data-name="([^"]*)">([\s\S]*?)<\/g>/g)];
  assertEquals(groups.map((g) => g[1]), ["full", "lethe τ=2 &amp; γ", "empty", "nan"]);
  assertEquals(groups[1][2].match(/<circle/g)?.length, 3);
  const poly = /points="([^"]*)"/.exec(groups[1][2])![1].split(" ");
  assertEquals(poly.length, 3);
  // Higher accuracy is drawn higher (smaller y).
  const ys = poly.map((p) => Number(p.split(",")[1]));
  assert(ys[0] > ys[1] && ys[1] > ys[2]);
  assert(svg.includes("a &lt;b&gt; &amp; c"));
  assert(groups[0][2].includes("stroke-dasharray"));
});

Deno.test("RESULTS.md: only the text between the markers changes; markers appended when absent", () => {
  const before = "# Results\n\nHand-written intro.\n\n";
  const after = "\n\n## Kernels\n\nHand-written tail with <!-- other --> comments.\n";
  const doc = `${before}${BEGIN_MARKER}\nold section\n${END_MARKER}${after}`;
  const out = replaceMarkedSection(doc, "new section\n| a | b |");
  assert(out.startsWith(before + BEGIN_MARKER));
  assert(out.endsWith(END_MARKER + after));
  assert(out.includes("new section\n| a | b |"));
  assert(!out.includes("old section"));
  assertEquals(replaceMarkedSection(out, "new section\n| a | b |"), out); // idempotent
  const appended = replaceMarkedSection("# Only text\n", "body");
  assertEquals(appended, `# Only text\n\n${BEGIN_MARKER}\nbody\n${END_MARKER}\n`);
  assertEquals(replaceMarkedSection("", "body"), `${BEGIN_MARKER}\nbody\n${END_MARKER}\n`);
  // An end marker before the begin marker is not a section: append a new one, keep the text.
  const odd = `${END_MARKER} stray\n`;
  assert(replaceMarkedSection(odd, "b").startsWith(odd));
});

Deno.test("plan: full once, every policy per budget, Lethe τ × γ grid minus the default pair", () => {
  const cells = planCells({
    policies: ["full", "h2o", "lethe"],
    budgets: [16, 32],
    taus: [1.5, 2, 2.5],
    gammas: [0.8, 0.9, 0.95],
  });
  assertEquals(cells.filter((c) => c.policy === "full").length, 1);
  assertEquals(cells.filter((c) => !c.ablation).length, 1 + 2 * 2);
  assertEquals(cells.filter((c) => c.ablation).length, 2 * 8);
  const { tau, gamma } = DEFAULT_KV_OPTIONS.lethe; // the main grid's pair is not repeated in the ablation
  assert(cells.every((c) => !c.ablation || !(c.tau === tau && c.gamma === gamma)));
});

Deno.test("end to end: stories260K fidelity, full agrees with itself with zero KL", async () => {
  const engine = await Engine.load(STORIES_DIR, { progress: false });
  try {
    const tokens = 30;
    const cells: CellSpec[] = [
      { policy: "full", budget: null, tau: null, gamma: null, ablation: false },
      { policy: "full", budget: 16, tau: null, gamma: null, ablation: false },
      { policy: "lethe", budget: 16, tau: 2, gamma: 0.9, ablation: false },
    ];
    let units = 0;
    const r = await runFidelity(engine, [1], tokens, {
      kv: { window: 8 },
      cells,
      traceBudget: 16,
      onProgress: () => units++,
    });
    assertEquals(units, cells.length * tokens);
    const [ref, self, lethe] = r.cells;
    assertEquals(ref.agree_tokens, tokens);
    assertEquals(self.agree_tokens, tokens);
    assertEquals(self.kl_mean, 0);
    assertEquals(self.kl_max, 0);
    assertEquals(self.kv_peak_ratio, 1);
    // The reference (argmax of read-back logits) is the engine's own greedy output (GPU sampler).
    const gen = await engine.generate([1], { maxTokens: tokens, eos: [] });
    assertEquals((await forcedRun(engine, [1], tokens, { policy: "full" })).ids, gen.ids);
    assert(lethe.agree_tokens! >= 0 && lethe.agree_tokens! <= tokens);
    assert(lethe.kl_mean! >= 0 && Number.isFinite(lethe.kl_mean!));
    assert(lethe.kv_live_peak_ratio < 1, "lethe@16 keeps fewer than 31 tokens");
    assertEquals(r.trace.kv_steps["full"].length, tokens); // step 0 (after prefill) … tokens-1
    assert(r.trace.lethe_rounds.length > 0);
    assertEquals(r.trace.lethe_rounds[0].kept.length, engine.model.config.numLayers);

    // Reports: JSON, Markdown, charts, and the RESULTS.md section.
    const results: EvalResults = {
      version: 1,
      kind: "fidelity",
      model: "stories260K",
      model_dir: "models/stories260K",
      data: null,
      created: new Date().toISOString(),
      settings: { tokens },
      budgets: [16],
      cells: r.cells,
      trace: r.trace,
      partial: false,
      wall_s: 1,
    };
    const dir = await Deno.makeTempDir({ prefix: "lethe-eval-" });
    const files = await writeReport(results, dir);
    for (
      const f of ["results.json", "results.md", "agreement.svg", "kl.svg", "kv_steps.svg", "lethe_kept.svg"]
    ) {
      assert(files.includes(`${dir}/${f}`), f);
    }
    for (const [, svg] of charts(results)) assertWellFormedXml(svg);
    const kvSvg = await Deno.readTextFile(`${dir}/kv_steps.svg`);
    assertEquals([...kvSvg.matchAll(/class="series" data-name="([^"]*)"/g)].map((m) => m[1]).sort(), [
      "full",
      "full@16",
      "lethe@16",
    ]);
    assertEquals(headline(results)?.lethe?.label, lethe.label);
    assert(markdownReport(results).includes("| lethe | 16 | 2 | 0.9 |"));
    assert(
      resultsSection([{ dir: "eval/stories260K", results }]).includes("](eval/stories260K/agreement.svg)"),
    );
    await Deno.remove(dir, { recursive: true });
  } finally {
    engine.destroy();
  }
});

Deno.test("budget comparison: figures alone without per-sample outcomes (untested)", () => {
  const cell = (policy: string, budget: number, accuracy: number, live: number) =>
    ({ policy, budget, accuracy, kv_live_peak_ratio: live, ablation: false }) as unknown as CellResult;
  const results = {
    kind: "tasks",
    cells: [
      cell("lethe", 32, 0, 0.14),
      cell("streaming", 32, 0, 0.14), // tied at 0: not "ahead"
      cell("lethe", 64, 0.5, 0.24),
      cell("h2o", 64, 0.4, 0.24),
      cell("snapkv", 64, 0.9, 1.0), // more memory: not a peer
      cell("lethe", 128, 0.8, 0.47),
      cell("h2o", 128, 0.9, 0.47),
      cell("lethe", 256, 0.9, 0.5),
      cell("snapkv", 256, 0.95, 1.0),
      cell("lethe", 512, 0.9, 0.8),
      cell("h2o", 512, 0.9, 0.8),
      cell("pyramidkv", 512, 0.9, 0.6), // same accuracy with less memory: the best baseline shown
    ],
  } as unknown as EvalResults;
  const cmp = budgetComparison(results);
  assertEquals(
    cmp.map((x) => [x.budget, x.best.policy, x.verdict]),
    [[32, "streaming", "tied"], [64, "h2o", "yes"], [128, "h2o", "no"], [256, "snapkv", "–"], [
      512,
      "pyramidkv",
      "tied",
    ]],
  );
  assert(cmp.every((x) => !x.tested && x.test === null));
});

Deno.test("budget comparison: with per-sample outcomes, ahead or behind only with McNemar p < 0.05", () => {
  // 20 samples; `right` lists the samples a cell gets right.
  const cell = (policy: string, budget: number, right: (i: number) => boolean, live = 0.2) => {
    const predictions = Array.from({ length: 20 }, (_, i) => [`walk:${i}`, "x", right(i)]);
    const correct = predictions.filter((p) => p[2]).length;
    return {
      policy,
      budget,
      accuracy: correct / 20,
      correct,
      n: 20,
      kv_live_peak_ratio: live,
      ablation: false,
      predictions,
    } as unknown as CellResult;
  };
  const results = {
    kind: "tasks",
    cells: [
      // 64: Lethe right on 0..17, h2o on 0..9: 8 vs 0 discordant, p = 2/256 → yes.
      cell("lethe", 64, (i) => i < 18),
      cell("h2o", 64, (i) => i < 10),
      // 96: Lethe 12 right vs streaming 10 (2 vs 0, p = 0.5): higher accuracy but a tie.
      cell("lethe", 96, (i) => i < 12),
      cell("streaming", 96, (i) => i < 10),
      // 128: h2o right on 6 more (0 vs 6, p = 0.03125) → no, though streaming is tied with Lethe.
      cell("lethe", 128, (i) => i < 10),
      cell("streaming", 128, (i) => i < 10),
      cell("h2o", 128, (i) => i < 16),
      // 256: ahead of h2o (p 0.0078) but not of streaming (p 1) → tied.
      cell("lethe", 256, (i) => i < 18),
      cell("h2o", 256, (i) => i < 10),
      cell("streaming", 256, (i) => i < 18 && i !== 3 || i === 19),
    ],
  } as unknown as EvalResults;
  const cmp = budgetComparison(results);
  assertEquals(cmp.map((x) => [x.budget, x.best.policy, x.verdict, x.tested]), [
    [64, "h2o", "yes", true],
    [96, "streaming", "tied", true],
    [128, "h2o", "no", true],
    [256, "streaming", "tied", true],
  ]);
  assertEquals([cmp[0].test!.aOnly, cmp[0].test!.bOnly], [8, 0]);
  assert(Math.abs(cmp[0].test!.p - 2 / 256) < 1e-12, `p ${cmp[0].test!.p}`);
  assert(Math.abs(cmp[2].test!.p - 0.03125) < 1e-12, `p ${cmp[2].test!.p}`);
  // The Markdown shows the difference, its interval and the test beside each verdict.
  const md = headlineText({
    ...results,
    cells: [cell("full", null as never, () => true, 1), ...results.cells],
  });
  assert(md.includes("| +40.0 points ["), md);
  assert(md.includes("McNemar p = 0.008 (8 vs 0 of 20) | yes |"), md);
  assert(md.includes("McNemar p = 0.031 (0 vs 6 of 20) | no |"), md);
  assert(md.includes("10,000 paired resamples"), md);
});

/** A model with a real tokenizer and a chat template: the shipped reasoner. */
function tokenizerModel(): string {
  return new URL("../models/lethe-reasoner-tiny/", import.meta.url).pathname;
}

Deno.test("end to end: task pipeline (MATH-500 and GSM8K rows) on a model with a tokenizer", async () => {
  const engine = await Engine.load(tokenizerModel(), { progress: false });
  try {
    const tok = engine.tokenizer!;
    const wrap = (q: string) =>
      tok.chatTemplate
        ? tok.encodeChat([{ role: "user", content: q }])
        : tok.encode(q, { addSpecialTokens: true });
    const samples = [
      ...parseSamples(
        `{"problem":"What is $1+1$?","answer":"2","unique_id":"a"}\n{"problem":"Half of 1?","answer":"\\\\frac{1}{2}","unique_id":"b"}`,
        "math500",
        wrap,
      ),
      ...parseSamples(`{"question":"2 times 3?","answer":"2*3=6\\n#### 6"}`, "gsm8k_test", wrap),
    ];
    const { tau, gamma } = DEFAULT_KV_OPTIONS.lethe;
    const cells = planCells({ policies: ["full", "lethe"], budgets: [16], taus: [tau], gammas: [gamma] });
    const run = { kv: {}, cells, traceBudget: 16, maxTokens: 6, lengthSlack: 2 };
    let units = 0;
    const r = await runTasks(engine, samples, {
      ...run,
      onProgress: () => units++,
    });
    assertEquals(units, cells.length * samples.length);
    assertEquals(r.cells.map((c) => c.label), ["full", `lethe@16 τ=${tau} γ=${gamma}`]);
    for (const c of r.cells) {
      assertEquals(c.n, 3);
      assert(c.accuracy! >= 0 && c.accuracy! <= 1);
      assertEquals(Object.keys(c.per_family!).sort(), ["gsm8k_test", "math500"]);
      assertEquals(c.predictions!.length, 3);
      assert(c.tokens >= 1 && c.tokens <= 6);
      assert(c.kv_bytes_peak > 0 && c.decode_tok_s >= 0);
    }
    assertEquals(r.cells[0].kv_peak_ratio, 1);
    assert(r.trace.kv_steps["full"]?.length > 0);
    // The batched decode loop gives the same greedy outputs as one generate per sample.
    const b = await runTasks(engine, samples, {
      ...run,
      batch: 3,
    });
    assertEquals(b.cells.map((c) => c.predictions), r.cells.map((c) => c.predictions));
    assertEquals(b.cells.map((c) => c.tokens), r.cells.map((c) => c.tokens));
    assertEquals(b.cells.map((c) => c.kv_bytes_live_peak), r.cells.map((c) => c.kv_bytes_live_peak));
    assertEquals(r.cells[0].per_sample?.tokens.length, 3);
    assertEquals(r.cells[1].per_sample, undefined);

    // --resume: an interrupted run's full is taken as it is (a marked prediction proves it was not rerun) and
    // the cell after it is run against its per-sample lengths, exactly as the uninterrupted run did.
    const marked = structuredClone(r.cells[0]);
    marked.predictions![0][1] = "resumed";
    let ran = 0;
    const resumed = await runTasks(engine, samples, {
      ...run,
      resume: { cells: [marked], trace: r.trace },
      onProgress: (d) => void (d.endsWith("(resumed)") || ran++),
    });
    assertEquals(ran, samples.length, "only the Lethe cell runs");
    assertEquals(resumed.cells[0].predictions![0][1], "resumed");
    assertEquals(resumed.cells[1].predictions, r.cells[1].predictions);
    assertEquals(resumed.cells[1].kv_live_peak_ratio, r.cells[1].kv_live_peak_ratio);
    // A resumed cell for other samples is run again; a non-full cell without full is never taken.
    const otherIds = structuredClone(r.cells[0]);
    otherIds.predictions![0][0] = "other:0";
    ran = 0;
    await runTasks(engine, samples, {
      ...run,
      resume: { cells: [otherIds, r.cells[1]], trace: r.trace },
      onProgress: (d) => void (d.endsWith("(resumed)") || ran++),
    });
    assertEquals(ran, 2 * samples.length, "both cells run again");
  } finally {
    engine.destroy();
  }
});

Deno.test("eval --resume: only a results.json of the same model, data and settings is resumed", async () => {
  const { resumeFrom } = await import("../tools/eval.ts");
  const dir = await Deno.makeTempDir();
  try {
    const now = {
      kind: "tasks",
      model_dir: "models/m",
      data: ["d.jsonl"],
      settings: { policies: ["full", "lethe"], kv: { sink: 4 }, samples: 3, argv: ["--resume"] },
      cells: [],
      trace: { budget: null, sample: "", kv_steps: {}, lethe_rounds: [] },
    } as unknown as EvalResults;
    assertEquals(await resumeFrom(dir, now), undefined, "nothing to resume: start afresh");
    const prev = structuredClone(now);
    prev.settings.argv = ["--limit", "3"];
    prev.cells = [{ label: "full" } as unknown as CellResult];
    await Deno.writeTextFile(`${dir}/results.json`, JSON.stringify(prev));
    assertEquals((await resumeFrom(dir, now))!.cells.length, 1, "the command line may differ");
    prev.settings.kv = { sink: 8 };
    await Deno.writeTextFile(`${dir}/results.json`, JSON.stringify(prev));
    await nodeAssert.rejects(
      () => resumeFrom(dir, now),
      /--resume: .*results.json was written with settings.kv =/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eval --add-to: a run's cells join committed results only when its full reproduces theirs", async () => {
  const { addCells } = await import("../tools/eval.ts");
  const cell = (policy: string, budget: number | null, right: boolean[], peak: number, ablation = false) =>
    ({
      policy,
      budget,
      label: budget === null ? policy : `${policy}@${budget}`,
      ablation,
      kv_bytes_peak: peak,
      kv_bytes_live_peak: peak / 2,
      kv_peak_ratio: 0,
      kv_live_peak_ratio: 0,
      kv_reduction: 0,
      predictions: right.map((ok, i) => [`walk:${i}`, "x", ok]),
    }) as unknown as CellResult;
  const results = (cells: CellResult[], budgets: number[]) =>
    ({ kind: "tasks", model: "m", budgets, cells, settings: { argv: ["a"] } }) as unknown as EvalResults;
  const target = results([
    cell("full", null, [true, true], 1000),
    cell("lethe", 64, [true, false], 100),
    cell("lethe", 128, [true, true], 200),
    cell("lethe", 64, [false, false], 100, true),
  ], [64, 128]);
  // The new run's full measured other bytes (another machine's run): ratios are against the committed full.
  const run = results([cell("full", null, [true, true], 2000), cell("rkv", 64, [false, true], 50)], [64]);
  const merged = addCells(target, run, "d");
  assertEquals(merged.cells.map((c) => c.label), ["full", "lethe@64", "rkv@64", "lethe@128", "lethe@64"]);
  const rkv = merged.cells[2];
  assertEquals([rkv.kv_peak_ratio, rkv.kv_live_peak_ratio, rkv.kv_reduction], [0.05, 0.05, 0.95]);
  assertEquals((merged.settings.added as { cells: string[] }[])[0].cells, ["rkv@64"]);
  // Adding again replaces the cell instead of duplicating it.
  assertEquals(addCells(merged, run, "d").cells.length, 5);
  const other = results([cell("full", null, [true, false], 1000), cell("rkv", 64, [true, true], 50)], [64]);
  nodeAssert.throws(() => addCells(target, other, "d"), /--add-to d: this run's full does not reproduce/);
});

Deno.test("headline table: fresh-sample evaluations only, targets checked from per-sample outcomes", () => {
  const outcome = (right: number, n = 20) =>
    Array.from({ length: n }, (_, i) => [`prog:${i}`, "x", i < right]);
  const cell = (policy: string, budget: number | null, right: number, live: number) =>
    ({
      policy,
      budget,
      label: budget === null ? policy : `${policy}@${budget}`,
      ablation: false,
      n: 20,
      accuracy: right / 20,
      correct: right,
      per_family: { prog: { n: 20, correct: right, accuracy: right / 20 } },
      kv_live_peak_ratio: live,
      predictions: outcome(right),
    }) as unknown as CellResult;
  const results = (data: string, cells: CellResult[]) =>
    ({
      kind: "tasks",
      model: "m",
      data: [data],
      budgets: [64],
      cells,
      settings: {},
    }) as unknown as EvalResults;
  // Lethe 19/20 = full; StreamingLLM 10/20 (Lethe ahead: 9 vs 0, p = 0.004); R-KV 19/20 at more live KV.
  const fresh = results("bench/data/reasoner-fresh/prog.jsonl", [
    cell("full", null, 19, 1),
    cell("lethe", 64, 19, 0.07),
    cell("streaming", 64, 10, 0.07),
    cell("rkv", 64, 19, 0.2),
  ]);
  assertEquals(
    headlineTable([{ dir: "d", results: results("models/m/heldout/prog.jsonl", fresh.cells) }]),
    null,
  );
  const table = headlineTable([{ dir: "d", results: fresh }])!;
  const [head, , row] = table.split("\n");
  assert(head.includes("| StreamingLLM | R-KV |"), head);
  assert(
    row.startsWith("| prog (20) | 95.0% | 64 | **95.0%** | 7.0% | 50.0% | 95.0% | streaming: +45.0 points"),
    row,
  );
  assert(row.endsWith("| yes | yes | yes |"), row);
  // R-KV one sample ahead (at Lethe's KV): Lethe is no longer at or above every baseline, and not ahead.
  fresh.cells[3] = cell("rkv", 64, 20, 0.07);
  const behind = headlineTable([{ dir: "d", results: fresh }])!.split("\n")[2];
  assert(behind.endsWith("| yes | **no** | **no** (tied) |"), behind);
});

Deno.test("eval:fresh: --help names the budgets; an unknown family is one clear error", async () => {
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../tools/eval_fresh.ts", import.meta.url).pathname, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
    };
  };
  const help = await run("--help");
  assertEquals(help.code, 0);
  assert(help.text.includes("walk 64; prog 64; sum 64"), help.text);
  const bad = await run("--families", "nope");
  assertEquals(bad.code, 1);
  assert(bad.text.includes("eval:fresh: --families: no budgets for nope (known: walk,prog,sum)"), bad.text);
});
