/**
 * Peak host memory while a model with one large tensor loads.
 *
 *   deno run -A bench/load_memory.ts [--dir DIR] [--rows 151936] [--cols 4096] [--untied] [--json]
 *
 * Builds (once, in DIR, default $TMPDIR/lethe-load-memory) a one-layer Llama checkpoint whose bf16 embedding
 * is `rows × cols` (151936 × 4096 = 1.24 GB, the size of a real 7B-class embedding), then loads it with
 * `GpuModel.load` in a fresh process and reports that process's memory: the resident set before the load,
 * its high-water mark during the load (VmHWM, reset just before), the bytes of GPU memory the weights occupy
 * (on Mesa's CPU adapter they live in this same process, so they are part of its RSS), and the host overhead
 * = peak − before − GPU bytes: what loading costs on top of the weights themselves.
 *
 * By default the embedding is also the LM head (tied), so on the CPU adapter it is uploaded twice (a storage
 * buffer for the gather and a texture for the matvec), the worst case; `--untied` adds a separate LM head.
 *
 *   deno run -A bench/load_memory.ts --check-cost DIR
 *
 * times the non-finite scan the loader runs over every tensor's bytes against a whole `GpuModel.load` of DIR.
 */
import "../src/io/deno_fs.ts"; // local model paths
import { parseArgs } from "node:util";
import { GpuContext } from "../src/gpu/context.ts";
import { countNonFinite, type Weight } from "../src/gpu/weights.ts";
import { GpuModel } from "../src/model/model.ts";
import { SafetensorsIndex } from "../src/model/safetensors.ts";
import { writeSafetensors } from "../src/model/safetensors_write.ts";
import type { TensorToWrite } from "../src/model/safetensors_write.ts";

/** What one measurement found (bytes). */
export interface LoadMemory {
  adapter: string;
  tensor_bytes: number;
  rss_before: number;
  rss_peak: number;
  gpu_bytes: number;
  host_overhead: number;
  load_s: number;
  /** Largest `Deno.memoryUsage().external` seen by a 5 ms sampler (ArrayBuffers; sampled, so a lower bound). */
  external_peak_sampled: number;
}

function status(): { rss: number; hwm: number } {
  const text = Deno.readTextFileSync("/proc/self/status");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/** Deterministic small bf16 values (|x| in [2^-7, 2^-6)), two per u32. */
function fillBf16(bytes: Uint8Array, seed: number): Uint8Array {
  const u = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < u.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    u[i] = (0x3c003c00 | (s & 0x807f807f)) >>> 0;
  }
  return bytes;
}

/** Writes the checkpoint unless DIR already holds one of the same shape. */
export async function buildCheckpoint(dir: string, rows: number, cols: number, tied: boolean): Promise<void> {
  const heads = cols / 128, kvHeads = Math.max(1, heads / 4), ff = 512;
  const config = {
    model_type: "llama",
    hidden_size: cols,
    intermediate_size: ff,
    num_hidden_layers: 1,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    vocab_size: rows,
    tie_word_embeddings: tied,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  const text = JSON.stringify(config, null, 2);
  try {
    if (await Deno.readTextFile(`${dir}/config.json`) === text) return;
  } catch { /* build it */ }
  await Deno.mkdir(dir, { recursive: true });
  const kvDim = kvHeads * 128;
  const mat = (name: string, r: number, c: number, seed: number): TensorToWrite => ({
    name,
    dtype: "BF16",
    shape: [r, c],
    data: () => fillBf16(new Uint8Array(r * c * 2), seed),
  });
  const ones = (name: string): TensorToWrite => ({
    name,
    dtype: "BF16",
    shape: [cols],
    data: () => new Uint8Array(new Uint16Array(cols).fill(0x3f80).buffer),
  });
  const p = "model.layers.0";
  const tensors: TensorToWrite[] = [
    mat("model.embed_tokens.weight", rows, cols, 1),
    ones(`${p}.input_layernorm.weight`),
    mat(`${p}.self_attn.q_proj.weight`, cols, cols, 2),
    mat(`${p}.self_attn.k_proj.weight`, kvDim, cols, 3),
    mat(`${p}.self_attn.v_proj.weight`, kvDim, cols, 4),
    mat(`${p}.self_attn.o_proj.weight`, cols, cols, 5),
    ones(`${p}.post_attention_layernorm.weight`),
    mat(`${p}.mlp.gate_proj.weight`, ff, cols, 6),
    mat(`${p}.mlp.up_proj.weight`, ff, cols, 7),
    mat(`${p}.mlp.down_proj.weight`, cols, ff, 8),
    ones("model.norm.weight"),
  ];
  if (!tied) tensors.push(mat("lm_head.weight", rows, cols, 9));
  await writeSafetensors(`${dir}/model.safetensors`, tensors);
  await Deno.writeTextFile(`${dir}/config.json`, text);
}

function weightGpuBytes(w: Weight): number {
  let n = 0;
  for (const c of w.chunks) n += c.buffer.size;
  for (const t of w.textures ?? []) n += t.texture.width * t.texture.height * 16;
  return n;
}

/** GPU bytes of a loaded model's weights (buffers and texture copies; a tied LM head counted once). */
function modelGpuBytes(m: GpuModel): number {
  const w = m.weights;
  let n = weightGpuBytes(w.embed) + w.finalNorm.size + m.invFreq.size;
  if (w.lmHead !== w.embed) n += weightGpuBytes(w.lmHead);
  for (const l of w.layers) {
    for (const x of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) n += weightGpuBytes(x);
    for (const b of [l.inputNorm, l.postNorm, l.qBias, l.kBias, l.vBias]) n += b?.size ?? 0;
  }
  return n;
}

/** Loads `dir` in this process and measures (run in a fresh process: the high-water mark is per process). */
export async function measure(dir: string): Promise<LoadMemory> {
  const ctx = await GpuContext.create();
  const before = status();
  try {
    // Linux ≥ 4.0: "5" resets VmHWM to the current RSS, so the peak is the load's own.
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
  } catch { /* the peak then also covers the start-up, which is small */ }
  let external = 0;
  const timer = setInterval(() => external = Math.max(external, Deno.memoryUsage().external), 5);
  const t0 = performance.now();
  const model = await GpuModel.load(ctx, dir, { progress: false });
  const load = (performance.now() - t0) / 1000;
  clearInterval(timer);
  const after = status();
  const gpu = modelGpuBytes(model);
  const embed = model.weights.embed;
  return {
    adapter: ctx.gpu.description,
    tensor_bytes: embed.bytes,
    rss_before: before.rss,
    rss_peak: after.hwm,
    gpu_bytes: gpu,
    host_overhead: after.hwm - before.rss - gpu,
    load_s: load,
    external_peak_sampled: external,
  };
}

/** Seconds of `GpuModel.load(dir)` (median of `runs`) and of the non-finite scan over the same bytes. */
export async function checkCost(
  dir: string,
  runs = 3,
): Promise<{ load_s: number; scan_s: number; bytes: number }> {
  const ctx = await GpuContext.create();
  const loads: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const m = await GpuModel.load(ctx, dir, { progress: false });
    loads.push((performance.now() - t0) / 1000);
    m.destroy(ctx);
  }
  const index = await SafetensorsIndex.open(dir);
  const scans: number[] = [];
  let bytes = 0;
  const data = await Promise.all(
    index.names().map(async (n) => [index.info(n)!, await index.read(n)] as const),
  );
  for (let i = 0; i < runs; i++) {
    bytes = 0;
    const t0 = performance.now();
    for (const [info, b] of data) {
      countNonFinite(info.engineDType, b);
      bytes += b.byteLength;
    }
    scans.push((performance.now() - t0) / 1000);
  }
  index.close();
  const median = (x: number[]) => x.sort((a, b) => a - b)[x.length >> 1];
  return { load_s: median(loads), scan_s: median(scans), bytes };
}

if (import.meta.main) {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      dir: { type: "string" },
      rows: { type: "string", default: "151936" },
      cols: { type: "string", default: "4096" },
      untied: { type: "boolean" },
      measure: { type: "string" },
      "check-cost": { type: "string" },
      json: { type: "boolean" },
    },
  });
  if (v["check-cost"]) {
    const r = await checkCost(v["check-cost"]);
    console.log(
      `${v["check-cost"]}: ${(r.bytes / 1e6).toFixed(1)} MB of weights; GpuModel.load ${
        (r.load_s * 1000).toFixed(0)
      } ms; the non-finite scan over the same bytes ${(r.scan_s * 1000).toFixed(1)} ms (${
        (100 * r.scan_s / r.load_s).toFixed(1)
      }% of the load, ${(r.bytes / 1e9 / r.scan_s).toFixed(1)} GB/s)`,
    );
    Deno.exit(0);
  }
  if (v.measure) {
    console.log(JSON.stringify(await measure(v.measure)));
    Deno.exit(0);
  }
  const dir = v.dir ?? `${Deno.env.get("TMPDIR") ?? "/tmp"}/lethe-load-memory`;
  const rows = Number(v.rows), cols = Number(v.cols);
  await buildCheckpoint(dir, rows, cols, !v.untied);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--measure", dir],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) Deno.exit(1);
  const r = JSON.parse(new TextDecoder().decode(out.stdout)) as LoadMemory;
  if (v.json) console.log(JSON.stringify(r));
  else {
    const mb = (n: number) => `${(n / 1e6).toFixed(0)} MB`;
    console.log(
      `${r.adapter}: one ${mb(r.tensor_bytes)} tensor (${rows}×${cols} bf16${v.untied ? "" : ", tied"})`,
    );
    console.log(`  RSS before load ${mb(r.rss_before)}, peak during load ${mb(r.rss_peak)}`);
    console.log(`  GPU memory of the weights ${mb(r.gpu_bytes)} (in this process on a CPU adapter)`);
    console.log(`  host overhead of loading: ${mb(r.host_overhead)} (peak − before − GPU bytes)`);
    console.log(
      `  sampled peak of ArrayBuffer memory ${mb(r.external_peak_sampled)}; load ${r.load_s.toFixed(1)} s`,
    );
  }
}
