// kv_gather: compaction after a pruning round. dst row j ← src row keep[j] for K and V (row floats each),
// and the slot's position and score. Out of place (src and dst are different buffers).
struct Params {
  row: u32,
  count: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> keep: array<u32>;
@group(0) @binding(2) var<storage, read> k_src: array<f32>;
@group(0) @binding(3) var<storage, read> v_src: array<f32>;
@group(0) @binding(4) var<storage, read> pos_src: array<u32>;
@group(0) @binding(5) var<storage, read> score_src: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_dst: array<f32>;
@group(0) @binding(7) var<storage, read_write> v_dst: array<f32>;
@group(0) @binding(8) var<storage, read_write> pos_dst: array<u32>;
@group(0) @binding(9) var<storage, read_write> score_dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.count * p.row) { return; }
  let j = i / p.row;
  let c = i % p.row;
  let s = keep[j];
  k_dst[j * p.row + c] = k_src[s * p.row + c];
  v_dst[j * p.row + c] = v_src[s * p.row + c];
  if (c == 0u) {
    pos_dst[j] = pos_src[s];
    score_dst[j] = score_src[s];
  }
}
