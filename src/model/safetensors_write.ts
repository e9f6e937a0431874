/**
 * safetensors writers (Deno only: they write files). The format and its reader are in safetensors.ts; tools
 * (conversion, synthetic checkpoints), tests and benchmarks write checkpoints with these.
 */
import {
  INDEX_FILE,
  numel,
  type SafetensorsDType,
  safetensorsDTypeBytes,
  SINGLE_FILE,
} from "./safetensors.ts";

function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/** A tensor to write. `data` may be produced on demand so that a writer never holds the whole model. */
export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

function headerFor(
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): { bytes: Uint8Array; sizes: number[] } {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    if (t.name === "__metadata__" || t.name in header) {
      throw new Error(`duplicate or reserved tensor name ${t.name}`);
    }
    const size = numel(t.shape) * safetensorsDTypeBytes(t.dtype);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
    sizes.push(size);
  }
  let text = JSON.stringify(header);
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  const len = new TextEncoder().encode(text).length;
  text += " ".repeat((8 - ((8 + len) % 8)) % 8);
  const json = new TextEncoder().encode(text);
  const bytes = new Uint8Array(8 + json.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
  bytes.set(json, 8);
  return { bytes, sizes };
}

/** Bytes a file holding `tensors` will take (header included). */
export function safetensorsFileSize(
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): number {
  const { bytes, sizes } = headerFor(tensors, metadata);
  return bytes.length + sizes.reduce((a, b) => a + b, 0);
}

async function writeAll(fh: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await fh.write(bytes.subarray(done));
}

/**
 * Writes one .safetensors file, tensor by tensor (each `data` is produced, written and dropped in turn).
 * `onTensor` is called after each tensor is written (progress reporting).
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
  onTensor?: (name: string, bytesWritten: number) => void,
): Promise<void> {
  const { bytes: header, sizes } = headerFor(tensors, metadata);
  const fh = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await writeAll(fh, header);
    let written = header.length;
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i];
      const data = typeof t.data === "function" ? await t.data() : t.data;
      if (data.byteLength !== sizes[i]) {
        throw new Error(
          `tensor ${t.name}: ${data.byteLength} bytes given, shape [${t.shape}] of ${t.dtype} needs ${
            sizes[i]
          }`,
        );
      }
      await writeAll(fh, data);
      written += data.byteLength;
      onTensor?.(t.name, written);
    }
  } finally {
    fh.close();
  }
}

/** Options of {@link writeShardedSafetensors}. */
export interface ShardOptions {
  /** Largest shard in bytes (a single larger tensor still gets a shard of its own). Default 2 GiB. */
  maxShardBytes?: number;
  /** Goes into every shard's `__metadata__`. */
  metadata?: Record<string, string>;
  /** Progress callback: file, tensor, bytes written so far over all files. */
  onTensor?: (file: string, name: string, totalWritten: number) => void;
}

/**
 * Writes a checkpoint into `dir`: `model.safetensors` when it fits one shard, else
 * `model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json`. Returns the files written.
 */
export async function writeShardedSafetensors(
  dir: string,
  tensors: readonly TensorToWrite[],
  options: ShardOptions = {},
): Promise<string[]> {
  const max = options.maxShardBytes ?? 2 * 1024 ** 3;
  const groups: TensorToWrite[][] = [];
  let cur: TensorToWrite[] = [];
  let curBytes = 0;
  let total = 0;
  for (const t of tensors) {
    const size = numel(t.shape) * safetensorsDTypeBytes(t.dtype);
    total += size;
    if (cur.length && curBytes + size > max) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(t);
    curBytes += size;
  }
  if (cur.length || !groups.length) groups.push(cur);
  await Deno.mkdir(dir, { recursive: true });
  let before = 0;
  const progress = (file: string) => (name: string, written: number) =>
    options.onTensor?.(file, name, before + written);
  if (groups.length === 1) {
    const p = joinPath(dir, SINGLE_FILE);
    await writeSafetensors(p, groups[0], options.metadata, progress(p));
    return [p];
  }
  const n = groups.length;
  const pad = (i: number) => String(i).padStart(5, "0");
  const weightMap: Record<string, string> = {};
  const written: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
    const p = joinPath(dir, name);
    await writeSafetensors(p, groups[i], options.metadata, progress(p));
    before += (await Deno.stat(p)).size;
    for (const t of groups[i]) weightMap[t.name] = name;
    written.push(p);
  }
  const index = { metadata: { total_size: total }, weight_map: weightMap };
  const ip = joinPath(dir, INDEX_FILE);
  await Deno.writeTextFile(ip, JSON.stringify(index, null, 2) + "\n");
  written.push(ip);
  return written;
}
