// Numerically stable row softmax of scale * x over x [rows, n]; one workgroup per row, strided loops.
// Pass 1: row max. Pass 2: e = exp(scale*x - max) written to the output, summed. Pass 3: output *= 1/sum.
// Each invocation re-reads in pass 3 exactly the elements it wrote in pass 2, so no storage barrier is
// needed, and exp is evaluated once per element (the costly part on a CPU adapter).
// A row that is entirely -inf gives zeros instead of NaN. The in-place variant is made by text
// specialisation (src/ops/softmax.ts): the input binding is replaced by an alias of `out`.
struct Params { rows: u32, n: u32, scale: f32, grid_x: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>; //INPUT
@group(0) @binding(2) var<storage, read_write> out: array<f32>; //OUTPUT

const WG: u32 = 256u;
const LOWEST: f32 = -3.4028234663852886e38;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * p.grid_x;
  if (row >= p.rows) { return; } // uniform across the workgroup
  let base = row * p.n;

  var m = LOWEST;
  for (var i = lid; i < p.n; i += WG) { m = max(m, x[base + i] * p.scale); }
  red[lid] = m;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let rowMax = red[0];
  workgroupBarrier(); // everyone has read red[0] before it is reused for the sum

  var sum = 0.0;
  for (var i = lid; i < p.n; i += WG) {
    let e = exp(x[base + i] * p.scale - rowMax);
    out[base + i] = e;
    sum += e;
  }
  red[lid] = sum;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  let inv = select(0.0, 1.0 / total, total > 0.0);
  for (var i = lid; i < p.n; i += WG) { out[base + i] *= inv; }
}
