/**
 * safetensors, read and written with no dependency.
 *
 * File layout: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
 * `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data section that follows the
 * header), optionally `__metadata__` (string → string), then the data section. Sharded checkpoints add a
 * `model.safetensors.index.json` whose `weight_map` names the shard file of each tensor.
 *
 * Everything in the header is validated before it is trusted, and tensors are read lazily with positioned
 * reads, so opening a checkpoint costs only its headers and loading one tensor costs only that tensor.
 */
import type { DType } from "../dtype.ts";
import { fromBf16, fromF16 } from "../dtype.ts";

/** safetensors dtype names this engine understands. */
export type SafetensorsDType = "BF16" | "F16" | "F32";

const DTYPE_BYTES: Record<SafetensorsDType, number> = { BF16: 2, F16: 2, F32: 4 };
const DTYPE_TO_ENGINE: Record<SafetensorsDType, DType> = { BF16: "bf16", F16: "f16", F32: "f32" };

/** Largest header accepted (the reference implementation's limit): guards against absurd allocations. */
const MAX_HEADER_BYTES = 100_000_000;

/** Index file name of a sharded checkpoint. */
export const INDEX_FILE = "model.safetensors.index.json";
/** File name of a single-file checkpoint. */
export const SINGLE_FILE = "model.safetensors";

/** A malformed or inconsistent safetensors file; the message names the file, the tensor and the fault. */
export class SafetensorsError extends Error {
  /** The file at fault. */
  readonly file: string;
  /** The tensor at fault, when one is. */
  readonly tensor: string | undefined;
  constructor(file: string, problem: string, tensor?: string) {
    super(`${file}${tensor !== undefined ? `: tensor "${tensor}"` : ""}: ${problem}`);
    this.name = "SafetensorsError";
    this.file = file;
    this.tensor = tensor;
  }
}

/** Where one tensor lives and what it holds. */
export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  /** The engine's name for the dtype. */
  engineDType: DType;
  shape: number[];
  /** Path of the file holding it. */
  file: string;
  /** Absolute byte offset of its data in the file. */
  offset: number;
  byteLength: number;
}

/** Bytes per element of a safetensors dtype. */
export function safetensorsDTypeBytes(dtype: SafetensorsDType): number {
  return DTYPE_BYTES[dtype];
}

/** Engine dtype ↔ safetensors dtype. */
export function toSafetensorsDType(dtype: DType): SafetensorsDType {
  return dtype === "bf16" ? "BF16" : dtype === "f16" ? "F16" : "F32";
}

function isDType(x: unknown): x is SafetensorsDType {
  return x === "BF16" || x === "F16" || x === "F32";
}

/** Product of a shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Parsed, validated header of one file. */
export interface SafetensorsHeader {
  /** Byte offset of the data section (8 + header length). */
  dataStart: number;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string> | null;
}

/**
 * Validates a header's JSON text against a file of `fileSize` bytes whose header is `headerBytes` long.
 * Pure (no I/O) so that tests can feed it anything.
 */
export function parseSafetensorsHeader(
  file: string,
  headerText: string,
  headerBytes: number,
  fileSize: number,
): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(headerText);
  } catch (e) {
    throw new SafetensorsError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new SafetensorsError(file, "header JSON is not an object");
  }
  const dataStart = 8 + headerBytes;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> | null = null;
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
        throw new SafetensorsError(file, "__metadata__ is not an object");
      }
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") throw new SafetensorsError(file, `__metadata__["${k}"] is not a string`);
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      throw new SafetensorsError(file, "entry is not an object", name);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (!isDType(dtype)) {
      throw new SafetensorsError(
        file,
        `unsupported dtype ${JSON.stringify(dtype)} (supported: BF16, F16, F32)`,
        name,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(
        file,
        `shape ${JSON.stringify(shape)} is not an array of non-negative integers`,
        name,
      );
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new SafetensorsError(
        file,
        `data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`,
        name,
      );
    }
    const [begin, end] = offsets as number[];
    if (begin > end) throw new SafetensorsError(file, `data_offsets [${begin}, ${end}] run backwards`, name);
    if (end > dataSize) {
      throw new SafetensorsError(
        file,
        `data_offsets [${begin}, ${end}] lie outside the data section of ${dataSize} bytes`,
        name,
      );
    }
    const want = numel(shape as number[]) * DTYPE_BYTES[dtype];
    if (end - begin !== want) {
      throw new SafetensorsError(
        file,
        `holds ${end - begin} bytes but shape [${shape}] of ${dtype} needs ${want}`,
        name,
      );
    }
    ranges.push({ name, begin, end });
    tensors.set(name, {
      name,
      dtype,
      engineDType: DTYPE_TO_ENGINE[dtype],
      shape: (shape as number[]).slice(),
      file,
      offset: dataStart + begin,
      byteLength: want,
    });
  }
  // Overlapping tensors would alias each other's bytes: a corrupt or hostile file.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1];
    const cur = ranges[i];
    if (cur.begin < prev.end) {
      throw new SafetensorsError(
        file,
        `data [${cur.begin}, ${cur.end}) overlaps tensor "${prev.name}" [${prev.begin}, ${prev.end})`,
        cur.name,
      );
    }
  }
  return { dataStart, tensors, metadata };
}

/** Reads exactly `length` bytes at `position`, or throws naming what came up short. */
async function readAt(fh: Deno.FsFile, file: string, position: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await fh.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < length) {
    const n = await fh.read(out.subarray(got));
    if (n === null) throw new SafetensorsError(file, `unexpected end of file at byte ${position + got}`);
    got += n;
  }
  return out;
}

/** One open .safetensors file. */
export class SafetensorsFile {
  readonly path: string;
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string> | null;
  private fh: Deno.FsFile | null;
  private queue: Promise<void> = Promise.resolve();

  private constructor(path: string, fh: Deno.FsFile, header: SafetensorsHeader) {
    this.path = path;
    this.fh = fh;
    this.tensors = header.tensors;
    this.metadata = header.metadata;
  }

  /** Opens and validates `path` (reads only the header). */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: Deno.FsFile;
    try {
      fh = await Deno.open(path, { read: true });
    } catch (e) {
      throw new SafetensorsError(path, `cannot open (${(e as Error).message})`);
    }
    try {
      const size = (await fh.stat()).size;
      if (size < 8) {
        throw new SafetensorsError(path, `file is ${size} bytes, shorter than the 8-byte length prefix`);
      }
      const prefix = await readAt(fh, path, 0, 8);
      const n = new DataView(prefix.buffer).getBigUint64(0, true);
      if (n > BigInt(size - 8)) {
        throw new SafetensorsError(path, `header length ${n} exceeds the ${size - 8} bytes after the prefix`);
      }
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsError(path, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      }
      const headerBytes = Number(n);
      const raw = await readAt(fh, path, 8, headerBytes);
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
      } catch {
        throw new SafetensorsError(path, "header is not valid UTF-8");
      }
      const header = parseSafetensorsHeader(path, text, headerBytes, size);
      return new SafetensorsFile(path, fh, header);
    } catch (e) {
      fh.close();
      throw e;
    }
  }

  /** Raw little-endian bytes of tensor `name`. */
  async read(name: string): Promise<Uint8Array> {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.path, "no such tensor", name);
    // seek + read on one handle is not atomic: queue reads so concurrent callers cannot interleave them.
    const run = this.queue.then(() => {
      if (!this.fh) throw new SafetensorsError(this.path, "file is closed", name);
      return readAt(this.fh, this.path, info.offset, info.byteLength);
    });
    this.queue = run.then(() => {}, () => {});
    return await run;
  }

  close(): void {
    this.fh?.close();
    this.fh = null;
  }
}

/** Converts raw tensor bytes of `dtype` to f32 (copies; the input may be unaligned). */
export function bytesToF32(dtype: SafetensorsDType | DType, bytes: Uint8Array): Float32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  if (dtype === "F32" || dtype === "f32") {
    return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4).slice();
  }
  const bits = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
  return dtype === "BF16" || dtype === "bf16" ? fromBf16(bits) : fromF16(bits);
}

function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * A whole checkpoint: one .safetensors file or a sharded set behind an index. Tensor names are global;
 * a tensor's bytes are read from its own shard on demand.
 */
export class SafetensorsIndex {
  /** Every tensor of the checkpoint by name. */
  readonly tensors: Map<string, TensorInfo>;
  /** The open files (one unless sharded). */
  readonly files: SafetensorsFile[];
  private readonly byFile: Map<string, SafetensorsFile>;

  private constructor(files: SafetensorsFile[], tensors: Map<string, TensorInfo>) {
    this.files = files;
    this.tensors = tensors;
    this.byFile = new Map(files.map((f) => [f.path, f]));
  }

  /**
   * Opens a checkpoint from a directory (preferring `model.safetensors.index.json`, else
   * `model.safetensors`), an index file, or a single .safetensors file.
   */
  static async open(path: string): Promise<SafetensorsIndex> {
    let stat: Deno.FileInfo;
    try {
      stat = await Deno.stat(path);
    } catch {
      throw new SafetensorsError(path, "no such file or directory");
    }
    if (stat.isDirectory) {
      const index = joinPath(path, INDEX_FILE);
      if (await isFile(index)) return await SafetensorsIndex.openIndex(index);
      const single = joinPath(path, SINGLE_FILE);
      if (await isFile(single)) return await SafetensorsIndex.openFiles([single]);
      throw new SafetensorsError(path, `directory holds neither ${INDEX_FILE} nor ${SINGLE_FILE}`);
    }
    if (path.endsWith(".json")) return await SafetensorsIndex.openIndex(path);
    return await SafetensorsIndex.openFiles([path]);
  }

  private static async openFiles(
    paths: string[],
    weightMap?: Map<string, string>,
  ): Promise<SafetensorsIndex> {
    const files: SafetensorsFile[] = [];
    try {
      const tensors = new Map<string, TensorInfo>();
      for (const p of paths) {
        const f = await SafetensorsFile.open(p);
        files.push(f);
        for (const [name, info] of f.tensors) {
          const owner = weightMap?.get(name);
          if (weightMap && owner !== p) continue; // the index is authoritative for which shard serves a name
          if (tensors.has(name)) {
            throw new SafetensorsError(p, `also present in ${tensors.get(name)!.file}`, name);
          }
          tensors.set(name, info);
        }
      }
      if (weightMap) {
        for (const [name, p] of weightMap) {
          if (!tensors.has(name)) {
            throw new SafetensorsError(p, "listed in the index's weight_map but absent from the shard", name);
          }
        }
      }
      return new SafetensorsIndex(files, tensors);
    } catch (e) {
      for (const f of files) f.close();
      throw e;
    }
  }

  private static async openIndex(indexPath: string): Promise<SafetensorsIndex> {
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(indexPath));
    } catch (e) {
      throw new SafetensorsError(indexPath, `unreadable index (${(e as Error).message})`);
    }
    const wm = (json as { weight_map?: unknown } | null)?.weight_map;
    if (wm === null || typeof wm !== "object" || Array.isArray(wm)) {
      throw new SafetensorsError(indexPath, "index has no weight_map object");
    }
    const dir = indexPath.includes("/") ? indexPath.slice(0, indexPath.lastIndexOf("/")) : ".";
    const weightMap = new Map<string, string>();
    const shards: string[] = [];
    for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof shard !== "string" || shard === "" || shard.includes("/") || shard.includes("\\")) {
        throw new SafetensorsError(
          indexPath,
          `weight_map names an invalid shard ${JSON.stringify(shard)}`,
          name,
        );
      }
      const p = joinPath(dir, shard);
      if (!shards.includes(p)) shards.push(p);
      weightMap.set(name, p);
    }
    return await SafetensorsIndex.openFiles(shards, weightMap);
  }

  /** Tensor names in checkpoint order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Where tensor `name` lives, or undefined. */
  info(name: string): TensorInfo | undefined {
    return this.tensors.get(name);
  }

  /** Raw bytes of tensor `name`. */
  async read(name: string): Promise<Uint8Array> {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.files[0]?.path ?? "checkpoint", "no such tensor", name);
    return await this.byFile.get(info.file)!.read(name);
  }

  /** Tensor `name` converted to f32. */
  async readF32(name: string): Promise<Float32Array> {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.files[0]?.path ?? "checkpoint", "no such tensor", name);
    return bytesToF32(info.dtype, await this.read(name));
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/** Opens a checkpoint directory or file (see {@link SafetensorsIndex.open}). */
export function openSafetensors(path: string): Promise<SafetensorsIndex> {
  return SafetensorsIndex.open(path);
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
    const size = numel(t.shape) * DTYPE_BYTES[t.dtype];
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
    const size = numel(t.shape) * DTYPE_BYTES[t.dtype];
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
