// Tiled matmul (prefill): Y[m, r] = Σ_c X[m, c] · W[r, c] (+ bias[r]) (+ Y[m, r] when ACCUMULATE).
// One dispatch per weight chunk; a workgroup of 8×8 invocations computes a 32 (tokens) × 32 (weight rows)
// tile, each invocation a 4×4 block, staging 32×16 slices of X and W in workgroup memory (W unpacked to f32
// once per slice, so each weight is decoded once per 32 tokens instead of once per token).
// The host prepends the dtype's `fn wload(r: u32, c: u32) -> f32` (element [r, c] of the chunk, dequantized
// for q8 / q4, whose scales it binds at binding 5) and `const ACCUMULATE`, `const HAS_BIAS` and the storage
// type `WTYPE`.
struct Params {
  m: u32,         // tokens
  rows: u32,      // rows in this chunk
  cols: u32,
  row_start: u32, // chunk's first row in the whole matrix (offsets y columns and bias)
  out_stride: u32,// full row count of the matrix (y is [m, out_stride])
  tiles_x: u32,   // workgroups along the weight-row axis (grid is folded into x×y)
  row_words: u32, // 32-bit words per stored row (quantized weights)
  scale_stride: u32, // f16 scales per row (quantized weights)
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<WTYPE>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const TM = 32u;
const TN = 32u;
const TK = 16u;
var<workgroup> xs: array<f32, 512>; // [TM][TK]
var<workgroup> ws: array<f32, 512>; // [TN][TK]

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let tile = wid.x + wid.y * 65535u;
  if (tile >= p.tiles_x * ((p.m + TM - 1u) / TM)) { return; }
  let tn = tile % p.tiles_x;
  let tm = tile / p.tiles_x;
  let m0 = tm * TM;
  let r0 = tn * TN;
  var acc: array<vec4<f32>, 4>; // acc[i][j]: token m0 + lid.y*4 + i, row r0 + lid.x*4 + j
  for (var k0 = 0u; k0 < p.cols; k0 += TK) {
    // Each of the 64 invocations stages 8 X values and 8 W values: (row = e / TK, k = e % TK).
    for (var q = 0u; q < 8u; q++) {
      let e = li + q * 64u;
      let rr = e / TK;
      let kk = e % TK;
      let c = k0 + kk;
      let mm = m0 + rr;
      var xv = 0.0;
      if (mm < p.m && c < p.cols) { xv = x[mm * p.cols + c]; }
      xs[e] = xv;
      let wr = r0 + rr;
      var wv = 0.0;
      if (wr < p.rows && c < p.cols) { wv = wload(wr, c); }
      ws[e] = wv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      var xa: vec4<f32>;
      var wb: vec4<f32>;
      for (var i = 0u; i < 4u; i++) {
        xa[i] = xs[(lid.y * 4u + i) * TK + kk];
        wb[i] = ws[(lid.x * 4u + i) * TK + kk];
      }
      for (var i = 0u; i < 4u; i++) { acc[i] += xa[i] * wb; }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let mm = m0 + lid.y * 4u + i;
    if (mm >= p.m) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let r = r0 + lid.x * 4u + j;
      if (r >= p.rows) { continue; }
      let o = mm * p.out_stride + p.row_start + r;
      var v = acc[i][j];
      if (HAS_BIAS) { v += bias[p.row_start + r]; }
      if (ACCUMULATE) { v += y[o]; }
      y[o] = v;
    }
  }
}
