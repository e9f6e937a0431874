/** The fuzz report as text: counts, per-kind table, memory and time, GPU leftovers, defects to replay. */
import type { FuzzReport } from "./run.ts";
import { DEFECTS, OUTCOMES } from "./protocol.ts";

const mib = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;

/** A human-readable report. */
export function formatReport(r: FuzzReport): string {
  const out: string[] = [];
  const defects = DEFECTS.reduce((s, o) => s + r.counts[o], 0);
  out.push(
    `fuzz: seed ${r.seed}, ${r.cases} cases, ${r.mutations} mutations, models ${
      r.models.map((m) => m.split(/[/\\]/).pop()).join(", ")
    }, timeout ${r.timeoutMs} ms`,
  );
  out.push(`outcomes: ${OUTCOMES.map((o) => `${o} ${r.counts[o]}`).join(", ")}  →  defects ${defects}`);
  out.push(
    `time: ${(r.wallMs / 1000).toFixed(1)} s wall, ${r.caseMsMean.toFixed(1)} ms/case mean, ${
      r.caseMsMax.toFixed(0)
    } ms max; ${r.workers} worker process(es)`,
  );
  const m = r.memory;
  const at = (rss: number | null, heap: number | null) =>
    rss === null ? "-" : `${mib(rss)}${heap === null ? "" : ` (V8 heap ${mib(heap)})`}`;
  out.push(
    `memory: peak RSS (${m.method}) worker ${mib(m.workerPeakRssBytes)}, parent ${
      mib(m.parentPeakRssBytes)
    }; ` +
      `worker RSS after first case ${at(m.workerRssFirstBytes, m.workerHeapFirstBytes)}, after last ${
        at(m.workerRssLastBytes, m.workerHeapLastBytes)
      }`,
  );
  const g = r.gpu;
  out.push(
    `gpu: ${g.loadedCases} loaded cases left ${g.retainedWeightObjects} weight objects (${
      mib(g.retainedWeightBytes)
    }) after Engine.destroy (freed by the fuzzer); ${g.leakingCases} case(s) leaked ${g.leakedObjects} other object(s) (${
      mib(g.leakedBytes)
    }); context caches grew by ${g.cacheGrowthObjects} object(s); pool grew in ${g.poolLeakCases}; WebGPU errors in ${g.gpuErrorCases}; liveBuffers() ${
      g.liveBuffersAvailable ? `grew in ${g.liveBuffersGrewCases}` : "not available"
    }`,
  );
  for (const e of g.leakExamples.slice(0, 5)) {
    out.push(`  leak: case ${e.index} (${e.outcome}): ${e.leaked} object(s): ${e.labels.join(", ")}`);
  }
  for (const e of g.gpuErrorExamples.slice(0, 5)) {
    out.push(`  gpu error: case ${e.index} (${e.outcome}): ${e.error}`);
  }
  out.push("");
  out.push("by mutation kind (cases containing it):");
  const w = Math.max(...Object.keys(r.byKind).map((k) => k.length), 4);
  out.push(`  ${"kind".padEnd(w)} ${OUTCOMES.map((o) => o.padStart(o.length + 1)).join("")}`);
  for (const [kind, c] of Object.entries(r.byKind)) {
    out.push(`  ${kind.padEnd(w)} ${OUTCOMES.map((o) => String(c[o]).padStart(o.length + 1)).join("")}`);
  }
  if (r.signatures.length) {
    out.push("");
    out.push("defects and non-finite loads, by message (replay: deno task fuzz --seed S --only K):");
    for (const s of r.signatures) {
      const ex = s.example;
      out.push(`  [${s.outcome}/${ex.phase}] ×${s.count}  ${s.signature}`);
      out.push(
        `    e.g. --seed ${r.seed} --only ${ex.index} (${ex.base}: ${
          ex.mutations.map((m) => `${m.kind} ${m.detail}`).join("; ")
        })`,
      );
      out.push(`    message: ${ex.message.split("\n").slice(0, 3).join(" / ").slice(0, 400)}`);
      out.push(`    cases: ${s.cases.join(", ")}${s.count > s.cases.length ? ", …" : ""}`);
    }
  }
  return out.join("\n");
}
