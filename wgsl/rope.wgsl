// Rotary position embedding, Hugging Face "rotate_half" pairing, in place. Each invocation rotates one pair
// (x[i], x[i + d/2]) of one head of one token by angle = f32(pos[t]) * inv_freq[i]:
//   x[i]       <- x[i] * cos - x[i + d/2] * sin
//   x[i + d/2] <- x[i + d/2] * cos + x[i] * sin
// Layout: token t, head h starts at offset + t * row_stride + h * head_dim (elements), so a packed
// [tokens, heads, head_dim] buffer and the q/k heads inside a fused [tokens, q|k|v] row both work.
// `main_qk` rotates q and k (different head counts, own strides and offsets) in one dispatch: heads
// [0, q_heads) of q, then [q_heads, q_heads + k_heads) of k.
struct Params {
  tokens: u32, head_dim: u32, grid_stride: u32, total: u32,
  q_heads: u32, q_stride: u32, q_offset: u32, k_heads: u32,
  k_stride: u32, k_offset: u32, _pad0: u32, _pad1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> k: array<f32>;

// cos and sin of an f32 angle with an explicit Cody-Waite reduction to [-pi, pi]: the builtins are only
// specified to be accurate on [-pi, pi] (GPU hardware sin/cos lose accuracy on large arguments), and angles
// reach ~1.3e5 at long positions. 2*pi is split into C1 (8 significant bits) + C2 (9 bits) + C3, so n * C1
// and n * C2 are exact for n < 2^15, i.e. angles below ~2e5 (positions up to 2e5 at inv_freq 1), where the
// result matches f64 cos/sin of the same f32 angle to ~1e-7. Beyond that the reduction error grows but stays
// of the order of the f32 angle's own rounding (|angle| * 2^-24), which no f32 angle formula avoids.
fn cos_sin(a: f32) -> vec2f {
  let n = round(a * bitcast<f32>(0x3e22f983u)); // a / (2*pi)
  var r = a - n * bitcast<f32>(0x40c90000u);
  r -= n * bitcast<f32>(0x3afd8000u);
  r -= n * bitcast<f32>(0x35a8885au);
  return vec2f(cos(r), sin(r));
}

// Splits a flat pair index into (token, head, i).
fn split(idx: u32, heads: u32, half: u32) -> vec3u {
  let i = idx % half;
  let th = idx / half;
  return vec3u(th / heads, th % heads, i);
}

@compute @workgroup_size(256)
fn main_qk(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.x + gid.y * p.grid_stride;
  if (idx >= p.total) { return; }
  let half = p.head_dim / 2u;
  let s = split(idx, p.q_heads + p.k_heads, half);
  let cs = cos_sin(f32(positions[s.x]) * inv_freq[s.z]);
  if (s.y < p.q_heads) {
    let j = p.q_offset + s.x * p.q_stride + s.y * p.head_dim + s.z;
    let x1 = q[j];
    let x2 = q[j + half];
    q[j] = x1 * cs.x - x2 * cs.y;
    q[j + half] = x2 * cs.x + x1 * cs.y;
  } else {
    let j = p.k_offset + s.x * p.k_stride + (s.y - p.q_heads) * p.head_dim + s.z;
    let x1 = k[j];
    let x2 = k[j + half];
    k[j] = x1 * cs.x - x2 * cs.y;
    k[j + half] = x2 * cs.x + x1 * cs.y;
  }
}
