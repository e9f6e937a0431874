// Embedding gather from one row chunk of a chunked weight (src/gpu/weights.ts): for every token t whose id
// lies in [row_start, row_start + chunk_rows), out[t, c] = E[id, c] decoded to f32. The op dispatches once
// per chunk; each dispatch writes only its own rows. The dispatch with zero_oob = 1 also writes zeros for
// ids >= total_rows, so an out-of-range id never reads out of bounds and never leaves garbage.
// DTYPE: 0 = f32, 1 = bf16, 2 = f16, 3 = q8, 4 = q4. The chunk is bound as u32 words in every case: f32 via
// bitcast, the 16-bit types packed two per word with the even column in the low half; q8 / q4 rows are
// `row_words` words of int8 / 4-bit values (src/gpu/weights.ts) times the f16 scale of their group (`scales`,
// the whole matrix's, bound for every dtype — a dummy for the float ones).
override DTYPE: u32 = 1u;
struct Params {
  tokens: u32, cols: u32, row_start: u32, chunk_rows: u32,
  total_rows: u32, zero_oob: u32, grid_stride: u32, row_words: u32,
  scale_stride: u32, _p0: u32, _p1: u32, _p2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> scales: array<u32>;

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
  if (DTYPE >= 3u) {
    let si = id * p.scale_stride + c / 32u;
    let s = unpack2x16float(scales[si >> 1u])[si & 1u];
    if (DTYPE == 3u) {
      let u = table[local * p.row_words + c / 4u];
      v = f32(bitcast<i32>(u << (24u - 8u * (c & 3u))) >> 24u) * s;
    } else {
      let u = table[local * p.row_words + c / 8u];
      v = f32(i32((u >> (4u * (c & 7u))) & 15u) - 8) * s;
    }
  } else if (DTYPE == 0u) {
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
