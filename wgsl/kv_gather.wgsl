// kv_gather: moves slots between regions of the KV arena, several moves per dispatch (workgroup z = move) —
// compactions after a pruning round (dst slot j ← src slot keep[keep_off + j]) or plain moves when a region
// grows or a cache is cloned (identity: dst slot j ← src slot j). K and V rows (row u32 words each, whatever
// the storage format: moves copy bits), position and score. Source and destination in different shards: `main`; in the same shard: `main_same`, which binds the
// shard once and moves within it (regions never overlap) — WebGPU forbids one buffer in two writable bindings.
struct Params {
  row: u32, // u32 words per K (or V) row
  identity: u32,
  _pad0: u32,
  _pad1: u32,
  moves: array<vec4u, 64>, // per move: (src_base, dst_base, count, keep_off)
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> keep: array<u32>;
@group(0) @binding(2) var<storage, read_write> k_src: array<u32>;
@group(0) @binding(3) var<storage, read_write> v_src: array<u32>;
@group(0) @binding(4) var<storage, read_write> pos_src: array<u32>;
@group(0) @binding(5) var<storage, read_write> score_src: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_dst: array<u32>;
@group(0) @binding(7) var<storage, read_write> v_dst: array<u32>;
@group(0) @binding(8) var<storage, read_write> pos_dst: array<u32>;
@group(0) @binding(9) var<storage, read_write> score_dst: array<f32>;

/// Slot of move `m`'s source for destination slot j.
fn source_slot(m: vec4u, j: u32) -> u32 {
  var s = j;
  if (p.identity == 0u) { s = keep[m.w + j]; }
  return s + m.x;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let m = p.moves[gid.z];
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= m.z * p.row) { return; }
  let j = i / p.row;
  let c = i % p.row;
  let s = source_slot(m, j);
  let d = m.y + j;
  k_dst[d * p.row + c] = k_src[s * p.row + c];
  v_dst[d * p.row + c] = v_src[s * p.row + c];
  if (c == 0u) {
    pos_dst[d] = pos_src[s];
    score_dst[d] = score_src[s];
  }
}

@compute @workgroup_size(256)
fn main_same(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let m = p.moves[gid.z];
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= m.z * p.row) { return; }
  let j = i / p.row;
  let c = i % p.row;
  let s = source_slot(m, j);
  let d = m.y + j;
  k_src[d * p.row + c] = k_src[s * p.row + c];
  v_src[d * p.row + c] = v_src[s * p.row + c];
  if (c == 0u) {
    pos_src[d] = pos_src[s];
    score_src[d] = score_src[s];
  }
}
