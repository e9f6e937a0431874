/**
 * safetensors, read with no dependency and from any {@link ModelSource} (a local directory, a URL, browser
 * files, memory); the writers are Deno-only and live in safetensors_write.ts.
 *
 * File layout: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
 * `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data section that follows the
 * header), optionally `__metadata__` (string → string), then the data section. Sharded checkpoints add a
 * `model.safetensors.index.json` whose `weight_map` names the shard file of each tensor.
 *
 * Everything in the header is validated before it is trusted, and tensors are read lazily with byte-range
 * reads, so opening a checkpoint costs only its headers and loading one tensor costs only that tensor.
 */
import type { DType } from "../dtype.ts";
import { fromBf16, fromF16 } from "../dtype.ts";
import { type ModelSource, resolveFileSpec, resolveModelSource, sourcePath } from "../io/source.ts";

/** safetensors dtype names this engine understands (U8: the packed values of quantized weights). */
export type SafetensorsDType = "BF16" | "F16" | "F32" | "U8";

/** The engine's element types of a stored tensor: a float {@link DType}, or raw bytes ("u8"). */
export type TensorDType = DType | "u8";

const DTYPE_BYTES: Record<SafetensorsDType, number> = { BF16: 2, F16: 2, F32: 4, U8: 1 };
const DTYPE_TO_ENGINE: Record<SafetensorsDType, TensorDType> = {
  BF16: "bf16",
  F16: "f16",
  F32: "f32",
  U8: "u8",
};

/** Largest header accepted (the reference implementation's limit): guards against absurd allocations. */
const MAX_HEADER_BYTES = 100_000_000;
/** Most dimensions a tensor may have. */
const MAX_RANK = 8;

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
  engineDType: TensorDType;
  shape: number[];
  /** Path (or URL) of the file holding it, as messages name it. */
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
  return x === "BF16" || x === "F16" || x === "F32" || x === "U8";
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
        `unsupported dtype ${JSON.stringify(dtype)} (supported: BF16, F16, F32, U8)`,
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
    if (shape.length > MAX_RANK) {
      throw new SafetensorsError(file, `shape has ${shape.length} dimensions (at most ${MAX_RANK})`, name);
    }
    if (!Number.isSafeInteger(numel(shape as number[]) * DTYPE_BYTES[dtype])) {
      throw new SafetensorsError(file, `shape [${shape}] holds more elements than can be addressed`, name);
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
  // The tensors must tile the data section exactly, as the reference implementation requires: overlapping
  // tensors would alias each other's bytes, and a gap or trailing bytes mean the offsets (or the header
  // length before them) are wrong — a header length one byte short still "loads", shifted by one byte.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  for (let i = 0; i < ranges.length; i++) {
    const cur = ranges[i];
    if (i > 0 && cur.begin < ranges[i - 1].end) {
      const prev = ranges[i - 1];
      throw new SafetensorsError(
        file,
        `data [${cur.begin}, ${cur.end}) overlaps tensor "${prev.name}" [${prev.begin}, ${prev.end})`,
        cur.name,
      );
    }
    if (cur.begin !== expected) {
      throw new SafetensorsError(
        file,
        `data [${cur.begin}, ${cur.end}) leaves a gap of ${cur.begin - expected} bytes after ${
          i > 0 ? `tensor "${ranges[i - 1].name}"` : "the header"
        } (tensors must tile the data section)`,
        cur.name,
      );
    }
    expected = cur.end;
  }
  if (expected !== dataSize) {
    throw new SafetensorsError(
      file,
      `the data section holds ${dataSize} bytes but its tensors cover ${expected}: ${
        dataSize - expected
      } trailing bytes (a wrong header length or a truncated header?)`,
    );
  }
  return { dataStart, tensors, metadata };
}

/** What the first read of a file fetches: the length prefix and, usually, the whole header. */
const FIRST_READ_BYTES = 64 * 1024;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** One .safetensors file of a source, its header parsed and validated. */
export class SafetensorsFile {
  /** How messages name the file (its path or URL); {@link TensorInfo.file} of its tensors. */
  readonly path: string;
  /** Its tensors by name. */
  readonly tensors: Map<string, TensorInfo>;
  /** Its `__metadata__`, when present. */
  readonly metadata: Record<string, string> | null;
  readonly #source: ModelSource;
  readonly #file: string;
  #closed = false;

  private constructor(source: ModelSource, file: string, path: string, header: SafetensorsHeader) {
    this.#source = source;
    this.#file = file;
    this.path = path;
    this.tensors = header.tensors;
    this.metadata = header.metadata;
  }

  /**
   * Opens and validates a file (reads only the header): a path or URL of a .safetensors file, or `file` of a
   * source (default `model.safetensors`). `path` is how messages name the file (default: the source's name
   * and the file's).
   */
  static async open(source: string | ModelSource, file?: string, path?: string): Promise<SafetensorsFile> {
    if (typeof source === "string" && file === undefined) {
      const spec = resolveFileSpec(source, () => true);
      path ??= spec.file !== null ? source : undefined;
      source = spec.source;
      file = spec.file ?? SINGLE_FILE;
    } else {
      source = resolveModelSource(source);
      file ??= SINGLE_FILE;
    }
    path ??= sourcePath(source, file);
    let size: number | null;
    try {
      size = await source.size(file);
    } catch (e) {
      throw new SafetensorsError(path, `cannot open (${message(e)})`);
    }
    if (size === null) throw new SafetensorsError(path, "cannot open (no such file)");
    if (size < 8) {
      throw new SafetensorsError(path, `file is ${size} bytes, shorter than the 8-byte length prefix`);
    }
    const read = async (offset: number, length: number): Promise<Uint8Array> => {
      try {
        return await source.readRange(file, offset, length);
      } catch (e) {
        throw new SafetensorsError(path, `cannot read bytes [${offset}, ${offset + length}) (${message(e)})`);
      }
    };
    const first = await read(0, Math.min(size, FIRST_READ_BYTES));
    const n = new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true);
    if (n > BigInt(size - 8)) {
      throw new SafetensorsError(path, `header length ${n} exceeds the ${size - 8} bytes after the prefix`);
    }
    if (n > BigInt(MAX_HEADER_BYTES)) {
      throw new SafetensorsError(path, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    if (n < 2n) throw new SafetensorsError(path, `header length ${n} is shorter than "{}"`);
    const headerBytes = Number(n);
    const raw = 8 + headerBytes <= first.byteLength
      ? first.subarray(8, 8 + headerBytes)
      : await read(8, headerBytes);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch {
      throw new SafetensorsError(path, "header is not valid UTF-8");
    }
    const header = parseSafetensorsHeader(path, text, headerBytes, size);
    return new SafetensorsFile(source, file, path, header);
  }

  /** Raw little-endian bytes of tensor `name` (one range read). */
  async read(name: string): Promise<Uint8Array> {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.path, "no such tensor", name);
    if (this.#closed) throw new SafetensorsError(this.path, "file is closed", name);
    try {
      return await this.#source.readRange(this.#file, info.offset, info.byteLength);
    } catch (e) {
      throw new SafetensorsError(this.path, `cannot read its bytes (${message(e)})`, name);
    }
  }

  /**
   * Bytes [begin, begin + length) of tensor `name`'s data (one range read): large tensors are streamed in
   * chunks so that host memory holds one chunk, not the tensor.
   */
  async readPart(name: string, begin: number, length: number): Promise<Uint8Array> {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.path, "no such tensor", name);
    if (this.#closed) throw new SafetensorsError(this.path, "file is closed", name);
    if (
      !Number.isSafeInteger(begin) || !Number.isSafeInteger(length) || begin < 0 || length < 0 ||
      begin + length > info.byteLength
    ) {
      throw new SafetensorsError(
        this.path,
        `bytes [${begin}, ${begin + length}) lie outside its ${info.byteLength} bytes`,
        name,
      );
    }
    let bytes: Uint8Array;
    try {
      bytes = await this.#source.readRange(this.#file, info.offset + begin, length);
    } catch (e) {
      throw new SafetensorsError(
        this.path,
        `cannot read its bytes [${begin}, ${begin + length}) (${message(e)})`,
        name,
      );
    }
    if (bytes.byteLength !== length) {
      throw new SafetensorsError(this.path, `read ${bytes.byteLength} bytes, expected ${length}`, name);
    }
    return bytes;
  }

  /** Ends reading: later reads throw. */
  close(): void {
    this.#closed = true;
  }
}

/** Converts raw tensor bytes of `dtype` to f32 (copies; the input may be unaligned). */
export function bytesToF32(dtype: SafetensorsDType | DType, bytes: Uint8Array): Float32Array {
  if (dtype === "U8") throw new Error("bytesToF32: U8 tensors hold quantized values, not floats");
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  if (dtype === "F32" || dtype === "f32") {
    return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4).slice();
  }
  const bits = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
  return dtype === "BF16" || dtype === "bf16" ? fromBf16(bits) : fromF16(bits);
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
  /** How messages name the checkpoint: the index file's path when sharded, else the single file's. */
  readonly path: string;
  private readonly byFile: Map<string, SafetensorsFile>;

  private constructor(files: SafetensorsFile[], tensors: Map<string, TensorInfo>, path: string) {
    this.files = files;
    this.tensors = tensors;
    this.path = path;
    this.byFile = new Map(files.map((f) => [f.path, f]));
  }

  /**
   * Opens a checkpoint: a model source or directory (preferring `model.safetensors.index.json`, else
   * `model.safetensors`), a path or URL of an index (`.json`) or of a single `.safetensors` file, or `file`
   * of a source.
   */
  static async open(source: string | ModelSource, file?: string): Promise<SafetensorsIndex> {
    let label: string | null = null;
    if (typeof source === "string" && file === undefined) {
      const spec = resolveFileSpec(source, (n) => n.endsWith(".json") || n.endsWith(".safetensors"));
      if (spec.file !== null) label = source;
      source = spec.source;
      file = spec.file ?? undefined;
    } else {
      source = resolveModelSource(source);
    }
    if (file !== undefined) {
      label ??= sourcePath(source, file);
      return file.endsWith(".json")
        ? await SafetensorsIndex.openIndex(source, file, label)
        : await SafetensorsIndex.openFiles(source, [{ file, path: label }]);
    }
    if (await SafetensorsIndex.#exists(source, INDEX_FILE)) {
      return await SafetensorsIndex.openIndex(source, INDEX_FILE, sourcePath(source, INDEX_FILE));
    }
    if (await SafetensorsIndex.#exists(source, SINGLE_FILE)) {
      return await SafetensorsIndex.openFiles(source, [{
        file: SINGLE_FILE,
        path: sourcePath(source, SINGLE_FILE),
      }]);
    }
    throw new SafetensorsError(source.name, `directory holds neither ${INDEX_FILE} nor ${SINGLE_FILE}`);
  }

  static async #exists(source: ModelSource, file: string): Promise<boolean> {
    try {
      return await source.size(file) !== null;
    } catch (e) {
      throw new SafetensorsError(sourcePath(source, file), `cannot open (${message(e)})`);
    }
  }

  private static async openFiles(
    source: ModelSource,
    shards: { file: string; path: string }[],
    weightMap?: Map<string, string>,
    indexPath?: string,
  ): Promise<SafetensorsIndex> {
    const files: SafetensorsFile[] = [];
    try {
      const tensors = new Map<string, TensorInfo>();
      for (const { file, path: p } of shards) {
        const f = await SafetensorsFile.open(source, file, p);
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
      return new SafetensorsIndex(files, tensors, indexPath ?? shards[0]?.path ?? sourcePath(source, ""));
    } catch (e) {
      for (const f of files) f.close();
      throw e;
    }
  }

  private static async openIndex(
    source: ModelSource,
    file: string,
    indexPath: string,
  ): Promise<SafetensorsIndex> {
    let json: unknown;
    try {
      const bytes = await source.readFile(file);
      if (bytes === null) throw new Error("no such file");
      json = JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      throw new SafetensorsError(indexPath, `unreadable index (${message(e)})`);
    }
    const wm = (json as { weight_map?: unknown } | null)?.weight_map;
    if (wm === null || typeof wm !== "object" || Array.isArray(wm)) {
      throw new SafetensorsError(indexPath, "index has no weight_map object");
    }
    // Shards are named beside the index, as the index itself is named.
    const dir = indexPath.endsWith(file)
      ? indexPath.slice(0, indexPath.length - file.length)
      : sourcePath(source, "");
    const weightMap = new Map<string, string>();
    const shards: { file: string; path: string }[] = [];
    for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof shard !== "string" || shard === "" || shard.includes("/") || shard.includes("\\")) {
        throw new SafetensorsError(
          indexPath,
          `weight_map names an invalid shard ${JSON.stringify(shard)}`,
          name,
        );
      }
      const p = dir + shard;
      if (!shards.some((s) => s.file === shard)) shards.push({ file: shard, path: p });
      weightMap.set(name, p);
    }
    return await SafetensorsIndex.openFiles(source, shards, weightMap, indexPath);
  }

  /** Tensor names in checkpoint order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** Whether the checkpoint holds tensor `name`. */
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

  /** Bytes [begin, begin + length) of tensor `name` (see {@link SafetensorsFile.readPart}). */
  async readPart(name: string, begin: number, length: number): Promise<Uint8Array> {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.files[0]?.path ?? "checkpoint", "no such tensor", name);
    return await this.byFile.get(info.file)!.readPart(name, begin, length);
  }

  /** Tensor `name` converted to f32. */
  async readF32(name: string): Promise<Float32Array> {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.files[0]?.path ?? "checkpoint", "no such tensor", name);
    return bytesToF32(info.dtype, await this.read(name));
  }

  /** Ends reading every file. */
  close(): void {
    for (const f of this.files) f.close();
  }
}

/** Opens a checkpoint directory, file or source (see {@link SafetensorsIndex.open}). */
export function openSafetensors(source: string | ModelSource): Promise<SafetensorsIndex> {
  return SafetensorsIndex.open(source);
}
