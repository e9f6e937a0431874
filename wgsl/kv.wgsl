// KV-cache maintenance kernels. One layer of one sequence (kv_write, bound to its region) or of a batch
// (kv_write_batch, bound to a whole arena shard, after kv_evict for the sequences at a cap): K and V are f32 [capacity, row] (row = nKvHeads *
// headDim, token-major), pos u32 [capacity] (original positions), score f32 [capacity] (policy scores).

struct WriteParams {
  row: u32,        // floats per K (and V) row
  count: u32,      // rows to write
  src_row: u32,    // first row to read from k_src/v_src
  slot: u32,       // first destination slot
  pos: u32,        // original position of the first row
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

// --- kv_write: append `count` rows at the end of one sequence's region (prefill) ------------------------------
@group(0) @binding(0) var<uniform> wp: WriteParams;
@group(0) @binding(1) var<storage, read> k_src: array<f32>;
@group(0) @binding(2) var<storage, read> v_src: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_dst: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_dst: array<f32>;
@group(0) @binding(5) var<storage, read_write> pos_dst: array<u32>;
@group(0) @binding(6) var<storage, read_write> score_dst: array<f32>;
@group(0) @binding(7) var<storage, read> victim: array<u32>; // kv_write_batch only

@compute @workgroup_size(256)
fn write(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= wp.count * wp.row) { return; }
  let t = i / wp.row;
  let c = i % wp.row;
  let slot = wp.slot + t;
  k_dst[slot * wp.row + c] = k_src[(wp.src_row + t) * wp.row + c];
  v_dst[slot * wp.row + c] = v_src[(wp.src_row + t) * wp.row + c];
  if (c == 0u) {
    pos_dst[slot] = wp.pos + t;
    score_dst[slot] = 0.0;
  }
}

// --- kv_write_batch: one new row for each of several sequences whose layer lives in the same arena shard ----
// Entry b of the table: (source row, destination slot in the shard, position, use_victim); with use_victim = 1
// the destination is victim[b], the slot kv_evict chose for it in the same batch.
struct BatchParams {
  row: u32,
  count: u32,
  _pad0: u32,
  _pad1: u32,
  seqs: array<vec4u, 64>,
}
@group(0) @binding(0) var<uniform> bp: BatchParams;

@compute @workgroup_size(256)
fn write_batch(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= bp.count * bp.row) { return; }
  let b = i / bp.row;
  let e = bp.seqs[b];
  let c = i % bp.row;
  var slot = e.y;
  if (e.w == 1u) { slot = victim[b]; }
  k_dst[slot * bp.row + c] = k_src[e.x * bp.row + c];
  v_dst[slot * bp.row + c] = v_src[e.x * bp.row + c];
  if (c == 0u) {
    pos_dst[slot] = e.z;
    score_dst[slot] = 0.0;
  }
}
