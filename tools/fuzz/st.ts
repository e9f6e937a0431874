/**
 * safetensors as bytes, for mutating: split a file into its header object (key order kept) and data section,
 * and put one back together. Deliberately independent of src/model/safetensors.ts — the fuzzer must be able
 * to write what that reader rejects.
 */

/** A tensor entry as written in a header (any JSON: mutations may break it). */
export type HeaderEntry = Record<string, unknown>;

/** A parsed safetensors file. */
export interface StFile {
  /** The header object, in file order (`__metadata__` included when present). */
  header: Record<string, unknown>;
  /** The data section (everything after the header). */
  data: Uint8Array;
}

/** Splits a well-formed file; null when the prefix, header length or JSON is already broken. */
export function parseSt(bytes: Uint8Array): StFile | null {
  if (bytes.byteLength < 8) return null;
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(bytes.byteLength - 8)) return null;
  const len = Number(n);
  try {
    const header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + len)));
    if (header === null || typeof header !== "object" || Array.isArray(header)) return null;
    return { header, data: bytes.slice(8 + len) };
  } catch {
    return null;
  }
}

/** The 8-byte little-endian length prefix of `n`. */
export function lengthPrefix(n: bigint | number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  return out;
}

/** Joins byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Header JSON text (padded with spaces to 8-byte alignment, as the reference writer does) + prefix + data. */
export function buildSt(header: Record<string, unknown>, data: Uint8Array, headerText?: string): Uint8Array {
  let text = headerText ?? JSON.stringify(header);
  const len = new TextEncoder().encode(text).byteLength;
  text += " ".repeat((8 - ((8 + len) % 8)) % 8);
  const json = new TextEncoder().encode(text);
  return concat(lengthPrefix(json.byteLength), json, data);
}

/** Byte length of a header from its prefix (the file must be ≥ 8 bytes). */
export function headerLength(bytes: Uint8Array): number {
  return Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
}

/** Tensor names of a header (without `__metadata__`), in file order. */
export function tensorNames(header: Record<string, unknown>): string[] {
  return Object.keys(header).filter((k) => k !== "__metadata__");
}

/** A tensor's valid `[begin, end]` data offsets, or null when its entry is broken. */
export function offsetsOf(entry: unknown): [number, number] | null {
  const o = (entry as HeaderEntry | null)?.data_offsets;
  if (!Array.isArray(o) || o.length !== 2 || !o.every((x) => Number.isSafeInteger(x) && x >= 0)) return null;
  return [o[0], o[1]];
}

/**
 * Splits a file into `parts` shard files (tensors in order, each shard's offsets rebased) and the index
 * naming them. Returns the shard names, their bytes and the index's weight map.
 */
export function shardSt(
  st: StFile,
  parts: number,
): { shards: [string, Uint8Array][]; weightMap: Record<string, string> } {
  const names = tensorNames(st.header);
  const per = Math.ceil(names.length / parts);
  const shards: [string, Uint8Array][] = [];
  const weightMap: Record<string, string> = {};
  const pad = (i: number) => String(i).padStart(5, "0");
  for (let p = 0; p < parts; p++) {
    const file = `model-${pad(p + 1)}-of-${pad(parts)}.safetensors`;
    const header: Record<string, unknown> = {};
    if (st.header.__metadata__ !== undefined) header.__metadata__ = st.header.__metadata__;
    const chunks: Uint8Array[] = [];
    let at = 0;
    for (const name of names.slice(p * per, (p + 1) * per)) {
      const entry = st.header[name] as HeaderEntry;
      const [b, e] = offsetsOf(entry)!;
      header[name] = { ...entry, data_offsets: [at, at + e - b] };
      chunks.push(st.data.subarray(b, e));
      at += e - b;
      weightMap[name] = file;
    }
    shards.push([file, buildSt(header, concat(...chunks))]);
  }
  return { shards, weightMap };
}
