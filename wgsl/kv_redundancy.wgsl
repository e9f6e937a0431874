// R-KV's key redundancy (see src/ops/kv_redundancy.ts): for each cached token j of a layer and each KV head h,
//   red[h, j] = (1/n) · Σ_{i ≠ j, j ≠ last_dup(h, i)} cos(k_i, k_j)
// where last_dup(h, i) is the most recent slot j ≠ i whose key is a near-duplicate of k_i (cos > threshold):
// the newest copy of a repeated key is not charged for its older twin, so rounds keep the newest copy.
// Three passes over up to 64 entries (a sequence's layer: slots [base, base + len) of one K shard), each
// entry's outputs at out_off + h·len + j: `norms` (1/‖k‖), `dups` (last_dup), `columns` (red).
// Workgroup grid: x·64 invocations cover heads·len of the longest entry; z = entry.
struct Entry { base: u32, len: u32, out_off: u32, pad: u32 }
struct Params {
  heads: u32,
  head_dim: u32,
  words: u32,   // u32 words per stored K row (src/ops/kv_layout.ts)
  dtype: u32,   // 0 f32, 1 f16 pairs (pack2x16float), 2 int8 (pack4x8snorm + one f32 scale per head)
  threshold: f32,
  p1: u32,
  p2: u32,
  p3: u32,
  entries: array<Entry, 64>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<u32>;
@group(0) @binding(2) var<storage, read_write> inv_norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> dup: array<u32>;
@group(0) @binding(4) var<storage, read_write> red: array<f32>;

const NONE: u32 = 0xffffffffu;

// The one place keys are read: value i (0 ≤ i < heads·head_dim) of the K row in arena slot `slot`, decoded
// from the stored format as the attention kernels decode it (src/ref/kv_codec.ts).
fn load_key(slot: u32, i: u32) -> f32 {
  let at = slot * p.words;
  if (p.dtype == 0u) { return bitcast<f32>(k[at + i]); }
  if (p.dtype == 1u) { return unpack2x16float(k[at + i / 2u])[i % 2u]; }
  let scale = bitcast<f32>(k[at + p.heads * p.head_dim / 4u + i / p.head_dim]);
  return unpack4x8snorm(k[at + i / 4u])[i % 4u] * scale;
}

// Dot product of head h's keys in slots a and b.
fn dot_keys(a: u32, b: u32, h: u32) -> f32 {
  let off = h * p.head_dim;
  var s = 0.0;
  for (var c = 0u; c < p.head_dim; c++) {
    s += load_key(a, off + c) * load_key(b, off + c);
  }
  return s;
}

// (entry, head, token) of this invocation, or `ok` false past the entry's end.
struct Item { e: Entry, h: u32, t: u32, at: u32, ok: bool }
fn item(gid: vec3u) -> Item {
  let e = p.entries[gid.z];
  let idx = gid.x;
  var it: Item;
  it.e = e;
  it.ok = idx < p.heads * e.len;
  it.h = idx / max(e.len, 1u);
  it.t = idx % max(e.len, 1u);
  it.at = e.out_off + idx;
  return it;
}

fn cosine(e: Entry, h: u32, a: u32, b: u32) -> f32 {
  let o = e.out_off + h * e.len;
  return dot_keys(e.base + a, e.base + b, h) * inv_norm[o + a] * inv_norm[o + b];
}

@compute @workgroup_size(64)
fn norms(@builtin(global_invocation_id) gid: vec3u) {
  let it = item(gid);
  if (!it.ok) { return; }
  let slot = it.e.base + it.t;
  let n2 = dot_keys(slot, slot, it.h);
  // A zero key is similar to nothing (cosine 0), not NaN.
  inv_norm[it.at] = select(0.0, inverseSqrt(n2), n2 > 0.0);
}

@compute @workgroup_size(64)
fn dups(@builtin(global_invocation_id) gid: vec3u) {
  let it = item(gid);
  if (!it.ok) { return; }
  var found = NONE;
  // Slots are in position order (rounds compact in ascending slot order), so the newest twin is the highest.
  for (var j = it.e.len; j > 0u; j--) {
    let b = j - 1u;
    if (b != it.t && cosine(it.e, it.h, it.t, b) > p.threshold) {
      found = b;
      break;
    }
  }
  dup[it.at] = found;
}

@compute @workgroup_size(64)
fn columns(@builtin(global_invocation_id) gid: vec3u) {
  let it = item(gid);
  if (!it.ok) { return; }
  let o = it.e.out_off + it.h * it.e.len;
  var s = 0.0;
  for (var i = 0u; i < it.e.len; i++) {
    if (i != it.t && dup[o + i] != it.t) {
      s += cosine(it.e, it.h, i, it.t);
    }
  }
  red[it.at] = s / f32(it.e.len);
}
