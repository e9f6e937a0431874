// SiLU-gated product: out[r, c] = silu(gate[r, c]) * up[r, c], silu(g) = g / (1 + exp(-g)), over rows × hidden.
// gate and up are read with their own row strides and offsets (in elements), so they may be two packed
// [rows, hidden] buffers or the two halves of one fused [rows, 2*hidden] buffer bound twice (read-only
// bindings of one buffer may alias). out is packed [rows, hidden].
struct Params {
  rows: u32, hidden: u32, gate_stride: u32, gate_offset: u32,
  up_stride: u32, up_offset: u32, grid_stride: u32, _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_stride;
  if (i >= p.rows * p.hidden) { return; }
  let r = i / p.hidden;
  let c = i - r * p.hidden;
  let g = gate[p.gate_offset + r * p.gate_stride + c];
  let u = up[p.up_offset + r * p.up_stride + c];
  // g / (1 + exp(-g)): for g << 0, exp(-g) overflows to +inf and the quotient is the correct -0.
  out[i] = g / (1.0 + exp(-g)) * u;
}
