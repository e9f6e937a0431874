// Token selection on the GPU, one workgroup per row of logits; only the chosen id (u32) is written.
//
// Entry `argmax` — the largest logit, ties to the lowest id.
// Entry `sample` — temperature, top-k, top-p and an inverse-CDF draw with a counter-based uniform:
//   w_i = exp((l_i - max) * inv_temp). Sets are defined on the logits' total order (no float sums involved
//   in top-k): top-k keeps every logit ≥ the k-th largest (ties at the boundary kept), found by a binary
//   search over the 32-bit order key of the logits. Top-p keeps every logit ≥ the largest key t whose
//   kept mass Σ{w_i : key_i ≥ t} ≥ top_p · Z_k (Z_k the mass after top-k); again a binary search over keys.
//   The draw: target_mass = u · Z over the kept set; the smallest id (id order) whose running kept mass > target_mass.
//   u = (hash(seed, step, row) >> 8) / 2^24, the same hash as src/ref/sample.ts.
// Speed: rather than ~64 passes over the row (two 32-step binary searches), two 11-bit histogram passes find
// a threshold keeping at most CAP (and usually nearly CAP) of the largest logits, those candidates are
// gathered into workgroup memory, and one thread runs both searches there (no barriers). The full-row
// searches remain as the fallback when top-k exceeds the candidates or the top-p set is larger than them
// (flat distributions).
const WG: u32 = 256u;
const CAP: u32 = 1536u; // candidate buffer (12 KiB) — with the histogram ~22 KiB of workgroup memory
const HB: u32 = 2048u;  // histogram bins (11 bits of the key per pass)

struct Params {
  vocab: u32,
  row_stride: u32,  // elements between rows
  offset: u32,      // element offset of row 0
  top_k: u32,       // 0: off
  top_p: f32,       // ≥ 1: off
  inv_temp: f32,
  seed: u32,
  step: u32,
  grid_x: u32,      // workgroups per grid row (rows = wid.x + wid.y * grid_x)
  rows: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;

var<workgroup> rf: array<f32, WG>;
var<workgroup> ru: array<u32, WG>;
var<workgroup> rf2: array<f32, 16>;
var<workgroup> rf_total: f32;
var<workgroup> ru_total: atomic<u32>;
var<workgroup> ru_plain: u32;
var<workgroup> pick: vec2u;      // (segment, fallback flag) of the draw
var<workgroup> pick_t: f32;      // residual target mass inside the picked segment
var<workgroup> hist: array<atomic<u32>, HB>;
var<workgroup> cand_n: atomic<u32>;
var<workgroup> cand_key: array<u32, CAP>;
var<workgroup> cand_w: array<f32, CAP>;
var<workgroup> res: vec3u;         // thresholds resolved by thread 0: (lo, state, hi)
var<workgroup> res_goal: f32;
var<workgroup> sel: vec2u;       // histogram select: (bin, count above it), then (threshold, 0)

// Monotone map f32 → u32: a < b ⇔ key(a) < key(b) for non-NaN values.
fn key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn mix32(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}

fn uniform01(seed: u32, step: u32, row: u32) -> f32 {
  let h = mix32(seed ^ mix32(step ^ mix32(row + 0x9e3779b9u)));
  return f32(h >> 8u) * (1.0 / 16777216.0);
}

// Workgroup sums in two levels (16 partial sums of 16, then one of 16): four barriers instead of a
// log2(WG)-step tree, which matters on CPU adapters where each barrier is a full context switch.
fn sum_all(t: u32, x: f32) -> f32 {
  rf[t] = x;
  workgroupBarrier();
  if (t < 16u) {
    var s = 0.0;
    for (var j = 0u; j < 16u; j++) {
      s += rf[t * 16u + j];
    }
    rf2[t] = s;
  }
  workgroupBarrier();
  if (t == 0u) {
    var s = 0.0;
    for (var j = 0u; j < 16u; j++) {
      s += rf2[j];
    }
    rf_total = s;
  }
  return workgroupUniformLoad(&rf_total);
}

fn count_all(t: u32, x: u32) -> u32 {
  if (t == 0u) {
    atomicStore(&ru_total, 0u);
  }
  workgroupBarrier();
  if (x != 0u) {
    atomicAdd(&ru_total, x);
  }
  workgroupBarrier();
  if (t == 0u) {
    ru_plain = atomicLoad(&ru_total);
  }
  return workgroupUniformLoad(&ru_plain);
}

// Max logit and its lowest id; returns (key of max, id).
fn argmax_row(t: u32, base: u32) -> vec2u {
  var bv = -3.4028234e38; // the lowest finite f32 (-3.4028235e38 is out of range for Tint)
  var bi = 0xffffffffu;
  for (var i = t; i < p.vocab; i += WG) {
    let x = logits[base + i];
    if (x > bv || bi == 0xffffffffu) {
      bv = x;
      bi = i;
    }
  }
  rf[t] = bv;
  ru[t] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      let ov = rf[t + s];
      let oi = ru[t + s];
      if (oi != 0xffffffffu && (ov > rf[t] || (ov == rf[t] && oi < ru[t]) || ru[t] == 0xffffffffu)) {
        rf[t] = ov;
        ru[t] = oi;
      }
    }
    workgroupBarrier();
  }
  let r = vec2u(key(workgroupUniformLoad(&rf[0])), workgroupUniformLoad(&ru[0]));
  workgroupBarrier();
  return r;
}

fn row_of(wid: vec3u) -> u32 {
  return wid.x + wid.y * p.grid_x;
}

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = row_of(wid);
  if (row >= p.rows) {
    return;
  }
  let r = argmax_row(t, p.offset + row * p.row_stride);
  if (t == 0u) {
    ids[row] = r.y;
  }
}

// Full-row kept mass Σ{w_i : key_i ≥ th}.
fn mass_full(t: u32, base: u32, th: u32, mx: f32) -> f32 {
  var s = 0.0;
  for (var i = t; i < p.vocab; i += WG) {
    let x = logits[base + i];
    if (key(x) >= th) {
      s += exp((x - mx) * p.inv_temp);
    }
  }
  return sum_all(t, s);
}

fn count_full(t: u32, base: u32, th: u32) -> u32 {
  var c = 0u;
  for (var i = t; i < p.vocab; i += WG) {
    c += select(0u, 1u, key(logits[base + i]) >= th);
  }
  return count_all(t, c);
}

// Serial candidate-set versions (thread 0 only; n = gathered candidates in workgroup memory).
fn mass_ser(n: u32, th: u32) -> f32 {
  var s = 0.0;
  for (var i = 0u; i < n; i++) {
    if (cand_key[i] >= th) {
      s += cand_w[i];
    }
  }
  return s;
}

fn count_ser(n: u32, th: u32) -> u32 {
  var c = 0u;
  for (var i = 0u; i < n; i++) {
    c += select(0u, 1u, cand_key[i] >= th);
  }
  return c;
}

fn cand_swap(i: u32, j: u32) {
  let k = cand_key[i];
  let w = cand_w[i];
  cand_key[i] = cand_key[j];
  cand_w[i] = cand_w[j];
  cand_key[j] = k;
  cand_w[j] = w;
}

// Moves the candidates with key ≥ th to the front; returns how many there are.
fn front_ge(n: u32, th: u32) -> u32 {
  var a = 0u;
  for (var i = 0u; i < n; i++) {
    if (cand_key[i] >= th) {
      cand_swap(i, a);
      a++;
    }
  }
  return a;
}

// Weighted quickselect over candidates [lo0, hi0): the largest key th with Σ{w : key ≥ th} ≥ goal (w = 1
// per element when by_count). Three-way partitions around a middle pivot; expected linear time.
// Invariant: `above` (the weight known to lie above the range) < goal.
fn wselect(lo0: u32, hi0: u32, goal: f32, by_count: bool) -> u32 {
  var lo = lo0;
  var hi = hi0;
  var above = 0.0;
  loop {
    let pk = cand_key[(lo + hi) / 2u];
    // [lo, a): key > pk; [a, b): key == pk; [b, hi): key < pk.
    var a = lo;
    var i = lo;
    var b = hi;
    while (i < b) {
      let k = cand_key[i];
      if (k > pk) {
        cand_swap(i, a);
        a++;
        i++;
      } else if (k < pk) {
        b--;
        cand_swap(i, b);
      } else {
        i++;
      }
    }
    var m_up = 0.0;
    for (var j = lo; j < a; j++) {
      m_up += select(cand_w[j], 1.0, by_count);
    }
    if (a > lo && above + m_up >= goal) {
      hi = a;
      continue;
    }
    var m_eq = 0.0;
    for (var j = a; j < b; j++) {
      m_eq += select(cand_w[j], 1.0, by_count);
    }
    if (above + m_up + m_eq >= goal || b == hi) {
      return pk; // (b == hi: nothing below; only float rounding can get here without reaching goal)
    }
    above += m_up + m_eq;
    lo = b;
  }
  return 0u; // unreachable; naga wants a return after the loop
}

fn mid_of(lo: u32, hi: u32) -> u32 {
  return lo + ((hi - lo) >> 1u) + ((hi - lo) & 1u);
}

// The candidate threshold: the smallest tc on a 2^10-key grid with count(key ≥ tc) ≤ CAP, from two
// 11-bit histogram passes over the row (bins of key >> 21, then the boundary bin's next 11 bits).
fn cand_threshold(t: u32, base: u32) -> u32 {
  for (var b = t; b < HB; b += WG) {
    atomicStore(&hist[b], 0u);
  }
  workgroupBarrier();
  for (var i = t; i < p.vocab; i += WG) {
    atomicAdd(&hist[key(logits[base + i]) >> 21u], 1u);
  }
  workgroupBarrier();
  if (t == 0u) {
    // Walk down from the top bin; stop at the first bin that would overflow CAP (HB: everything fits).
    var cum = 0u;
    var b = HB - 1u;
    loop {
      let h = atomicLoad(&hist[b]);
      if (cum + h > CAP) {
        break;
      }
      cum += h;
      if (b == 0u) {
        b = HB;
        break;
      }
      b--;
    }
    sel = vec2u(b, cum);
  }
  let s1 = workgroupUniformLoad(&sel);
  if (s1.x == HB) {
    return 0u;
  }
  for (var b = t; b < HB; b += WG) {
    atomicStore(&hist[b], 0u);
  }
  workgroupBarrier();
  for (var i = t; i < p.vocab; i += WG) {
    let k = key(logits[base + i]);
    if ((k >> 21u) == s1.x) {
      atomicAdd(&hist[(k >> 10u) & (HB - 1u)], 1u);
    }
  }
  workgroupBarrier();
  if (t == 0u) {
    var cum = s1.y;
    var b = HB - 1u;
    loop {
      let h = atomicLoad(&hist[b]);
      if (cum + h > CAP || b == 0u) {
        break;
      }
      cum += h;
      b--;
    }
    // Keys ≥ the sub-bin above b (b = HB - 1: only the bins above s1.x).
    let tc = (s1.x << 21u) + ((b + 1u) << 10u);
    sel = vec2u(select(tc, 0xffffffffu, tc < (s1.x << 21u)), 0u);
  }
  return workgroupUniformLoad(&sel).x;
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = row_of(wid);
  if (row >= p.rows) {
    return;
  }
  let base = p.offset + row * p.row_stride;
  let am = argmax_row(t, base);
  let kmax = am.x;
  let mx = logits[base + am.y];

  // Candidates: the largest logits, at most CAP of them (all of them for small vocabularies).
  // Skipped when neither top-k nor top-p is on (cand_n = CAP + 1 then routes to the no-op full path).
  let need = (p.top_k > 0u && p.top_k < p.vocab) || p.top_p < 1.0;
  var tc = 0u;
  if (need && p.vocab > CAP) {
    tc = cand_threshold(t, base);
  }
  if (t == 0u) {
    atomicStore(&cand_n, select(CAP + 1u, 0u, need));
  }
  workgroupBarrier();
  // Z over the whole row is needed when top-p runs without top-k; summed during the gather pass.
  let want_z = p.top_p < 1.0 && !(p.top_k > 0u && p.top_k < p.vocab);
  var zpart = 0.0;
  for (var i = t; i < select(0u, p.vocab, need); i += WG) {
    let x = logits[base + i];
    let k = key(x);
    // exp only where needed: it is the costliest instruction of this pass on CPU adapters.
    var w = 0.0;
    if (want_z || k >= tc) {
      w = exp((x - mx) * p.inv_temp);
    }
    zpart += w;
    if (k >= tc) {
      let slot = atomicAdd(&cand_n, 1u);
      if (slot < CAP) {
        cand_key[slot] = k;
        cand_w[slot] = w;
      }
    }
  }
  let z_all = sum_all(t, zpart);
  let n_all = workgroupUniformLoad(&cand_n);
  let n = min(n_all, CAP);

  // One thread resolves both thresholds on the candidates by weighted quickselect: a few thousand
  // operations and no barriers  // (barriers, not arithmetic, dominate on CPU adapters). state 0: done; 1: do everything on the full row;
  // 2: top-k done, the top-p threshold lies below the candidates (search the full row below them).
  if (t == 0u) {
    var lo = 0u;
    var state = select(1u, 0u, n_all <= CAP);
    var hi_p = 0u;
    var goal = 0.0;
    if (state == 0u && p.top_k > 0u && p.top_k < p.vocab) {
      if (p.top_k <= n) {
        lo = wselect(0u, n, f32(p.top_k), true);
      } else {
        state = 1u;
      }
    }
    if (state == 0u && p.top_p < 1.0) {
      var zk = z_all;
      if (lo >= tc) {
        zk = mass_ser(n, lo);
      }
      goal = p.top_p * zk;
      let lc = max(lo, tc);
      if (mass_ser(n, lc) >= goal) {
        lo = wselect(0u, front_ge(n, lc), goal, false);
      } else {
        state = 2u;
        hi_p = lc - 1u;
      }
    }
    res = vec3u(lo, state, hi_p);
    res_goal = goal;
  }
  let r = workgroupUniformLoad(&res);
  var lo = r.x;
  if (r.y == 1u) {
    // Full-row fallback: top-k exceeds the candidates (or sampling without top-k/top-p: nothing to do).
    if (p.top_k > 0u && p.top_k < p.vocab) {
      var hi = kmax;
      while (lo < hi) {
        let mid = mid_of(lo, hi);
        if (count_full(t, base, mid) >= p.top_k) {
          lo = mid;
        } else {
          hi = mid - 1u;
        }
      }
    }
    if (p.top_p < 1.0) {
      let goal = p.top_p * mass_full(t, base, lo, mx);
      var hi = kmax;
      while (lo < hi) {
        let mid = mid_of(lo, hi);
        if (mass_full(t, base, mid, mx) >= goal) {
          lo = mid;
        } else {
          hi = mid - 1u;
        }
      }
    }
  } else if (r.y == 2u) {
    // Flat distribution: the top-p set is larger than the candidates.
    let goal = workgroupUniformLoad(&res_goal);
    var hi = r.z;
    while (lo < hi) {
      let mid = mid_of(lo, hi);
      if (mass_full(t, base, mid, mx) >= goal) {
        lo = mid;
      } else {
        hi = mid - 1u;
      }
    }
  }
  let th = lo;
  // Draw: contiguous id segments per thread, so "smallest id whose running mass > target_mass" is a scan.
  let seg = (p.vocab + WG - 1u) / WG;
  let s0 = min(t * seg, p.vocab);
  let s1 = min(s0 + seg, p.vocab);
  var ms = 0.0;
  for (var i = s0; i < s1; i++) {
    let x = logits[base + i];
    if (key(x) >= th) {
      ms += exp((x - mx) * p.inv_temp);
    }
  }
  rf[t] = ms;
  workgroupBarrier();
  if (t == 0u) {
    var z = 0.0;
    for (var j = 0u; j < WG; j++) {
      z += rf[j];
    }
    let target_mass = uniform01(p.seed, p.step, row) * z;
    var cum = 0.0;
    var found = 0u;
    var last = 0u; // last segment with kept mass: fallback when rounding leaves target_mass ≥ the total
    for (var j = 0u; j < WG; j++) {
      if (rf[j] > 0.0) {
        last = j;
        if (found == 0u && cum + rf[j] > target_mass) {
          pick = vec2u(j, 0u);
          pick_t = target_mass - cum;
          found = 1u;
        }
      }
      cum += rf[j];
    }
    if (found == 0u) {
      pick = vec2u(last, 1u);
    }
  }
  workgroupBarrier();
  if (t == pick.x) {
    var cum = 0.0;
    var chosen = 0xffffffffu;
    var last = 0u;
    for (var i = s0; i < s1; i++) {
      let x = logits[base + i];
      if (key(x) >= th) {
        cum += exp((x - mx) * p.inv_temp);
        last = i;
        if (chosen == 0xffffffffu && pick.y == 0u && cum > pick_t) {
          chosen = i;
        }
      }
    }
    ids[row] = select(chosen, last, chosen == 0xffffffffu);
  }
}
