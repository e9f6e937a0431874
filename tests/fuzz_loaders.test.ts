/**
 * Seeded fuzzing of the model loaders (tools/fuzz.ts): mutated copies of lethe-reasoner-tiny and stories260K
 * (config.json, safetensors headers and bytes, sharded indexes, tokenizer files, kv_defaults.json, missing
 * files) must each load and generate, or fail with an Error naming the file at fault — never crash, hang, or
 * fail with a message that names no file. A failure lists every defect with the `--seed S --only K` that
 * replays it: `deno task fuzz --seed 20250607 --only K`.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { DEFECTS, formatReport, makeCase, readBaseModel, runFuzz } from "../tools/fuzz.ts";
import type { FuzzReport } from "../tools/fuzz.ts";

/** The suite's fixed seed and case count (≈ 1.5 mutations per case). */
const SEED = 20250607;
const CASES = 400;

const TINY = fileURLToPath(new URL("../models/lethe-reasoner-tiny", import.meta.url));
const STORIES = fileURLToPath(new URL("../models/stories260K", import.meta.url));

/** Every defect of a report, one line each, with how to replay it. */
function defectLines(r: FuzzReport): string {
  return r.defects.map((d) =>
    `  --seed ${r.seed} --only ${d.index} [${d.outcome}/${d.phase}] ${
      d.mutations.map((m) => `${m.kind}: ${m.detail}`).join("; ")
    }\n    → ${(d.message ?? "").split("\n").slice(0, 2).join(" / ").slice(0, 300)}`
  ).join("\n");
}

Deno.test({
  name:
    `fuzz: ${CASES} seeded mutated model directories load or fail naming a file (no crash, hang, unnamed error)`,
  async fn() {
    const report = await runFuzz({ seed: SEED, cases: CASES, timeoutMs: 10_000 });
    assert.equal(report.cases, CASES);
    assert.ok(report.mutations >= 300, `only ${report.mutations} mutations`);
    // Every area of the catalogue was exercised, and the generation path too.
    for (const area of ["config.", "st.", "index.", "tokenizer.", "tokenizer-config.", "kv.", "files."]) {
      assert.ok(Object.keys(report.byKind).some((k) => k.startsWith(area)), `no ${area}* mutation ran`);
    }
    assert.ok(report.counts.loaded > 0, "no case loaded: the generation path went untested");
    const summary = `${formatReport(report)}\n\ndefects:\n${defectLines(report)}`;
    const found = DEFECTS.map((d) => `${d} ${report.counts[d]}`).join(", ");
    assert.equal(
      DEFECTS.reduce((s, d) => s + report.counts[d], 0),
      0,
      `fuzzing found defects (${found}):\n${summary}`,
    );
    assert.equal(report.gpu.leakedObjects, 0, `GPU objects leaked across cases:\n${summary}`);
  },
});

Deno.test("fuzz: the same seed gives the same cases; another seed, others", async () => {
  const bases = await Promise.all([TINY, STORIES].map(readBaseModel));
  const digest = (seed: number, k: number) => {
    const c = makeCase(seed, k, bases);
    const files = [...c.files].map(([name, bytes]) => {
      let h = 0;
      for (let i = 0; i < bytes.length; i += 7) h = (Math.imul(h, 31) + bytes[i]) | 0;
      return `${name}:${bytes.length}:${h}`;
    });
    return JSON.stringify([c.base, c.mutations, files]);
  };
  for (const k of [0, 1, 17, 123]) assert.equal(digest(SEED, k), digest(SEED, k));
  const a = Array.from({ length: 8 }, (_, k) => digest(SEED, k));
  const b = Array.from({ length: 8 }, (_, k) => digest(SEED + 1, k));
  assert.notDeepEqual(a, b);
  for (const k of [0, 1, 2, 3]) {
    assert.ok(makeCase(SEED, k, bases).mutations.length > 0, `case ${k}: no mutation`);
  }
});

Deno.test("fuzz harness: an injected sync hang, async hang, V8 OOM, non-Error throw, stray rejection and exit are counted", async () => {
  const report = await runFuzz({
    seed: SEED,
    only: [0, 1, 2, 3, 4, 5, 6],
    models: [TINY],
    timeoutMs: 2_000,
    heapMb: 160,
    faults: { 0: "hang", 1: "oom", 2: "throw-string", 3: "reject", 4: "exit", 5: "hang-async" },
  });
  const outcome = (k: number) => report.defects.find((d) => d.index === k)?.outcome;
  assert.equal(outcome(0), "hang");
  assert.equal(outcome(1), "crash");
  assert.equal(outcome(2), "crash");
  assert.equal(outcome(3), "crash");
  assert.equal(outcome(4), "crash");
  assert.equal(outcome(5), "hang");
  assert.equal(report.cases, 7, "every case has a result, the one after the faults included");
  assert.ok(!["crash", "hang"].includes(outcome(6) ?? ""), "a fresh worker ran the case after the faults");
  assert.equal(report.workers, 5, "a new worker after each hang, OOM and exit");
});
