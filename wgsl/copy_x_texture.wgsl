// Stages activation vectors for the texture matvec: texel (j, b) of the rgba32float target holds
// x[x_off + b·cols + 4j .. +3], zero beyond `cols` and for b ≥ batch (padding must be 0: it meets the zero
// padding of weight rows, and 0·0 keeps the sum exact).
struct Params { cols: u32, batch: u32, texels: u32, x_off: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var xt: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  let b = gid.y;
  if (j >= p.texels) { return; }
  var v = vec4<f32>(0.0);
  if (b < p.batch) {
    for (var i = 0u; i < 4u; i++) {
      let c = 4u * j + i;
      if (c < p.cols) { v[i] = x[p.x_off + b * p.cols + c]; }
    }
  }
  textureStore(xt, vec2<u32>(j, b), v);
}
