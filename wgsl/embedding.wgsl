// Embedding gather from one row chunk of a chunked weight (src/gpu/weights.ts): for every token t whose id
// lies in [row_start, row_start + chunk_rows), out[t, c] = E[id, c] decoded to f32. The op dispatches once
// per chunk; each dispatch writes only its own rows. The dispatch with zero_oob = 1 also writes zeros for
// ids >= total_rows, so an out-of-range id never reads out of bounds and never leaves garbage.
// DTYPE: 0 = f32, 1 = bf16, 2 = f16. The chunk is bound as u32 words in every case: f32 via bitcast, the
// 16-bit types packed two per word with the even column in the low half.
override DTYPE: u32 = 1u;
struct Params {
  tokens: u32, cols: u32, row_start: u32, chunk_rows: u32,
  total_rows: u32, zero_oob: u32, grid_stride: u32, _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_stride;
  if (i >= p.tokens * p.cols) { return; }
  let t = i / p.cols;
  let c = i - t * p.cols;
  let id = ids[t];
  if (id >= p.total_rows) {
    if (p.zero_oob != 0u) { out[i] = 0.0; }
    return;
  }
  // Unsigned wrap makes ids below row_start huge, so one comparison covers both ends of the chunk.
  let local = id - p.row_start;
  if (local >= p.chunk_rows) { return; }
  let e = local * p.cols + c;
  var v: f32;
  if (DTYPE == 0u) {
    v = bitcast<f32>(table[e]);
  } else {
    let word = table[e >> 1u];
    let bits = select(word & 0xffffu, word >> 16u, (e & 1u) == 1u);
    if (DTYPE == 1u) {
      v = bitcast<f32>(bits << 16u);
    } else {
      v = unpack2x16float(bits).x;
    }
  }
  out[i] = v;
}
