// Tiled matmul (prefill), coalesced variant for rows of whole 16-byte units and cols % 4 == 0 (every real
// model): Y[m, r] = Σ_c X[m, c] · W[r, c] (+ bias[r]) (+ Y[m, r] when ACCUMULATE). A workgroup of 8×8
// invocations computes a 32 (tokens) × 32 (weight rows) tile, each invocation a 4×4 block, over k-steps of 32:
// per step the 64 invocations stage W's 32×32 slice as consecutive 16-byte units of each row (consecutive
// invocations read consecutive words, decoded to f32 once) and X's 32×32 slice as vec4s, in workgroup memory.
// A k-step of 32 is exactly one quantization group, so a quantized row needs one scale per step.
// The host prepends: const UPR (16-byte units per row per k-step: 32 / values per unit), VPW (values per
// 32-bit word): u32; const ACCUMULATE, HAS_BIAS, QUANT: bool; fn stage(e: u32, u: vec4<u32>, s: f32) (decodes
// unit `u` into ws[e .. e + 4·VPW), times s) and fn gscale(row: u32, k0: u32) -> f32 (quantized: the scale of
// chunk row `row`'s group at column k0; scales at binding 5).
struct Params {
  m: u32,          // tokens
  rows: u32,       // rows in this chunk
  cols: u32,
  row_start: u32,  // chunk's first row in the whole matrix (offsets y columns and bias)
  out_stride: u32, // full row count of the matrix (y is [m, out_stride])
  tiles_x: u32,    // workgroups along the weight-row axis (grid is folded into x×y)
  row_words: u32,  // 32-bit words per stored row (a multiple of 4)
  scale_stride: u32, // f16 scales per row (quantized weights)
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const TM = 32u;
const TN = 32u;
const TK = 32u;
var<workgroup> xs: array<f32, 1024>; // [TM][TK]
var<workgroup> ws: array<f32, 1024>; // [TN][TK]

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let tile = wid.x + wid.y * 65535u;
  if (tile >= p.tiles_x * ((p.m + TM - 1u) / TM)) { return; }
  let tn = tile % p.tiles_x;
  let tm = tile / p.tiles_x;
  let m0 = tm * TM;
  let r0 = tn * TN;
  let units_per_row = p.row_words / 4u;
  let x_quads = p.cols / 4u;
  var acc: array<vec4<f32>, 4>; // acc[i][j]: token m0 + lid.y*4 + i, row r0 + lid.x*4 + j
  for (var k0 = 0u; k0 < p.cols; k0 += TK) {
    // W: 32 rows × UPR units; unit e of the slice is unit (e % UPR) of row e / UPR.
    for (var e = li; e < TN * UPR; e += 64u) {
      let rr = e / UPR;
      let j = e % UPR;
      let wr = r0 + rr;
      let unit = k0 / (4u * VPW) + j;
      var u = vec4<u32>(0u);
      var s = 1.0;
      if (wr < p.rows && unit < units_per_row) {
        u = w[wr * units_per_row + unit];
        if (QUANT) { s = gscale(wr, k0); }
      }
      stage(rr * TK + j * 4u * VPW, u, s);
    }
    // X: 32 tokens × 8 quads.
    for (var e = li; e < TM * 8u; e += 64u) {
      let mm = m0 + e / 8u;
      let q = k0 / 4u + e % 8u;
      var v = vec4<f32>(0.0);
      if (mm < p.m && q < x_quads) { v = x[mm * x_quads + q]; }
      let o = (e / 8u) * TK + (e % 8u) * 4u;
      xs[o] = v.x;
      xs[o + 1u] = v.y;
      xs[o + 2u] = v.z;
      xs[o + 3u] = v.w;
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
