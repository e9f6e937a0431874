// Matvec, storage-buffer path (decode): y[b, row_start + r] = Σ_c W[r, c] · x[b, c] (+ bias) (+ y when
// ACCUMULATE) for b < batch ≤ BB, reading one weight chunk (row-major words, see src/gpu/weights.ts).
// The design every GPU wants: a workgroup owns R consecutive rows; its WG invocations stride along the rows
// together, invocation t reading 16-byte unit t, t + WG, … of each row, so consecutive invocations read
// consecutive 16-byte words (coalesced); each keeps R·BB partial sums (the weights are read once for all BB
// vectors, each x value reused for R rows), and the workgroup adds them up through workgroup memory.
// The host prepends: const R, BB, WG, VPW (values per 32-bit word): u32; const ACCUMULATE, HAS_BIAS, QUANT,
// VEC4 (rows are whole 16-byte units; w is then array<vec4<u32>>): bool; the storage type WTYPE; and, for the
// weight type, a value type WV, fn wvals(word: u32) -> WV, fn xvals(i: u32, c: u32) -> WV (x[i..i+VPW), the
// values at columns ≥ cols reading 0 when c is the first one's column), fn vdot(a: WV, b: WV) -> f32,
// fn wword(i: u32) -> u32 (word i of the chunk) and, for quantized weights, fn gscale(row: u32, unit: u32) -> f32
// (the f16 scale of the group holding 16-byte unit `unit` of chunk row `row`, bound at binding 5).
struct Params {
  rows: u32,        // rows in this chunk
  cols: u32,
  row_start: u32,   // chunk's first row in the whole matrix
  out_stride: u32,  // y row stride (the matrix's full row count)
  batch: u32,       // live vectors (≤ BB)
  wg_stride: u32,   // workgroups per grid row (grid folded into x×y)
  y_off: u32,       // element offset of y[0, 0] in the y binding
  x_off: u32,       // element offset of x[0, 0] in the x binding
  row_words: u32,   // 32-bit words per stored row
  scale_stride: u32,// f16 scales per row (quantized weights)
  _p0: u32,
  _p1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<WTYPE>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

var<workgroup> red: array<f32, WG * R * BB>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let r0 = (wid.x + wid.y * p.wg_stride) * R;
  if (r0 >= p.rows) { return; } // uniform across the workgroup: the barriers below stay uniform
  var acc: array<f32, R * BB>;
  let units = p.row_words / 4u;
  for (var u = t; u < units; u += WG) {
    // One 16-byte unit of each of the R rows (rows past the chunk repeat its last row; never stored).
    var wu: array<vec4<u32>, R>;
    for (var k = 0u; k < R; k++) {
      let row = min(r0 + k, p.rows - 1u);
      if (VEC4) {
        wu[k] = wunit(row * units + u);
      } else {
        let i = row * p.row_words + 4u * u;
        wu[k] = vec4<u32>(wword(i), wword(i + 1u), wword(i + 2u), wword(i + 3u));
      }
    }
    // Zeroed explicitly each unit: a declaration inside a loop body was not re-zeroed on lavapipe.
    var part: array<f32, R * BB>;
    for (var i = 0u; i < R * BB; i++) { part[i] = 0.0; }
    for (var j = 0u; j < 4u; j++) {
      let c = (4u * u + j) * VPW;
      var xv: array<WV, BB>;
      for (var b = 0u; b < BB; b++) { xv[b] = xvals(p.x_off + min(b, p.batch - 1u) * p.cols + c, c); }
      for (var k = 0u; k < R; k++) {
        let wv = wvals(wu[k][j]);
        for (var b = 0u; b < BB; b++) { part[k * BB + b] += vdot(wv, xv[b]); }
      }
    }
    for (var k = 0u; k < R; k++) {
      var s = 1.0;
      if (QUANT) { s = gscale(min(r0 + k, p.rows - 1u), u); }
      for (var b = 0u; b < BB; b++) { acc[k * BB + b] += s * part[k * BB + b]; }
    }
  }
  // Rows whose length is not whole 16-byte units (float weights only): the last 1-3 words, one per invocation.
  if (!VEC4) {
    for (var i = 4u * units + t; i < p.row_words; i += WG) {
      let c = i * VPW;
      var xv: array<WV, BB>;
      for (var b = 0u; b < BB; b++) { xv[b] = xvals(p.x_off + min(b, p.batch - 1u) * p.cols + c, c); }
      for (var k = 0u; k < R; k++) {
        let wv = wvals(wword(min(r0 + k, p.rows - 1u) * p.row_words + i));
        for (var b = 0u; b < BB; b++) { acc[k * BB + b] += vdot(wv, xv[b]); }
      }
    }
  }
  // Tree reduction of each of the R·BB sums over the workgroup.
  for (var i = 0u; i < R * BB; i++) { red[i * WG + t] = acc[i]; }
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      for (var i = 0u; i < R * BB; i++) { red[i * WG + t] += red[i * WG + t + s]; }
    }
    workgroupBarrier();
  }
  if (t < R * BB) {
    let r = r0 + t / BB;
    let b = t % BB;
    if (r < p.rows && b < p.batch) {
      var v = red[t * WG];
      if (HAS_BIAS) { v += bias[p.row_start + r]; }
      let o = p.y_off + b * p.out_stride + p.row_start + r;
      if (ACCUMULATE) { v += y[o]; }
      y[o] = v;
    }
  }
}
