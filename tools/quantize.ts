/**
 * Writes a quantized copy of a float checkpoint: `deno task quantize SRC DST [--weights q4|q8]`.
 *
 * Every matrix (embedding, projections, LM head) is quantized exactly as `--weights` does at load time (the
 * same function, src/model/quantize.ts: groups of 32, f16 scales) and stored as `W` (U8 values) plus
 * `W.scales` (F16); norms and biases are copied as they are; config.json gains a `quantization` entry
 * (src/model/config.ts, QuantizationConfig) so the copy loads as stored, without reconversion. The other files
 * of SRC (tokenizer, generation and KV defaults) are copied. Memory: one matrix's f32 rows at a time.
 */
import "../src/io/deno_fs.ts"; // local model paths
import { parseArgs } from "node:util";
import { floatTensors, loadConfig, quantizationEntry, validateCheckpoint } from "../src/model/config.ts";
import { type QuantFormat, quantizeRows } from "../src/model/quantize.ts";
import { bytesToF32, INDEX_FILE, SafetensorsIndex } from "../src/model/safetensors.ts";
import { type TensorToWrite, writeShardedSafetensors } from "../src/model/safetensors_write.ts";
import { scaleStride, weightRowBytes } from "../src/gpu/weights.ts";

const USAGE = `usage: deno task quantize SRC DST [--weights q4|q8]

Writes DST, a copy of the Hugging Face model directory SRC (bf16 / f16 / f32 safetensors) whose matrices are
quantized group-wise (32 values per f16 scale, symmetric): q4 (default) about 0.28× bf16's bytes, q8 0.53×.
The copy loads as stored (config.json's "quantization" entry says how); loading SRC with --weights q4 gives
the same weights bit for bit.`;

/** Quantizes the checkpoint in `src` into `dst` (a new or empty directory). Returns the files written. */
export async function quantizeCheckpoint(src: string, dst: string, format: QuantFormat): Promise<string[]> {
  const config = await loadConfig(src);
  if (config.quantization) {
    throw new Error(`${src}/config.json: already quantized (${config.quantization.weights})`);
  }
  try {
    for await (const _ of Deno.readDir(dst)) throw new Error(`${dst}: exists and is not empty`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const index = await SafetensorsIndex.open(src);
  try {
    validateCheckpoint(config, index, { checkpoint: index.path, config: `${src}/config.json` });
    const tensors: TensorToWrite[] = [];
    for (const spec of floatTensors(config)) {
      const info = index.info(spec.name)!;
      if (spec.shape.length !== 2) {
        tensors.push({
          name: spec.name,
          dtype: info.dtype,
          shape: spec.shape,
          data: () => index.read(spec.name),
        });
        continue;
      }
      const [rows, cols] = spec.shape;
      // The values and the scales come out of one pass; the scales wait for their own tensor entry.
      let scales: Uint16Array | null = null;
      tensors.push({
        name: spec.name,
        dtype: "U8",
        shape: [rows, weightRowBytes(format, cols)],
        data: async () => {
          const q = quantizeRows(
            format,
            bytesToF32(info.dtype, await index.read(spec.name)),
            rows,
            cols,
            spec.name,
          );
          scales = q.scales;
          return q.data;
        },
      });
      tensors.push({
        name: `${spec.name}.scales`,
        dtype: "F16",
        shape: [rows, scaleStride(cols)],
        data: () => {
          const s = scales!;
          scales = null;
          return new Uint8Array(s.buffer, s.byteOffset, s.byteLength);
        },
      });
    }
    const written = await writeShardedSafetensors(dst, tensors, { metadata: { format: "pt" } });
    const json = JSON.parse(await Deno.readTextFile(`${src}/config.json`));
    json.quantization = quantizationEntry(format);
    await Deno.writeTextFile(`${dst}/config.json`, JSON.stringify(json, null, 2) + "\n");
    written.push(`${dst}/config.json`);
    for await (const e of Deno.readDir(src)) {
      if (!e.isFile || e.name.endsWith(".safetensors") || e.name === INDEX_FILE || e.name === "config.json") {
        continue;
      }
      await Deno.copyFile(`${src}/${e.name}`, `${dst}/${e.name}`);
      written.push(`${dst}/${e.name}`);
    }
    return written;
  } finally {
    index.close();
  }
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { weights: { type: "string", default: "q4" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (positionals.length !== 2 || (values.weights !== "q4" && values.weights !== "q8")) {
    console.error(
      positionals.length !== 2
        ? USAGE
        : `error: --weights must be q4 or q8, got ${JSON.stringify(values.weights)}`,
    );
    Deno.exit(2);
  }
  try {
    const files = await quantizeCheckpoint(positionals[0], positionals[1], values.weights);
    let bytes = 0;
    for (const f of files) bytes += (await Deno.stat(f)).size;
    console.error(`wrote ${files.length} files (${(bytes / 1e6).toFixed(1)} MB) to ${positionals[1]}`);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
