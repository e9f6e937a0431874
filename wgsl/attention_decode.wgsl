// Decode attention (one query token per sequence) with split-K ("flash decoding") and optional per-token
// scores, for a batch of sequences in one dispatch per pass.
// The op prepends: const G (query heads per KV head), HD4 (headDim / 4), CH (tokens per chunk),
// WG (threads per workgroup), NQ4 (nHeads · HD4), BMAX (sequences per call), and the K/V bindings with their
// accessors (QPT quads per read unit, HU units per head; kunit/vunit, kscale/vscale).
// The queries are read from a uniform buffer (the op copies them there): every invocation reads the same q
// element at the same time, and CPU adapters (llvmpipe) broadcast uniform loads but gather per lane from
// workgroup or storage memory — this alone halves the logit pass there.
// Sequence b's row of the table `p.seqs` is (len, tok0, chunk0, w0): its valid tokens, the index of its first
// token in the bound K/V (a region of a shared arena, or staged after the others on the texture path), and
// where its chunk partials
// ([nHeads, nChunks] rows) and its weights ([nHeads, len]) start in the shared scratch buffers.
//
// Pass `partial`  — workgroup (chunk c, kv head kh, sequence b): logits of the chunk's tokens for the G query
//                   heads that share kh (K/V read once per group), chunk max m and sum l, unnormalised P·V;
//                   with scores, also the chunk-local weights e[h, j] = exp(logit − m_c).
// Pass `combine`  — workgroup (query head h, sequence b): merges chunk partials into the output; with scores,
//                   writes per-(head, chunk) factors f = exp(m_c − M) / L so that p[h, j] = e[h, j] · f[h, c].
// Pass `scores`   — thread per token and sequence (one dispatch per score buffer, e.g. a KV arena shard):
//                   score[j] = Σ_h e[h, j] · f[h, c(j)] (no exp per token and head), written fresh or decayed
//                   into the running score (S = γ·S + score).
struct Params {
  out_off4: u32,    // output offset (of sequence 0) in vec4 units
  want_logits: u32, // 1: scores wanted (`partial` stores e, `combine` stores f)
  scale: f32,
  seqs: array<vec4u, BMAX>, // at byte 16: per sequence (len, tok0, chunk0, w0)
}
@group(0) @binding(0) var<uniform> p: Params;

const NEG: f32 = -3.0e38;
const NO_SCORES: u32 = 0xffffffffu; // w0 of a sequence that wants no scores (it has no weights region)
const LANES: u32 = WG / HU; // P·V: threads per unit of the head dimension

// ---- partial ----
@group(0) @binding(1) var<uniform> q: array<vec4f, NQ4 * BMAX>;
// Bindings 2 and 3 (K and V) and their accessors kunit/vunit(token, kv head, unit) -> array<vec4f, QPT> and
// kscale/vscale(token, kv head) -> f32 (a factor of the token's values: int8's scale, else 1) come from the
// op's header: storage buffers, or (on CPU adapters) rgba32uint texture copies of the stored words, whose
// texel fetches are straight-line 16-byte loads where a per-lane storage load is a scalar loop.
@group(0) @binding(4) var<storage, read_write> part_o: array<vec4f>;  // [nHeads, n_chunks, HD4]
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2f>; // [nHeads, n_chunks]
@group(0) @binding(6) var<storage, read_write> weights: array<f32>;   // e: [nHeads, len]

var<workgroup> sl: array<f32, G * CH>;
var<workgroup> vsc: array<f32, CH>; // each token's V factor (vscale)
var<workgroup> ml: array<vec2f, G>;
var<workgroup> oacc: array<vec4f, (LANES - 1u) * HD4 + 1u>; // one query head's lane partials at a time

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let c = wid.x;
  let kh = wid.y;
  let sq = p.seqs[wid.z];
  let len = sq.x;
  let base = c * CH;
  if (base >= len) {
    return; // a shorter sequence of the batch: fewer chunks
  }
  let n = min(CH, len - base);
  let nc = (len + CH - 1u) / CH;
  let tok = sq.y + base;
  let qb = wid.z * NQ4 + kh * G * HD4;
  // Logits: one thread per token, K row read once for all G heads.
  for (var j = t; j < n; j += WG) {
    // Zeroed explicitly: naga hoists loop-local vars and does not re-zero them per iteration.
    var acc: array<f32, G>;
    for (var g = 0u; g < G; g++) {
      acc[g] = 0.0;
    }
    for (var u = 0u; u < HU; u++) {
      let kq = kunit(tok + j, kh, u);
      for (var e = 0u; e < QPT; e++) {
        for (var g = 0u; g < G; g++) {
          acc[g] += dot(q[qb + g * HD4 + u * QPT + e], kq[e]);
        }
      }
    }
    let ks = kscale(tok + j, kh) * p.scale;
    for (var g = 0u; g < G; g++) {
      sl[g * CH + j] = acc[g] * ks;
    }
    vsc[j] = vscale(tok + j, kh);
  }
  workgroupBarrier();

  // Chunk max and sum per head (G threads, serial over the chunk: cheap next to the K/V reads).
  if (t < G) {
    var m = NEG;
    for (var j = 0u; j < n; j++) {
      m = max(m, sl[t * CH + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < n; j++) {
      let e = exp(sl[t * CH + j] - m);
      sl[t * CH + j] = e;
      s += e;
    }
    ml[t] = vec2f(m, s);
  }
  workgroupBarrier();
  if (p.want_logits != 0u && sq.w != NO_SCORES) {
    for (var j = t; j < n; j += WG) {
      for (var g = 0u; g < G; g++) {
        weights[sq.w + (kh * G + g) * len + base + j] = sl[g * CH + j];
      }
    }
  }

  // P·V: thread owns one unit (QPT quads) of the head dimension and every LANES-th token of the chunk.
  let du = t % HU;
  let lane = t / HU;
  var acc: array<vec4f, G * QPT>;
  if (lane < LANES) {
    for (var j = lane; j < n; j += LANES) {
      let vq = vunit(tok + j, kh, du);
      let sv = vsc[j];
      for (var g = 0u; g < G; g++) {
        let w = sl[g * CH + j] * sv;
        for (var e = 0u; e < QPT; e++) {
          acc[g * QPT + e] += w * vq[e];
        }
      }
    }
  }
  // Lanes 1.. hand their partials to lane 0, one query head at a time (workgroup memory stays small).
  for (var g = 0u; g < G; g++) {
    if (lane > 0u && lane < LANES) {
      for (var e = 0u; e < QPT; e++) {
        oacc[((lane - 1u) * HU + du) * QPT + e] = acc[g * QPT + e];
      }
    }
    workgroupBarrier();
    if (lane == 0u) {
      for (var l = 1u; l < LANES; l++) {
        for (var e = 0u; e < QPT; e++) {
          acc[g * QPT + e] += oacc[((l - 1u) * HU + du) * QPT + e];
        }
      }
      for (var e = 0u; e < QPT; e++) {
        part_o[(sq.z + (kh * G + g) * nc + c) * HD4 + du * QPT + e] = acc[g * QPT + e];
      }
    }
    workgroupBarrier();
  }
  if (t < G) {
    part_ml[sq.z + (kh * G + t) * nc + c] = ml[t];
  }
}

// ---- combine ----
@group(0) @binding(1) var<storage, read> c_part_o: array<vec4f>;
@group(0) @binding(2) var<storage, read> c_part_ml: array<vec2f>;
@group(0) @binding(3) var<storage, read_write> c_out: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> c_factor: array<f32>; // [nHeads, n_chunks] per sequence

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let h = wid.x;
  let b = wid.y;
  let sq = p.seqs[b];
  let nc = (sq.x + CH - 1u) / CH;
  let mb = sq.z + h * nc;
  var m = NEG;
  for (var c = t; c < nc; c += WG) {
    m = max(m, c_part_ml[mb + c].x);
  }
  red[t] = m;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      red[t] = max(red[t], red[t + s]);
    }
    workgroupBarrier();
  }
  let gm = red[0];
  workgroupBarrier();
  var l = 0.0;
  for (var c = t; c < nc; c += WG) {
    let e = c_part_ml[mb + c];
    l += exp(e.x - gm) * e.y;
  }
  red[t] = l;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      red[t] += red[t + s];
    }
    workgroupBarrier();
  }
  let gl = red[0];
  for (var d = t; d < HD4; d += WG) {
    var acc = vec4f(0.0);
    for (var c = 0u; c < nc; c++) {
      acc += exp(c_part_ml[mb + c].x - gm) * c_part_o[(mb + c) * HD4 + d];
    }
    c_out[p.out_off4 + b * NQ4 + h * HD4 + d] = acc / gl;
  }
  if (p.want_logits != 0u) {
    for (var c = t; c < nc; c += WG) {
      c_factor[mb + c] = exp(c_part_ml[mb + c].x - gm) / gl;
    }
  }
}

// ---- scores ----
// Thread per (token, sequence of a group sharing one score buffer): its own table rows, in this pass's
// parameter block.
struct ScoreParams {
  row_stride: u32, // threads per grid row
  n_heads: u32,
  _pad0: u32,
  _pad1: u32,
  // Per sequence, two rows: (len, n_chunks, w0, f0) — valid tokens, chunks, where its weights and factors
  // start — and (score_off, decay, gamma bits, 0) — its first score element, 0: write fresh / 1: S = γ·S + s.
  seqs: array<vec4u, 2 * BMAX>,
}
@group(0) @binding(0) var<uniform> sp: ScoreParams;
@group(0) @binding(1) var<storage, read> s_weights: array<f32>;
@group(0) @binding(2) var<storage, read> s_factor: array<f32>;
@group(0) @binding(3) var<storage, read_write> s_score: array<f32>;

@compute @workgroup_size(256)
fn scores(@builtin(global_invocation_id) gid: vec3u) {
  let a = sp.seqs[2u * gid.z];
  let e = sp.seqs[2u * gid.z + 1u];
  let j = gid.x + gid.y * sp.row_stride;
  if (j >= a.x) {
    return;
  }
  var s = 0.0;
  let c = j / CH;
  for (var h = 0u; h < sp.n_heads; h++) {
    s += s_weights[a.z + h * a.x + j] * s_factor[a.w + h * a.y + c];
  }
  let o = e.x + j;
  if (e.y != 0u) {
    s_score[o] = bitcast<f32>(e.z) * s_score[o] + s;
  } else {
    s_score[o] = s;
  }
}
