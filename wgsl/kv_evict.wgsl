// kv_evict: choose the slot a new token will overwrite when a layer is at its cap — the lowest key among
// unprotected slots (key = score, or the position for StreamingLLM); ties go to the lowest slot.
// Protected: pos < sink (attention sinks) or pos >= recent_from (recent window). One workgroup.
struct Params {
  len: u32,
  sink: u32,
  recent_from: u32,
  by_position: u32,
  victim_index: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> score: array<f32>;
@group(0) @binding(3) var<storage, read_write> victim: array<u32>;

const WG: u32 = 256u;
var<workgroup> best_key: array<f32, WG>;
var<workgroup> best_slot: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  var key = 3.4e38;
  var slot = 0xffffffffu;
  for (var i = lid; i < p.len; i += WG) {
    let q = pos[i];
    if (q < p.sink || q >= p.recent_from) { continue; }
    var k = score[i];
    if (p.by_position == 1u) { k = f32(q); }
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
    // No unprotected slot (a cap not above sinks + recent window): overwrite the oldest non-sink slot instead of
    // writing out of bounds; the host validates options so that this does not happen.
    var s = best_slot[0];
    if (s == 0xffffffffu) { s = p.len - 1u; }
    victim[p.victim_index] = s;
  }
}
