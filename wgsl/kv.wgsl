// KV-cache maintenance kernels. One layer of one sequence (kv_write, bound to its region) or of a batch
// (kv_write_batch, bound to a whole arena shard, after kv_evict for the sequences at a cap). Sources are f32
// rows [*, ROW] (ROW = nKvHeads · headDim, token-major); K and V are stored rows of W u32 words in the format
// DT (src/ops/kv_layout.ts: 0 = f32, 1 = f16 pairs, 2 = int8 quads per head + one f32 scale word per head);
// pos u32 [slots] (original positions), score f32 [slots] (policy scores).
// The op prepends: const DT, ROW, W, NKV (KV heads), HD (head dim), UNITS (threads per row: words for f32 and
// f16, heads for int8).

struct WriteParams {
  count: u32,      // rows to write
  src_row: u32,    // first row to read from k_src/v_src
  slot: u32,       // first destination slot
  pos: u32,        // original position of the first row
}

// --- kv_write: append `count` rows at the end of one sequence's region (prefill) ------------------------------
@group(0) @binding(0) var<uniform> wp: WriteParams;
@group(0) @binding(1) var<storage, read> k_src: array<f32>;
@group(0) @binding(2) var<storage, read> v_src: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_dst: array<u32>;
@group(0) @binding(4) var<storage, read_write> v_dst: array<u32>;
@group(0) @binding(5) var<storage, read_write> pos_dst: array<u32>;
@group(0) @binding(6) var<storage, read_write> score_dst: array<f32>;
@group(0) @binding(7) var<storage, read> victim: array<u32>; // kv_write_batch only

fn src_at(which: u32, i: u32) -> f32 {
  if (which == 0u) { return k_src[i]; }
  return v_src[i];
}

fn dst_put(which: u32, i: u32, w: u32) {
  if (which == 0u) { k_dst[i] = w; } else { v_dst[i] = w; }
}

/// Stores unit `u` (a word, or an int8 head) of source row `srow` of K (which 0) or V (1) into `slot`.
fn put(which: u32, u: u32, srow: u32, slot: u32) {
  let s = srow * ROW;
  let d = slot * W;
  if (DT == 0u) {
    dst_put(which, d + u, bitcast<u32>(src_at(which, s + u)));
  } else if (DT == 1u) {
    dst_put(which, d + u, pack2x16float(vec2f(src_at(which, s + 2u * u), src_at(which, s + 2u * u + 1u))));
  } else {
    // int8: head u's largest |value| is its scale; q = floor(0.5 + 127 · clamp(v / scale, −1, 1)).
    let h0 = s + u * HD;
    var m = 0.0;
    for (var i = 0u; i < HD; i++) {
      m = max(m, abs(src_at(which, h0 + i)));
    }
    var inv = 0.0;
    if (m > 0.0) { inv = 1.0 / m; }
    for (var i = 0u; i < HD; i += 4u) {
      let e = vec4f(src_at(which, h0 + i), src_at(which, h0 + i + 1u), src_at(which, h0 + i + 2u),
        src_at(which, h0 + i + 3u)) * inv;
      dst_put(which, d + (u * HD + i) / 4u, pack4x8snorm(e));
    }
    dst_put(which, d + ROW / 4u + u, bitcast<u32>(m));
    if (u == 0u) {
      for (var i = NKV; i < W - ROW / 4u; i++) {
        dst_put(which, d + ROW / 4u + i, 0u); // padding of the scale words
      }
    }
  }
}

@compute @workgroup_size(256)
fn write(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= wp.count * UNITS) { return; }
  let t = i / UNITS;
  let u = i % UNITS;
  let slot = wp.slot + t;
  put(0u, u, wp.src_row + t, slot);
  put(1u, u, wp.src_row + t, slot);
  if (u == 0u) {
    pos_dst[slot] = wp.pos + t;
    score_dst[slot] = 0.0;
  }
}

// --- kv_write_batch: one new row for each of several sequences whose layer lives in the same arena shard ----
// Entry b of the table: (source row, destination slot in the shard, position, use_victim); with use_victim = 1
// the destination is victim[b], the slot kv_evict chose for it in the same batch.
struct BatchParams {
  count: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
  seqs: array<vec4u, 64>,
}
@group(0) @binding(0) var<uniform> bp: BatchParams;

@compute @workgroup_size(256)
fn write_batch(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= bp.count * UNITS) { return; }
  let b = i / UNITS;
  let e = bp.seqs[b];
  let u = i % UNITS;
  var slot = e.y;
  if (e.w == 1u) { slot = victim[b]; }
  put(0u, u, e.x, slot);
  put(1u, u, e.x, slot);
  if (u == 0u) {
    pos_dst[slot] = e.z;
    score_dst[slot] = 0.0;
  }
}
