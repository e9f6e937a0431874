// Work on one row of logits around sampling, one workgroup per dispatch (the per-sequence buffers differ per row).
//
// Entry `process` — the logits the sampler draws from, written to `dst` (the raw row stays for logprobs):
//   logit bias (flags bit 2): l += bias[i] (the sequence's f32 [vocab], OpenAI's logit_bias), first; then
//   penalties (flags bit 0), from aux = the sequence's token counts (u32 [vocab]; bit 31: the id is in the
//   prompt, bits 0–30: times generated). With c = counts[i], g = c & 0x7fffffff:
//     repetition (HF/vLLM, prompt + generated): if c ≠ 0, l = l > 0 ? l / r : l · r;
//     frequency and presence (OpenAI, generated only): l -= f · g + p · [g > 0].
//   min_p (flags bit 1): ids with p_i < min_p · p_max after temperature, i.e. (l_i − l_max) · inv_temp <
//   ln(min_p), are set to the lowest finite f32 (weight exp(−huge) = 0, never the max).
// Entry `logprobs` — log-softmax of the raw row (the model's distribution: no temperature or penalties) at
//   the sampled id aux[0], written to aux[1], and the top_n ids by logit (ties: lower id first) with their
//   logprobs at aux[2 + 2j] (id), aux[3 + 2j] (f32 bits). aux is the row's 256-byte id slot.
// Entry `count` — counts[ids[0]] += 1: the sampled id joins the sequence's generated-token counts (on the GPU,
//   so a step recorded ahead sees it).
const WG: u32 = 256u;
const MAXN: u32 = 20u;
const LOWEST: f32 = -3.4028234e38; // the lowest finite f32 (-3.4028235e38 is out of range for Tint)

struct Params {
  vocab: u32,
  in_off: u32,    // element offset of the raw row in `src`
  out_off: u32,   // element offset of the processed row in `dst`
  flags: u32,     // bit 0: penalties, bit 1: min_p, bit 2: logit bias
  presence: f32,
  frequency: f32,
  repetition: f32,
  log_min_p: f32,
  inv_temp: f32,
  top_n: u32,
  pad0: u32,
  pad1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
// `count` binds the sampled ids here instead (its only input).
@group(0) @binding(1) var<storage, read> ids_in: array<u32>;
@group(0) @binding(2) var<storage, read_write> aux: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

var<workgroup> rf: array<f32, WG>;
var<workgroup> rf2: array<f32, 16>;
var<workgroup> res_f: vec2f;
const GROUP: u32 = 64u; // threads whose lists are merged per pass (64 × 20 entries: 10 KiB)
var<workgroup> cv: array<f32, 1280>; // GROUP · MAXN
var<workgroup> ci: array<u32, 1280>;

// (value, id) order: larger value first, then lower id.
fn better(v: f32, i: u32, w: f32, j: u32) -> bool {
  return v > w || (v == w && i < j);
}

// Workgroup max in two levels (16 partials of 16, then one): four barriers rather than a log2(WG) tree.
fn max_all(t: u32, x: f32) -> f32 {
  rf[t] = x;
  workgroupBarrier();
  if (t < 16u) {
    var m = rf[t * 16u];
    for (var j = 1u; j < 16u; j++) {
      m = max(m, rf[t * 16u + j]);
    }
    rf2[t] = m;
  }
  workgroupBarrier();
  if (t == 0u) {
    var m = rf2[0];
    for (var j = 1u; j < 16u; j++) {
      m = max(m, rf2[j]);
    }
    res_f = vec2f(m, 0.0);
  }
  let r = workgroupUniformLoad(&res_f).x;
  return r;
}

@compute @workgroup_size(WG)
fn process(@builtin(local_invocation_index) t: u32) {
  let pen = (p.flags & 1u) != 0u;
  let biased = (p.flags & 4u) != 0u;
  var lm = LOWEST;
  for (var i = t; i < p.vocab; i += WG) {
    var l = src[p.in_off + i];
    if (biased) {
      l += bias[i];
    }
    if (pen) {
      let c = aux[i];
      let g = c & 0x7fffffffu;
      if (c != 0u && p.repetition != 1.0) {
        l = select(l * p.repetition, l / p.repetition, l > 0.0);
      }
      l -= p.frequency * f32(g) + select(0.0, p.presence, g > 0u);
    }
    dst[p.out_off + i] = l;
    lm = max(lm, l);
  }
  if ((p.flags & 2u) == 0u) {
    return;
  }
  // Each thread rereads only the elements it wrote: no barrier needed beyond the max's.
  let mx = max_all(t, lm);
  for (var i = t; i < p.vocab; i += WG) {
    let l = dst[p.out_off + i];
    if ((l - mx) * p.inv_temp < p.log_min_p) {
      dst[p.out_off + i] = LOWEST;
    }
  }
}

@compute @workgroup_size(WG)
fn logprobs(@builtin(local_invocation_index) t: u32) {
  let n = min(p.top_n, MAXN);
  // One pass: an online max and sum of exp, and this thread's top n (sorted, best first).
  var m = LOWEST;
  var s = 0.0;
  var tv: array<f32, MAXN>;
  var ti: array<u32, MAXN>;
  var cnt = 0u;
  for (var i = t; i < p.vocab; i += WG) {
    let x = src[p.in_off + i];
    if (x > m) {
      s = s * exp(m - x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
    // Ids arrive ascending, so an equal value never displaces an earlier one.
    if (n > 0u && (cnt < n || x > tv[n - 1u])) {
      var j = min(cnt, n - 1u);
      while (j > 0u && x > tv[j - 1u]) {
        tv[j] = tv[j - 1u];
        ti[j] = ti[j - 1u];
        j--;
      }
      tv[j] = x;
      ti[j] = i;
      cnt = min(cnt + 1u, n);
    }
  }
  // log Σ exp over the row from the per-thread (max, sum) pairs.
  let mx = max_all(t, m);
  rf[t] = s * exp(m - mx);
  workgroupBarrier();
  if (t < 16u) {
    var z = 0.0;
    for (var j = 0u; j < 16u; j++) {
      z += rf[t * 16u + j];
    }
    rf2[t] = z;
  }
  workgroupBarrier();
  if (t == 0u) {
    var z = 0.0;
    for (var j = 0u; j < 16u; j++) {
      z += rf2[j];
    }
    res_f = vec2f(mx + log(z), 0.0);
  }
  let lse = workgroupUniformLoad(&res_f).x;
  if (t == 0u) {
    let id = aux[0];
    var lp = 0.0;
    if (id < p.vocab) {
      lp = src[p.in_off + id] - lse;
    }
    aux[1] = bitcast<u32>(lp);
  }
  // Merge: the threads' lists pass through workgroup memory GROUP threads at a time and thread 0 keeps the
  // best n (2 barriers per group, whatever n: on CPU adapters barriers, not comparisons, cost the time).
  var gv: array<f32, MAXN>;
  var gi: array<u32, MAXN>;
  var gn = 0u;
  for (var g = 0u; g < WG / GROUP; g++) {
    if (n == 0u) {
      break;
    }
    if (t / GROUP == g) {
      let base = (t % GROUP) * MAXN;
      for (var j = 0u; j < n; j++) {
        cv[base + j] = select(LOWEST, tv[j], j < cnt);
        ci[base + j] = select(0xffffffffu, ti[j], j < cnt);
      }
    }
    workgroupBarrier();
    if (t == 0u) {
      for (var k = 0u; k < GROUP; k++) {
        for (var j = 0u; j < n; j++) {
          let id = ci[k * MAXN + j];
          let x = cv[k * MAXN + j];
          // Each list is sorted: once one entry misses the current top n, the rest of that list does too.
          if (id == 0xffffffffu || (gn == n && !better(x, id, gv[n - 1u], gi[n - 1u]))) {
            break;
          }
          var at = min(gn, n - 1u);
          while (at > 0u && better(x, id, gv[at - 1u], gi[at - 1u])) {
            gv[at] = gv[at - 1u];
            gi[at] = gi[at - 1u];
            at--;
          }
          gv[at] = x;
          gi[at] = id;
          gn = min(gn + 1u, n);
        }
      }
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    for (var r = 0u; r < gn; r++) {
      aux[2u + 2u * r] = gi[r];
      aux[3u + 2u * r] = bitcast<u32>(gv[r] - lse);
    }
  }
}

@compute @workgroup_size(1)
fn count() {
  let id = ids_in[0];
  if (id < p.vocab) {
    aux[id] += 1u;
  }
}
