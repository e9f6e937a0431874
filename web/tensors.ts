/// <reference lib="dom" />
/**
 * The largest tensor of a model's safetensors checkpoint, read from the file headers alone (a few KiB per
 * shard) before the weights load, so that the page can compare it with the adapter's limits first.
 */
import type { ModelSource } from "../mod.ts";
import type { TensorExtent } from "./gpu_check.ts";

/** The checkpoint's shard files: those of `model.safetensors.index.json`, else `model.safetensors`. */
async function shards(source: ModelSource): Promise<string[]> {
  const index = await source.readFile("model.safetensors.index.json");
  if (index === null) return ["model.safetensors"];
  const json = JSON.parse(new TextDecoder().decode(index)) as { weight_map?: Record<string, string> };
  return [...new Set(Object.values(json.weight_map ?? {}))];
}

/** Largest tensor and widest row over every shard (null when the checkpoint has none); bad headers throw. */
export async function largestTensor(source: ModelSource): Promise<TensorExtent | null> {
  let best: TensorExtent | null = null;
  for (const file of await shards(source)) {
    const head = await source.readRange(file, 0, 8);
    const n = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
    if (!Number.isSafeInteger(n) || n <= 0 || n > 100 * 1024 * 1024) {
      throw new Error(`${source.name}/${file}: not a safetensors file (header length ${n})`);
    }
    const header = JSON.parse(new TextDecoder().decode(await source.readRange(file, 8, n))) as Record<
      string,
      { dtype?: string; shape?: number[]; data_offsets?: [number, number] }
    >;
    for (const [name, t] of Object.entries(header)) {
      if (name === "__metadata__" || !t.data_offsets || !t.shape) continue;
      const bytes = t.data_offsets[1] - t.data_offsets[0];
      const rows = t.shape.length > 1 ? t.shape[0] : 1;
      const rowBytes = rows > 0 ? bytes / rows : bytes;
      best ??= { largest: { name, bytes }, widestRow: { name, bytes: rowBytes } };
      if (bytes > best.largest.bytes) best.largest = { name, bytes };
      if (rowBytes > best.widestRow.bytes) best.widestRow = { name, bytes: rowBytes };
    }
  }
  return best;
}
