// Causal prefill attention as blocked multi-query decoding, plus observation-window scores.
// The op prepends: const G (query heads per KV head), HD4 (headDim / 4), M (queries per block),
// NH (query heads), CH (keys per chunk), WG (threads, a multiple of CH), and the K/V bindings with their
// accessors (QPT quads per read unit, HU units per head; kunit/vunit, kscale/vscale).
//
// For each block of M queries the op copies the block's queries ([M, NH, HD4], contiguous) into a uniform
// buffer — CPU adapters broadcast uniform loads but gather per lane from storage/workgroup memory — and runs
//   `partial` — workgroup (chunk c, kv head kh): the R = M·G (query, head) rows that share kh against the
//               chunk's CH keys, each K and V row read once for all R rows; causal mask by slot
//               (query i sees slots 0..start+i); per-row chunk max, sum and unnormalised P·V.
//   `combine` — workgroup per (query, head): merges the chunks, writes the output and (m, l) for `window`.
// `window` — thread per slot j: Σ over the last W queries and all heads of exp(q·k·scale − m) / l.
struct Params {
  t: u32,           // queries in this call
  start: u32,       // slots cached before this chunk
  n_kv: u32,
  q0: u32,          // first query of this block
  mv: u32,          // valid queries in this block (≤ M)
  n_chunks: u32,    // chunks of this block (covering slots 0..start+q0+mv-1)
  out_off4: u32,
  w: u32,           // window size (≤ t)
  scale: f32,
  gamma: f32,
  decay: u32,       // window: 0 write fresh, 1 S = gamma * S + score
  row_stride: u32,  // threads per grid row of `window`
  score_off: u32,
  q_off4: u32,      // `window`: query offset in vec4 units
}
@group(0) @binding(0) var<uniform> p: Params;

const NEG: f32 = -3.0e38;
const R: u32 = M * G;
const TPG: u32 = WG / CH;                 // QK: thread groups per key
const RPG_QK: u32 = (R + TPG - 1u) / TPG; // QK: rows per thread
const PG: u32 = WG / HU;                  // PV: thread groups per output unit
const RPG_PV: u32 = (R + PG - 1u) / PG;   // PV: rows per thread

// ---- partial ----
@group(0) @binding(1) var<uniform> q: array<vec4f, M * NH * HD4>;
// Bindings 2 and 3 (K and V; `window` uses binding 2 only) and their accessors kunit/vunit(token, kv head,
// unit) -> array<vec4f, QPT> and kscale/vscale(token, kv head) -> f32 (int8's scale, else 1) come from the
// op's header: storage buffers, or (on CPU adapters) texture copies.
@group(0) @binding(4) var<storage, read_write> part_o: array<vec4f>;  // [M, NH, n_chunks, HD4]
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2f>; // [M, NH, n_chunks]

var<workgroup> sl: array<f32, R * CH>;
var<workgroup> vsc: array<f32, CH>; // each key's V factor (vscale)
var<workgroup> ml: array<vec2f, R>;

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let c = wid.x;
  let kh = wid.y;
  let base = c * CH;
  let n_keys = p.start + p.q0 + p.mv;
  let n = min(CH, n_keys - base);

  // Logits: thread (key j, row group); each thread loads its key's row and dots it with RPG_QK rows.
  let j = t % CH;
  let rg = t / CH;
  if (j < n) {
    var acc: array<f32, RPG_QK>;
    for (var i = 0u; i < RPG_QK; i++) {
      acc[i] = 0.0; // explicit: naga does not re-zero loop-local arrays
    }
    for (var u = 0u; u < HU; u++) {
      let kq = kunit(base + j, kh, u);
      for (var e = 0u; e < QPT; e++) {
        for (var i = 0u; i < RPG_QK; i++) {
          let r = rg * RPG_QK + i;
          if (r < R) {
            let m = r / G;
            acc[i] += dot(q[(m * NH + kh * G + r % G) * HD4 + u * QPT + e], kq[e]);
          }
        }
      }
    }
    let ks = kscale(base + j, kh) * p.scale;
    for (var i = 0u; i < RPG_QK; i++) {
      let r = rg * RPG_QK + i;
      if (r < R) {
        // Query m sits at slot start + q0 + m and sees slots up to it.
        let visible = base + j <= p.start + p.q0 + r / G;
        sl[r * CH + j] = select(NEG, acc[i] * ks, visible);
      }
    }
    if (rg == 0u) {
      vsc[j] = vscale(base + j, kh);
    }
  }
  workgroupBarrier();

  // Per-row chunk max and sum (rows with no visible key here get l = 0).
  if (t < R) {
    var m = NEG;
    for (var jj = 0u; jj < n; jj++) {
      m = max(m, sl[t * CH + jj]);
    }
    var s = 0.0;
    for (var jj = 0u; jj < n; jj++) {
      let x = sl[t * CH + jj];
      let e = select(0.0, exp(x - m), x > NEG);
      sl[t * CH + jj] = e;
      s += e;
    }
    ml[t] = vec2f(m, s);
  }
  workgroupBarrier();

  // P·V: thread (output unit du, row group); each V unit is loaded once for RPG_PV rows.
  let du = t % HU;
  let pg = t / HU;
  var acc: array<vec4f, RPG_PV * QPT>;
  for (var jj = 0u; jj < n; jj++) {
    let vq = vunit(base + jj, kh, du);
    let sv = vsc[jj];
    for (var i = 0u; i < RPG_PV; i++) {
      let r = pg * RPG_PV + i;
      if (r < R) {
        let w = sl[r * CH + jj] * sv;
        for (var e = 0u; e < QPT; e++) {
          acc[i * QPT + e] += w * vq[e];
        }
      }
    }
  }
  for (var i = 0u; i < RPG_PV; i++) {
    let r = pg * RPG_PV + i;
    if (r < R && r / G < p.mv) {
      let h = kh * G + r % G;
      let row = (r / G) * NH + h;
      for (var e = 0u; e < QPT; e++) {
        part_o[(row * p.n_chunks + c) * HD4 + du * QPT + e] = acc[i * QPT + e];
      }
      if (du == 0u) {
        part_ml[row * p.n_chunks + c] = ml[r];
      }
    }
  }
}

// ---- combine ----
@group(0) @binding(1) var<storage, read> c_part_o: array<vec4f>;
@group(0) @binding(2) var<storage, read> c_part_ml: array<vec2f>;
@group(0) @binding(3) var<storage, read_write> c_out: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> c_stats: array<vec2f>; // [t, NH]: (m, l)

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = wid.x; // m * NH + h within the block
  let nc = p.n_chunks;
  let mb = row * nc;
  var m = NEG;
  for (var c = t; c < nc; c += 64u) {
    m = max(m, c_part_ml[mb + c].x);
  }
  red[t] = m;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (t < s) {
      red[t] = max(red[t], red[t + s]);
    }
    workgroupBarrier();
  }
  let gm = red[0];
  workgroupBarrier();
  var l = 0.0;
  for (var c = t; c < nc; c += 64u) {
    let e = c_part_ml[mb + c];
    l += exp(e.x - gm) * e.y;
  }
  red[t] = l;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (t < s) {
      red[t] += red[t + s];
    }
    workgroupBarrier();
  }
  let gl = red[0];
  let grow = p.q0 * NH + row; // (query, head) row in the whole call
  for (var d = t; d < HD4; d += 64u) {
    var acc = vec4f(0.0);
    for (var c = 0u; c < nc; c++) {
      let e = c_part_ml[mb + c];
      if (e.y > 0.0) {
        acc += exp(e.x - gm) * c_part_o[(mb + c) * HD4 + d];
      }
    }
    c_out[p.out_off4 + grow * HD4 + d] = acc / gl;
  }
  if (t == 0u) {
    c_stats[grow] = vec2f(gm, gl);
  }
}

// ---- window ----
@group(0) @binding(1) var<storage, read> w_q: array<vec4f>;
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
    let ks = kscale(j, kh);
    for (var u = 0u; u < HU; u++) {
      let kq = kunit(j, kh, u);
      for (var e = 0u; e < QPT; e++) {
        kr[u * QPT + e] = kq[e] * ks;
      }
    }
    for (var g = 0u; g < G; g++) {
      let h = kh * G + g;
      for (var i = max(i0, select(0u, j - p.start, j > p.start)); i < p.t; i++) {
        let qb = p.q_off4 + (i * NH + h) * HD4;
        var dd = 0.0;
        for (var d = 0u; d < HD4; d++) {
          dd += dot(w_q[qb + d], kr[d]);
        }
        let e = w_stats[i * NH + h];
        total += exp(dd * p.scale - e.x) / e.y;
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
