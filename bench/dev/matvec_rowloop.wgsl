// SUPERSEDED (issue 22) by wgsl/matvec.wgsl; kept for bench/matvec.bench.ts (bench/dev/matvec_rowloop.ts).
// Matvec, storage-buffer path (decode): y[b, row_start + r] = Σ_c W[r, c] · x[b, c] (+ bias) (+ y when
// ACCUMULATE) for b < batch ≤ BB, reading one weight chunk (row-major, see src/gpu/weights.ts).
// Used when a weight has no texture copy (GPU adapters, or rows too wide for a texture). Each invocation
// owns R consecutive rows so every x value it loads is reused R times; weights are read once for all BB vectors.
// The host prepends: const R, BB, WG: u32; const ACCUMULATE, HAS_BIAS, ODD_TAIL: bool; the storage type
// WTYPE and fn wpair(i: u32) -> vec2<f32> (values 2i and 2i+1 of the chunk, row-major) and
// fn wone(i: u32) -> f32 (value i; only used for the odd last column of f32 weights).
struct Params {
  rows: u32,       // rows in this chunk
  cols: u32,
  row_start: u32,  // chunk's first row in the whole matrix
  out_stride: u32, // y row stride (the matrix's full row count)
  batch: u32,      // live vectors (≤ BB)
  stride: u32,     // invocations per grid row
  y_off: u32,      // element offset of y[0, 0] in the y binding
  x_off: u32,      // element offset of x[0, 0] in the x binding
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<WTYPE>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let r0 = (gid.x + gid.y * p.stride) * R;
  if (r0 >= p.rows) { return; }
  let pairs = p.cols / 2u;
  var acc: array<vec2<f32>, R * BB>;
  for (var i = 0u; i < pairs; i++) {
    var xv: array<vec2<f32>, BB>;
    for (var b = 0u; b < BB; b++) {
      let xi = p.x_off + min(b, p.batch - 1u) * p.cols + 2u * i;
      xv[b] = vec2<f32>(x[xi], x[xi + 1u]);
    }
    for (var k = 0u; k < R; k++) {
      let wv = wpair(min(r0 + k, p.rows - 1u) * p.cols + 2u * i);
      for (var b = 0u; b < BB; b++) {
        acc[k * BB + b] += wv * xv[b];
      }
    }
  }
  for (var k = 0u; k < R; k++) {
    let r = r0 + k;
    if (r >= p.rows) { break; }
    for (var b = 0u; b < BB; b++) {
      if (b >= p.batch) { break; }
      var v = acc[k * BB + b].x + acc[k * BB + b].y;
      if (ODD_TAIL) { v += wone(r * p.cols + p.cols - 1u) * x[p.x_off + b * p.cols + p.cols - 1u]; }
      if (HAS_BIAS) { v += bias[p.row_start + r]; }
      let o = p.y_off + b * p.out_stride + p.row_start + r;
      if (ACCUMULATE) { v += y[o]; }
      y[o] = v;
    }
  }
}
