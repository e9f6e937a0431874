// Matvec, texture fast path (decode): y[b, row_start + r] = Σ_c W[r, c] · x[b, c] (+ bias) (+ y when ACCUMULATE),
// for b < batch. Weights come from an rgba32uint texture (one texel = 16 bytes of a row, see
// WeightTexture in src/gpu/weights.ts), x from an rgba32float staging texture (texel (j, b) = x[b, 4j..4j+3]).
// Why textures: on Mesa's CPU adapter every storage-buffer load with per-lane addresses is a scalar loop
// over the SIMD lanes, while a texel fetch moves 16 bytes per lane; see bench/RESULTS-kernels.md.
// Each invocation owns R consecutive rows, so each x texel it fetches is reused R times.
// The host prepends: const R, BB, WG: u32; const ACCUMULATE, HAS_BIAS: bool; and, for the weight dtype, a type
// XV (the x values that meet one weight texel), fn xload(t: u32, b: u32) -> XV (reads xt, below) and
// fn wdot(u: vec4<u32>, xv: XV) -> vec4<f32> (lane-wise partial products of one texel); for q8 / q4 weights
// also fn wscale(r: u32, t: u32) -> f32, the scale of the group texel t of row r belongs to.
struct Params {
  rows: u32,       // rows in this texture piece
  texels: u32,     // weight texels per row
  row_start: u32,  // piece's first row in the whole matrix
  out_stride: u32, // y row stride (the matrix's full row count)
  batch: u32,      // live vectors (≤ BB)
  stride: u32,     // invocations per grid row (grid folded into x×y)
  y_off: u32,      // element offset of y[0, 0] in the y binding
  scale_stride: u32, // f16 scales per row (quantized weights: wscale(r, t), binding 5, is the host's)
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var wt: texture_2d<u32>;
@group(0) @binding(2) var xt: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let r0 = (gid.x + gid.y * p.stride) * R;
  // Grid z walks groups of BB vectors (prefill runs all its tokens in one dispatch).
  let tok0 = wid.z * BB;
  if (r0 >= p.rows) { return; }
  let last = p.rows - 1u;
  // Host-generated, fully unrolled (lavapipe keeps named values in registers; an indexed private array
  // would live in per-lane scratch memory): accumulators a<k>_<b> for row r0+k and vector b; per texel
  // column t, x values x<b> = xload(t, tok0 + b) once, then each row's texel u = textureLoad(wt, (t,
  // min(r0+k, last))) feeds a<k>_<b> += wdot(u, x<b>); finally store(r0 + k, tok0 + b, a<k>_<b>).
  //@DECL
  for (var t = 0u; t < p.texels; t++) {
    //@BODY
  }
  //@STORE
}

fn store(r: u32, b: u32, a: vec4<f32>) {
  if (r >= p.rows || b >= p.batch) { return; }
  var v = (a.x + a.y) + (a.z + a.w);
  if (HAS_BIAS) { v += bias[p.row_start + r]; }
  let o = p.y_off + b * p.out_stride + p.row_start + r;
  if (ACCUMULATE) { v += y[o]; }
  y[o] = v;
}
