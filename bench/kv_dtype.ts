/**
 * Decode attention over f32, f16 and int8 KV at DeepSeek-R1-Distill-Qwen-1.5B's shape (12 query heads, 2 KV
 * heads, headDim 128), on both K/V paths, in one run: per context length, the formats alternate within every
 * sample and each figure is a median (marginal ms per call, sync latency cancelled). GB/s counts the stored
 * K/V bytes a step must read; the ratio column is the time against f16 (the default) on the same path.
 *
 *   deno task bench:kv [--lens 1024,4096,16384] [--samples 5] [--json]
 */
import { parseArgs } from "node:util";
import { GpuContext } from "../src/gpu/context.ts";
import { attentionDecodeBatch } from "../src/ops/attention.ts";
import { KV_DTYPES, type KvDtype, kvLayout } from "../src/ops/kv_layout.ts";
import { encodeKvRows } from "../src/ref/kv_codec.ts";
import { copyCeilingGbps, marginalMs } from "./roofline.ts";

const HELP = `Usage: deno task bench:kv [--lens 1024,4096,16384] [--samples 5] [--json]

Decode attention time and achieved bandwidth for each KV storage format (f32, f16, int8) at the
R1-Distill-Qwen-1.5B attention shape, on the texture and the storage-buffer paths, in one run.`;

const { values } = parseArgs({
  options: {
    lens: { type: "string", default: "1024,4096,16384" },
    samples: { type: "string", default: "5" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(HELP);
  Deno.exit(0);
}
const LENS = values.lens!.split(",").map(Number);
const SAMPLES = Number(values.samples);
const SHAPE = { nHeads: 12, nKvHeads: 2, headDim: 128 };

/** One (length, path, format) measurement. */
export interface KvDtypeRow {
  len: number;
  path: "texture" | "storage";
  kv_dtype: KvDtype;
  kv_bytes: number;
  ms: number;
  gb_s: number;
  vs_f16_time: number;
}

const ctx = await GpuContext.create();
const ceiling = await copyCeilingGbps(ctx);
let s = 7;
const rand = (n: number) =>
  Float32Array.from({ length: n }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 31 - 1);
const maxLen = Math.max(...LENS);
const values32 = rand(maxLen * SHAPE.nKvHeads * SHAPE.headDim);
const kv = new Map(KV_DTYPES.map((d) => {
  const layout = kvLayout(d, SHAPE.nKvHeads, SHAPE.headDim);
  const words = encodeKvRows(layout, values32, maxLen);
  return [d, { layout, k: ctx.upload(words, `k-${d}`), v: ctx.upload(words, `v-${d}`) }];
}));
const q = ctx.upload(rand(SHAPE.nHeads * SHAPE.headDim), "q");
const out = ctx.createBuffer(SHAPE.nHeads * SHAPE.headDim * 4, "out");

const rows: KvDtypeRow[] = [];
for (const len of LENS) {
  for (const path of ["texture", "storage"] as const) {
    const ms = new Map<KvDtype, number[]>(KV_DTYPES.map((d) => [d, []]));
    for (let i = 0; i < SAMPLES; i++) {
      // Alternating: each sample times every format once, in a rotating order.
      for (let j = 0; j < KV_DTYPES.length; j++) {
        const d = KV_DTYPES[(i + j) % KV_DTYPES.length];
        const x = kv.get(d)!;
        const reps = len >= 8192 ? 2 : 6;
        ms.get(d)!.push(
          await marginalMs(
            ctx,
            () =>
              attentionDecodeBatch(ctx, {
                ...SHAPE,
                q,
                out,
                texture: path === "texture",
                seqs: [{ k: x.k, v: x.v, len, dtype: d }],
              }),
            reps,
            1,
          ),
        );
      }
    }
    const med = (d: KvDtype) => {
      const a = [...ms.get(d)!].sort((x, y) => x - y);
      return a[a.length >> 1];
    };
    for (const d of KV_DTYPES) {
      const bytes = 2 * len * kv.get(d)!.layout.words * 4;
      const t = med(d);
      rows.push({
        len,
        path,
        kv_dtype: d,
        kv_bytes: bytes,
        ms: t,
        gb_s: bytes / t / 1e6,
        vs_f16_time: t / med("f16"),
      });
    }
  }
}
if (values.json) console.log(JSON.stringify(rows, null, 2));
else {
  console.log(`copy ceiling ${ceiling.toFixed(1)} GB/s (${ctx.gpu.description})`);
  console.log("| tokens | path | KV | KV bytes | ms / call | GB/s | of ceiling | time vs f16 |");
  console.log("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    console.log(
      `| ${r.len} | ${r.path} | ${r.kv_dtype} | ${(r.kv_bytes / 2 ** 20).toFixed(1)} MiB | ${
        r.ms.toFixed(2)
      } | ${r.gb_s.toFixed(2)} | ${(r.gb_s / ceiling).toFixed(3)} | ${r.vs_f16_time.toFixed(2)}× |`,
    );
  }
}
