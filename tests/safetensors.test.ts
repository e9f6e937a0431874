/** safetensors reader and writer: round trips, sharding, and every kind of corruption named clearly. */
import assert from "node:assert/strict";
import {
  bytesToF32,
  INDEX_FILE,
  SafetensorsError,
  SafetensorsFile,
  SafetensorsIndex,
} from "../src/model/safetensors.ts";
import { writeSafetensors, writeShardedSafetensors } from "../src/model/safetensors_write.ts";
import type { TensorToWrite } from "../src/model/safetensors_write.ts";
import { encode } from "../src/dtype.ts";
import { freshSeed, randomF32, rng } from "./helpers.ts";

function randomTensors(seed: number): { tensors: TensorToWrite[]; values: Map<string, Float32Array> } {
  const next = rng(seed);
  const values = new Map<string, Float32Array>();
  const tensors: TensorToWrite[] = [];
  const specs: [string, "BF16" | "F16" | "F32", number[]][] = [
    ["a.weight", "BF16", [7, 5]],
    ["b.weight", "F16", [3, 11]],
    ["c.bias", "F32", [13]],
    ["scalar", "F32", []],
    ["empty", "BF16", [0, 4]],
  ];
  for (const [name, dtype, shape] of specs) {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = randomF32(n, next, 3);
    const engine = dtype === "BF16" ? "bf16" : dtype === "F16" ? "f16" : "f32";
    const bytes = encode(engine, v);
    values.set(name, bytesToF32(dtype, bytes)); // exactly representable after the round
    // Alternate eager and on-demand data to exercise both paths.
    tensors.push({ name, dtype, shape, data: tensors.length % 2 ? () => bytes : bytes });
  }
  return { tensors, values };
}

Deno.test("safetensors: single-file round trip (BF16, F16, F32, scalar, empty) with metadata", async () => {
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const dir = await Deno.makeTempDir();
  const { tensors, values } = randomTensors(seed);
  const path = `${dir}/x.safetensors`;
  await writeSafetensors(path, tensors, { format: "pt" });
  const f = await SafetensorsFile.open(path);
  try {
    assert.deepEqual(f.metadata, { format: "pt" });
    assert.deepEqual([...f.tensors.keys()], tensors.map((t) => t.name));
    for (const t of tensors) {
      const info = f.tensors.get(t.name)!;
      assert.equal(info.dtype, t.dtype);
      assert.deepEqual(info.shape, t.shape);
      assert.deepEqual(bytesToF32(t.dtype, await f.read(t.name)), values.get(t.name));
    }
    await assert.rejects(() => f.read("nope"), SafetensorsError);
    // Concurrent reads on one handle must not interleave their seeks.
    const all = await Promise.all(tensors.map((t) => f.read(t.name)));
    for (let i = 0; i < tensors.length; i++) {
      assert.deepEqual(bytesToF32(tensors[i].dtype, all[i]), values.get(tensors[i].name));
    }
  } finally {
    f.close();
  }
  // The data section starts 8-byte aligned.
  const raw = await Deno.readFile(path);
  assert.equal(Number(new DataView(raw.buffer).getBigUint64(0, true)) % 8, 0);
  const idx = await SafetensorsIndex.open(dir + "/x.safetensors");
  assert.deepEqual(await idx.readF32("c.bias"), values.get("c.bias"));
  idx.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors: sharded round trip through model.safetensors.index.json", async () => {
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const dir = await Deno.makeTempDir();
  const { tensors, values } = randomTensors(seed);
  const files = await writeShardedSafetensors(dir, tensors, { maxShardBytes: 80 });
  assert(files.length > 2, `expected several shards, got ${files}`);
  assert(files[files.length - 1].endsWith(INDEX_FILE));
  const index = JSON.parse(await Deno.readTextFile(`${dir}/${INDEX_FILE}`));
  assert.equal(Object.keys(index.weight_map).length, tensors.length);
  const idx = await SafetensorsIndex.open(dir);
  try {
    assert.equal(idx.files.length, files.length - 1);
    assert.deepEqual(idx.names().sort(), tensors.map((t) => t.name).sort());
    for (const t of tensors) assert.deepEqual(await idx.readF32(t.name), values.get(t.name));
  } finally {
    idx.close();
  }
  // A checkpoint that fits one shard is written as model.safetensors without an index.
  const dir2 = await Deno.makeTempDir();
  const one = await writeShardedSafetensors(dir2, tensors);
  assert.deepEqual(one, [`${dir2}/model.safetensors`]);
  const idx2 = await SafetensorsIndex.open(dir2);
  assert.deepEqual(await idx2.readF32("a.weight"), values.get("a.weight"));
  idx2.close();
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(dir2, { recursive: true });
});

/** Builds a file from a header value (object or raw text) and a data section. */
function rawFile(header: unknown, data = new Uint8Array(0), lengthOverride?: bigint): Uint8Array {
  const json = typeof header === "string"
    ? new TextEncoder().encode(header)
    : header instanceof Uint8Array
    ? header
    : new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
const cases: [string, Uint8Array, RegExp, string?][] = [
  ["empty file", new Uint8Array(0), /shorter than the 8-byte length prefix/],
  ["7-byte file", new Uint8Array(7), /shorter than the 8-byte length prefix/],
  ["header length past the end", rawFile({ t: ok }, new Uint8Array(8), 1000n), /header length 1000 exceeds/],
  ["header length 2^64-1", rawFile("{}", new Uint8Array(0), 0xffffffffffffffffn), /header length .* exceeds/],
  ["header not JSON", rawFile("{not json", new Uint8Array(8)), /not valid JSON/],
  ["header not UTF-8", rawFile(new Uint8Array([0xff, 0xfe, 0x7b])), /not valid UTF-8/],
  ["header an array", rawFile([1, 2]), /not an object/],
  ["header null", rawFile("null"), /not an object/],
  ["entry not an object", rawFile({ t: 5 }), /entry is not an object/, "t"],
  ["unknown dtype", rawFile({ t: { ...ok, dtype: "I8" } }, new Uint8Array(8)), /unsupported dtype "I8"/, "t"],
  ["missing dtype", rawFile({ t: { shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)), /dtype/, "t"],
  ["negative dim", rawFile({ t: { ...ok, shape: [-2] } }, new Uint8Array(8)), /non-negative integers/, "t"],
  [
    "fractional dim",
    rawFile({ t: { ...ok, shape: [1.5] } }, new Uint8Array(8)),
    /non-negative integers/,
    "t",
  ],
  ["shape not array", rawFile({ t: { ...ok, shape: "2" } }, new Uint8Array(8)), /non-negative integers/, "t"],
  ["offsets not a pair", rawFile({ t: { ...ok, data_offsets: [0] } }, new Uint8Array(8)), /pair/, "t"],
  ["offsets backwards", rawFile({ t: { ...ok, data_offsets: [8, 0] } }, new Uint8Array(8)), /backwards/, "t"],
  [
    "offsets past the data",
    rawFile({ t: ok }, new Uint8Array(4)),
    /outside the data section of 4 bytes/,
    "t",
  ],
  [
    "size mismatch",
    rawFile({ t: { ...ok, shape: [3] } }, new Uint8Array(8)),
    /holds 8 bytes but shape \[3\] of F32 needs 12/,
    "t",
  ],
  [
    "overlap",
    rawFile({ a: ok, b: { ...ok, data_offsets: [4, 12] } }, new Uint8Array(12)),
    /overlaps tensor "a"/,
    "b",
  ],
  ["metadata not object", rawFile({ __metadata__: [1] }), /__metadata__ is not an object/],
  ["metadata value not string", rawFile({ __metadata__: { a: 1 } }), /__metadata__\["a"\] is not a string/],
];

Deno.test("safetensors: every corruption is a SafetensorsError naming file, tensor and fault", async () => {
  const dir = await Deno.makeTempDir();
  for (const [what, bytes, pattern, tensor] of cases) {
    const path = `${dir}/bad.safetensors`;
    await Deno.writeFile(path, bytes);
    await assert.rejects(
      () => SafetensorsFile.open(path),
      (e: unknown) => {
        assert(e instanceof SafetensorsError, `${what}: not a SafetensorsError: ${e}`);
        assert.match(e.message, pattern, what);
        assert(e.message.startsWith(path), `${what}: message does not name the file: ${e.message}`);
        assert.equal(e.file, path);
        assert.equal(e.tensor, tensor, `${what}: tensor`);
        if (tensor) assert(e.message.includes(`"${tensor}"`), `${what}: message does not name the tensor`);
        return true;
      },
      what,
    );
  }
  // Metadata and adjacent, gap-free tensors are fine.
  await Deno.writeFile(
    `${dir}/good.safetensors`,
    rawFile(
      { __metadata__: { format: "pt" }, a: ok, b: { ...ok, data_offsets: [8, 16] } },
      new Uint8Array(16),
    ),
  );
  (await SafetensorsFile.open(`${dir}/good.safetensors`)).close();
  await assert.rejects(() => SafetensorsFile.open(`${dir}/missing.safetensors`), SafetensorsError);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors: broken sharded indexes are named errors", async () => {
  const dir = await Deno.makeTempDir();
  await writeSafetensors(`${dir}/s1.safetensors`, [{
    name: "a",
    dtype: "F32",
    shape: [2],
    data: new Uint8Array(8),
  }]);
  const write = (o: unknown) => Deno.writeTextFile(`${dir}/${INDEX_FILE}`, JSON.stringify(o));
  await write({ weight_map: { a: "s1.safetensors", b: "s1.safetensors" } });
  await assert.rejects(
    () => SafetensorsIndex.open(dir),
    /tensor "b": listed in the index's weight_map but absent/,
  );
  await write({ weight_map: { a: "s2.safetensors" } });
  await assert.rejects(() => SafetensorsIndex.open(dir), /s2.safetensors: cannot open/);
  await write({ weight_map: { a: "../s1.safetensors" } });
  await assert.rejects(() => SafetensorsIndex.open(dir), /invalid shard/);
  await write({ nothing: 1 });
  await assert.rejects(() => SafetensorsIndex.open(dir), /no weight_map/);
  await Deno.writeTextFile(`${dir}/${INDEX_FILE}`, "{");
  await assert.rejects(() => SafetensorsIndex.open(dir), /unreadable index/);
  await Deno.remove(`${dir}/${INDEX_FILE}`);
  await assert.rejects(() => SafetensorsIndex.open(dir), /neither/);
  await write({ weight_map: { a: "s1.safetensors" } });
  const idx = await SafetensorsIndex.open(dir);
  assert.deepEqual(await idx.readF32("a"), new Float32Array(2));
  idx.close();
  await Deno.remove(dir, { recursive: true });
});
