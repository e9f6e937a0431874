/**
 * Roofline of the decode kernels on this adapter: the copy ceiling (a 128 MiB copyBufferToBuffer, bytes
 * read + written per second) and each matvec's achieved bandwidth (weight bytes read per second), measured
 * in one run so the ratio is fair on a shared, noisy machine.
 *
 *   deno run --allow-read --allow-env bench/roofline.ts [--json] [--quick]
 *
 * Timing: GPU work completes asynchronously and every sync costs a fixed ~10 ms on this adapter, so a time is
 * the marginal cost (T(2k calls) − T(k calls)) / k, median of several samples. Weights are rotated over enough
 * copies (≥ 64 MiB, twice the L3) that they stream from memory instead of the 32 MiB L3 cache, as in a real forward pass.
 */
import { parseArgs } from "node:util";
import { GpuContext } from "../src/gpu/context.ts";
import { destroyWeight, uploadWeight, type Weight } from "../src/gpu/weights.ts";
import { matvec, type MatvecOptions } from "../src/ops/matvec.ts";
import type { DType } from "../src/dtype.ts";

/** One row of the roofline table. */
export interface RooflineRow {
  kernel: string;
  shape: string;
  dtype: DType;
  gbps: number;
  ceiling_gbps: number;
  ratio: number;
}

/** Median of a list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Marginal milliseconds per call of `record(i)` (recorded work only; sync latency cancels out). */
export async function marginalMs(
  ctx: GpuContext,
  record: (i: number) => void,
  k: number,
  samples: number,
): Promise<number> {
  let i = 0;
  const batch = async (n: number) => {
    const t0 = performance.now();
    for (let j = 0; j < n; j++) record(i++);
    await ctx.sync();
    return performance.now() - t0;
  };
  await batch(1); // warm-up: pipeline compile, first-touch of buffers
  const ms: number[] = [];
  for (let s = 0; s < samples; s++) {
    const a = await batch(k);
    const b = await batch(2 * k);
    ms.push(Math.max(1e-6, (b - a) / k));
  }
  return median(ms);
}

/** Copy ceiling in GB/s: bytes read + written per second of a `bytes` copyBufferToBuffer. */
export async function copyCeilingGbps(ctx: GpuContext, bytes = 128 << 20, samples = 5): Promise<number> {
  const a = ctx.createBuffer(bytes, "copy-src"), b = ctx.createBuffer(bytes, "copy-dst");
  const ms = await marginalMs(ctx, () => ctx.copy(a, 0, b, 0, bytes), 2, samples);
  a.destroy();
  b.destroy();
  return (2 * bytes) / ms / 1e6;
}

/** Cheap random weight bytes: bf16/f16 values of moderate size, f32 in [-1, 1). */
export function randomWeightBytes(dtype: DType, n: number): Uint8Array {
  const u16 = new Uint16Array(dtype === "f32" ? 2 * n : n);
  let s = 0x9e3779b9;
  for (let i = 0; i < u16.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    u16[i] = s & 0xffff;
  }
  if (dtype === "bf16") { for (let i = 0; i < n; i++) u16[i] = 0x3c00 | (u16[i] & 0x83ff); }
  else if (dtype === "f16") { for (let i = 0; i < n; i++) u16[i] = 0x2000 | (u16[i] & 0x93ff); }
  else {
    const f = new Float32Array(u16.buffer);
    for (let i = 0; i < n; i++) f[i] = (u16[2 * i] / 65536) * 2 - 1;
  }
  return new Uint8Array(u16.buffer);
}

/** Uploads enough copies of a [rows, cols] weight that cycling through them defeats the CPU caches. */
export function weightCopies(
  ctx: GpuContext,
  dtype: DType,
  rows: number,
  cols: number,
  minBytes = 96 << 20,
  texture: boolean | "auto" = "auto",
): Weight[] {
  const bytes = randomWeightBytes(dtype, rows * cols);
  const k = Math.max(1, Math.ceil(minBytes / bytes.byteLength));
  return Array.from(
    { length: k },
    (_, i) => uploadWeight(ctx, `w${i}`, dtype, rows, cols, bytes, undefined, { texture }),
  );
}

/** Weight bytes read per second (GB/s) of matvec on a [rows, cols] weight. */
export async function matvecGbps(
  ctx: GpuContext,
  dtype: DType,
  rows: number,
  cols: number,
  opts: MatvecOptions = {},
  samples = 5,
  minBytes = 96 << 20,
): Promise<number> {
  const ws = weightCopies(ctx, dtype, rows, cols, minBytes);
  const batch = opts.batch ?? 1;
  const x = ctx.createBuffer(batch * cols * 4, "x"), y = ctx.createBuffer(batch * rows * 4, "y");
  ctx.write(x, new Float32Array(batch * cols).fill(0.5));
  // ~60 MB of weights per sample batch keeps each sample well above the sync latency.
  const k = Math.max(ws.length, Math.ceil(60e6 / ws[0].bytes));
  const ms = await marginalMs(ctx, (i) => matvec(ctx, ws[i % ws.length], x, y, opts), k, samples);
  for (const w of ws) destroyWeight(w);
  x.destroy();
  y.destroy();
  return ws[0].bytes / ms / 1e6;
}

/** Decode shapes of R1-Distill-Qwen-1.5B (rows × cols): q/o, k/v, gate/up, down, LM head. */
export const DECODE_SHAPES: [number, number][] = [[1536, 1536], [256, 1536], [8960, 1536], [1536, 8960], [
  151936,
  1536,
]];

const ROOFLINE_HELP = `Usage: deno task bench:roofline [--json] [--quick]

Roofline of the decode kernels on this WebGPU adapter: the copy ceiling and each matvec's achieved
bandwidth, measured in one run.

  --json                 print JSON rows instead of a table
  --quick                one small matvec and fewer samples
  -h, --help             this help
`;

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      args: Deno.args,
      options: {
        json: { type: "boolean", default: false },
        quick: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    console.error(`error: ${(e as Error).message}\nRun with --help for the options.`);
    Deno.exit(2);
  }
  if (args.values.help) {
    console.log(ROOFLINE_HELP);
    return;
  }
  const quick = args.values.quick;
  const ctx = await GpuContext.create();
  // A failed pipeline or bind group makes dispatches no-ops and the figures fantasies: fail instead.
  let gpuError = "";
  ctx.device.addEventListener("uncapturederror", (e) => {
    gpuError ||= (e as GPUUncapturedErrorEvent).error.message;
  });
  const samples = quick ? 2 : 5;
  const ceiling = await copyCeilingGbps(ctx, quick ? 32 << 20 : 128 << 20, samples);
  const cases: { kernel: string; dtype: DType; shape: [number, number]; opts: MatvecOptions }[] = [];
  if (quick) cases.push({ kernel: "matvec", dtype: "bf16", shape: [256, 1536], opts: {} });
  else {
    for (const shape of DECODE_SHAPES) cases.push({ kernel: "matvec", dtype: "bf16", shape, opts: {} });
    for (const dtype of ["f16", "f32"] as DType[]) {
      for (const shape of [[8960, 1536], [1536, 8960]] as [number, number][]) {
        cases.push({ kernel: "matvec", dtype, shape, opts: {} });
      }
    }
    cases.push({ kernel: "matvec_buffer", dtype: "bf16", shape: [8960, 1536], opts: { path: "buffer" } });
    cases.push({ kernel: "matvec_batch8", dtype: "bf16", shape: [8960, 1536], opts: { batch: 8 } });
  }
  const rows: RooflineRow[] = [];
  for (const c of cases) {
    const [r, k] = c.shape;
    // The LM head alone is 467 MB: one copy already streams from memory.
    const gbps = await matvecGbps(ctx, c.dtype, r, k, c.opts, quick ? 2 : 3, quick ? 8 << 20 : 64 << 20);
    rows.push({
      kernel: c.kernel,
      shape: `${r}x${k}`,
      dtype: c.dtype,
      gbps: +gbps.toFixed(3),
      ceiling_gbps: +ceiling.toFixed(3),
      ratio: +(gbps / ceiling).toFixed(4),
    });
  }
  if (gpuError) throw new Error(`WebGPU error during the roofline run: ${gpuError}`);
  if (args.values.json) console.log(JSON.stringify(rows));
  else {
    console.log(`adapter: ${ctx.gpu.description}`);
    console.log(`copy ceiling: ${ceiling.toFixed(2)} GB/s (read + write)`);
    console.log("kernel          shape          dtype   GB/s    ratio");
    for (const r of rows) {
      console.log(
        `${r.kernel.padEnd(15)} ${r.shape.padEnd(14)} ${r.dtype.padEnd(6)} ${
          r.gbps.toFixed(2).padStart(6)
        }  ${r.ratio.toFixed(3)}`,
      );
    }
  }
  ctx.destroy();
}

if (import.meta.main) await main();
