// kv_evict: for each sequence of a batch (workgroup x = entry) whose layer is at its cap, choose the slot its
// new token will overwrite — the lowest key among unprotected slots (key = score, or the position for
// StreamingLLM); ties go to the lowest slot. Protected: pos < sink (attention sinks) or pos >= recent_from
// (recent window). pos and score are a whole arena shard; entry b's slots are [base, base + len), and the chosen
// slot (absolute in the shard) goes to victim[b], where kv_write_batch reads it.
struct Params {
  // Per entry, two rows: (base, len, sink, recent_from), (by_position, 0, 0, 0).
  seqs: array<vec4u, 128>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> score: array<f32>;
@group(0) @binding(3) var<storage, read_write> victim: array<u32>;

const WG: u32 = 256u;
var<workgroup> best_key: array<f32, WG>;
var<workgroup> best_slot: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let e = p.seqs[2u * wid.x];
  let by_position = p.seqs[2u * wid.x + 1u].x;
  let base = e.x;
  let len = e.y;
  var key = 3.4e38;
  var slot = 0xffffffffu;
  for (var i = lid; i < len; i += WG) {
    let q = pos[base + i];
    if (q < e.z || q >= e.w) { continue; }
    var k = score[base + i];
    if (by_position == 1u) { k = f32(q); }
    if (k < key || (k == key && i < slot)) {
      key = k;
      slot = i;
    }
  }
  best_key[lid] = key;
  best_slot[lid] = slot;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let k2 = best_key[lid + s];
      let s2 = best_slot[lid + s];
      if (k2 < best_key[lid] || (k2 == best_key[lid] && s2 < best_slot[lid])) {
        best_key[lid] = k2;
        best_slot[lid] = s2;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    // No unprotected slot (a cap not above sinks + recent window): overwrite the last slot instead of writing
    // out of bounds; the host validates options so that this does not happen.
    var s = best_slot[0];
    if (s == 0xffffffffu) { s = len - 1u; }
    victim[wid.x] = base + s;
  }
}
