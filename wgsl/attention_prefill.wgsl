// Causal prefill attention (flash-attention style, online softmax) and observation-window scores.
// The op prepends: const G (query heads per KV head), HD4 (headDim / 4), BQ (query rows per workgroup =
// threads), BK (keys per shared K/V tile).
//
// Entry `main`   — workgroup (query tile, head h); thread = one query row holding q and the output
//                  accumulator in registers; K/V tiles of BK slots are staged in workgroup memory. Query i
//                  sees slots 0..start+i. Also stores (m, l) per (query, head) for the window pass.
// Entry `window` — thread per slot j: Σ over the last W queries and all heads of exp(q·k·scale - m) / l,
//                  the same logits recomputed in the same order as `main`.
struct Params {
  t: u32,           // queries in this call
  start: u32,       // slots already cached before this chunk
  n_heads: u32,
  n_kv: u32,
  q_off4: u32,
  out_off4: u32,
  w: u32,           // window size (≤ t)
  score_off: u32,
  scale: f32,
  gamma: f32,
  decay: u32,       // 0: write fresh, 1: S = gamma * S + score
  row_stride: u32,  // threads per grid row of `window`
}
@group(0) @binding(0) var<uniform> p: Params;

const NEG: f32 = -3.0e38;

@group(0) @binding(1) var<storage, read> q: array<vec4f>;
@group(0) @binding(2) var<storage, read> k: array<vec4f>;
@group(0) @binding(3) var<storage, read> v: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4f>;
@group(0) @binding(5) var<storage, read_write> stats: array<vec2f>; // [t, n_heads]: (m, l)

var<workgroup> ks: array<vec4f, BK * HD4>;
var<workgroup> vs: array<vec4f, BK * HD4>;

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let h = wid.y;
  let kh = h / G;
  let i = wid.x * BQ + t;
  let live = i < p.t;
  let lim = p.start + i; // last visible slot (inclusive)
  let n_keys = p.start + min(wid.x * BQ + BQ, p.t);
  var qv: array<vec4f, HD4>;
  var acc: array<vec4f, HD4>;
  if (live) {
    let qb = p.q_off4 + (i * p.n_heads + h) * HD4;
    for (var d = 0u; d < HD4; d++) {
      qv[d] = q[qb + d] * p.scale;
    }
  }
  var m = NEG;
  var l = 0.0;
  for (var kb = 0u; kb < n_keys; kb += BK) {
    for (var x = t; x < BK * HD4; x += BQ) {
      let tok = kb + x / HD4;
      if (tok < n_keys) {
        let gi = (tok * p.n_kv + kh) * HD4 + x % HD4;
        ks[x] = k[gi];
        vs[x] = v[gi];
      } else {
        ks[x] = vec4f(0.0);
        vs[x] = vec4f(0.0);
      }
    }
    workgroupBarrier();
    if (live && kb <= lim) {
      var s: array<f32, BK>;
      var tm = m;
      let nv = min(BK, lim + 1u - kb); // visible keys of this tile
      for (var jj = 0u; jj < nv; jj++) {
        var dd = 0.0;
        for (var d = 0u; d < HD4; d++) {
          dd += dot(qv[d], ks[jj * HD4 + d]);
        }
        s[jj] = dd;
        tm = max(tm, dd);
      }
      let corr = exp(m - tm);
      l *= corr;
      for (var d = 0u; d < HD4; d++) {
        acc[d] *= corr;
      }
      for (var jj = 0u; jj < nv; jj++) {
        let e = exp(s[jj] - tm);
        l += e;
        for (var d = 0u; d < HD4; d++) {
          acc[d] += e * vs[jj * HD4 + d];
        }
      }
      m = tm;
    }
    workgroupBarrier();
  }
  if (live) {
    let ob = p.out_off4 + (i * p.n_heads + h) * HD4;
    for (var d = 0u; d < HD4; d++) {
      out[ob + d] = acc[d] / l;
    }
    stats[i * p.n_heads + h] = vec2f(m, l);
  }
}

@group(0) @binding(1) var<storage, read> w_q: array<vec4f>;
@group(0) @binding(2) var<storage, read> w_k: array<vec4f>;
@group(0) @binding(3) var<storage, read> w_stats: array<vec2f>;
@group(0) @binding(4) var<storage, read_write> w_score: array<f32>;

@compute @workgroup_size(64)
fn window(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x + gid.y * p.row_stride;
  if (j >= p.start + p.t) {
    return;
  }
  let n_kv = p.n_kv;
  let i0 = p.t - p.w;
  var total = 0.0;
  for (var kh = 0u; kh < n_kv; kh++) {
    var kr: array<vec4f, HD4>;
    let kb = (j * n_kv + kh) * HD4;
    for (var d = 0u; d < HD4; d++) {
      kr[d] = w_k[kb + d];
    }
    for (var g = 0u; g < G; g++) {
      let h = kh * G + g;
      for (var i = max(i0, select(0u, j - p.start, j > p.start)); i < p.t; i++) {
        let qb = p.q_off4 + (i * p.n_heads + h) * HD4;
        var dd = 0.0;
        for (var d = 0u; d < HD4; d++) {
          dd += dot(w_q[qb + d] * p.scale, kr[d]);
        }
        let e = w_stats[i * p.n_heads + h];
        total += exp(dd - e.x) / e.y;
      }
    }
  }
  let o = p.score_off + j;
  if (p.decay != 0u) {
    w_score[o] = p.gamma * w_score[o] + total;
  } else {
    w_score[o] = total;
  }
}
