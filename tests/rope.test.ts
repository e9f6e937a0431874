import { ropeInvFreq } from "../src/model/rope_freq.ts";
import { ropeQK, uploadInvFreq } from "../src/ops/rope.ts";
import { ropeRef } from "../src/ref/rope.ts";
import { assertClose, freshSeed, gpuContext, randomF32, rng } from "./helpers.ts";

// Against a reference that forms the angle exactly as the kernel does (f32(pos) · f32(invFreq), rounded to
// f32) and then rotates in f64, only the kernel's range reduction + cos/sin + 2 products remain: ~1e-6
// relative to the largest |x|. Measured ~3e-7 on lavapipe.
const SAME_ANGLE_BOUND = 2e-6;
// Against the exact f64 rotation, the f32 angle itself is off by up to |angle|·2⁻²³ (two roundings), which
// moves each output by up to (|x_i| + |x_{i+d/2}|) · that; checked per element with the trig allowance above.
const angleBound = (angle: number) => Math.abs(angle) * 2 ** -23 + SAME_ANGLE_BOUND;

const LLAMA31 = {
  rope_type: "llama3",
  factor: 8,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

Deno.test("ropeInvFreq: default theta^(-2i/d) and Llama-3 scaling bands", () => {
  const inv = ropeInvFreq(128, 10000);
  if (inv.length !== 64 || inv[0] !== 1 || Math.abs(inv[32] - 0.01) > 1e-15) {
    throw new Error(`default invFreq wrong: ${inv[0]}, ${inv[32]}`);
  }
  const base = ropeInvFreq(128, 500000);
  const scaled = ropeInvFreq(128, 500000, LLAMA31);
  // Wavelength 2π/f vs the band edges 8192/4 = 2048 and 8192/1 = 8192: for theta 5e5, d 128 the high
  // band is i ≤ 28, the medium band 29…34, the low band i ≥ 35.
  let prevRatio = 1;
  for (let i = 0; i < 64; i++) {
    const wavelen = (2 * Math.PI) / base[i];
    const ratio = scaled[i] / base[i];
    if (i <= 28 && (wavelen >= 2048 || ratio !== 1)) throw new Error(`i=${i} should be unscaled`);
    if (i >= 35 && (wavelen <= 8192 || Math.abs(ratio - 1 / 8) > 1e-15)) {
      throw new Error(`i=${i} should be /8`);
    }
    if (i > 28 && i < 35) {
      const s = (8192 / wavelen - 1) / 3;
      if (!(s > 0 && s < 1) || Math.abs(ratio - ((1 - s) / 8 + s)) > 1e-12) {
        throw new Error(`i=${i} not smoothed`);
      }
    }
    // The scale falls monotonically from 1 to 1/8 (the smooth band joins both ends continuously).
    if (ratio > prevRatio + 1e-15) throw new Error(`ratio not monotone at ${i}`);
    prevRatio = ratio;
  }
  if (ropeInvFreq(64, 1e4, { rope_type: "default" })[5] !== ropeInvFreq(64, 1e4)[5]) {
    throw new Error("default");
  }
  let threw = false;
  try {
    ropeInvFreq(64, 1e4, { rope_type: "yarn", factor: 4 });
  } catch {
    threw = true;
  }
  if (!threw) throw new Error("unsupported scaling must throw");
});

/** Checks got against both references; returns nothing, throws on failure. */
function checkRope(
  got: Float32Array,
  x: Float32Array,
  positions: Uint32Array,
  invFreq: Float64Array,
  tokens: number,
  heads: number,
  headDim: number,
  what: string,
  layout: { rowStride?: number; offset?: number } = {},
): void {
  const same = ropeRef(x, positions, invFreq, tokens, heads, headDim, { ...layout, f32Angle: true });
  assertClose(got, same, SAME_ANGLE_BOUND, `${what} (same f32 angle)`);
  const exact = ropeRef(x, positions, invFreq, tokens, heads, headDim, layout);
  const half = headDim / 2;
  const rowStride = layout.rowStride ?? heads * headDim;
  const offset = layout.offset ?? 0;
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const j = offset + t * rowStride + h * headDim + i;
        const bound = (Math.abs(x[j]) + Math.abs(x[j + half])) * angleBound(positions[t] * invFreq[i]) +
          1e-30;
        for (const e of [j, j + half]) {
          if (!(Math.abs(got[e] - exact[e]) <= bound)) {
            throw new Error(`${what}: t=${t} h=${h} i=${i} got ${got[e]} want ${exact[e]} (bound ${bound})`);
          }
        }
      }
    }
  }
}

Deno.test("ropeQK (q heads only) matches the CPU reference at positions 0, 1, 4095, 100000, 131071 (Qwen and Llama-3 freqs)", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const positions = new Uint32Array([0, 1, 4095, 100000, 131071, 77]);
  const tokens = positions.length;
  const cases: [number, number, Float64Array, string][] = [
    [12, 128, ropeInvFreq(128, 10000), "qwen θ=1e4"],
    [3, 64, ropeInvFreq(64, 500000, LLAMA31), "llama3-scaled θ=5e5"],
    [5, 8, ropeInvFreq(8, 10000), "d=8"],
  ];
  const gpos = ctx.upload(positions, "pos");
  for (const [heads, headDim, invFreq, what] of cases) {
    const x = randomF32(tokens * heads * headDim, next, 4);
    const gx = ctx.upload(x, "x");
    const ginv = uploadInvFreq(ctx, invFreq);
    ropeQK(ctx, gx, gx, gpos, ginv, tokens, heads, 0, headDim);
    checkRope(await ctx.readF32(gx), x, positions, invFreq, tokens, heads, headDim, `rope ${what}`);
    for (const b of [gx, ginv]) b.destroy();
  }
  gpos.destroy();
});

Deno.test("ropeQK rotates q (12 heads) and k (2 heads) in one dispatch, a batch with its own positions", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const tokens = 37; // prefill-like, not a multiple of anything
  const positions = new Uint32Array(tokens);
  for (let t = 0; t < tokens; t++) positions[t] = Math.floor(next() * 130000);
  const [qh, kh, hd] = [12, 2, 128];
  const invFreq = ropeInvFreq(hd, 1e6);
  const q = randomF32(tokens * qh * hd, next, 5);
  const k = randomF32(tokens * kh * hd, next, 5);
  const gq = ctx.upload(q, "q");
  const gk = ctx.upload(k, "k");
  const gpos = ctx.upload(positions, "pos");
  const ginv = uploadInvFreq(ctx, invFreq);
  const before = ctx.stats.dispatches;
  ropeQK(ctx, gq, gk, gpos, ginv, tokens, qh, kh, hd);
  if (ctx.stats.dispatches !== before + 1) throw new Error("ropeQK should be one dispatch");
  checkRope(await ctx.readF32(gq), q, positions, invFreq, tokens, qh, hd, "ropeQK q");
  checkRope(await ctx.readF32(gk), k, positions, invFreq, tokens, kh, hd, "ropeQK k");
  for (const b of [gq, gk, gpos, ginv]) b.destroy();
});

Deno.test("ropeQK on the q and k heads inside a fused [tokens, q|k|v] buffer leaves v and padding untouched", async () => {
  const ctx = await gpuContext();
  const seed = freshSeed();
  console.log(`seed ${seed}`);
  const next = rng(seed);
  const [tokens, qh, kh, hd] = [5, 4, 2, 16];
  const rowStride = (qh + 2 * kh) * hd;
  const offset = 3; // a leading offset in elements: shifts every row
  const x = randomF32(offset + tokens * rowStride + 7, next, 2);
  const positions = new Uint32Array([9, 0, 4095, 100000, 3]);
  const invFreq = ropeInvFreq(hd, 10000);
  const gx = ctx.upload(x, "qkv");
  const gpos = ctx.upload(positions, "pos");
  const ginv = uploadInvFreq(ctx, invFreq);
  ropeQK(ctx, gx, gx, gpos, ginv, tokens, qh, kh, hd, {
    qStride: rowStride,
    qOffset: offset,
    kStride: rowStride,
    kOffset: offset + qh * hd,
  });
  const got = await ctx.readF32(gx);
  checkRope(got, x, positions, invFreq, tokens, qh + kh, hd, "rope fused qkv", { rowStride, offset });
  for (let t = 0; t < tokens; t++) {
    const v0 = offset + t * rowStride + (qh + kh) * hd;
    for (let e = v0; e < v0 + kh * hd; e++) if (got[e] !== x[e]) throw new Error(`v element ${e} changed`);
  }
  for (let e = 0; e < offset; e++) if (got[e] !== x[e]) throw new Error(`leading element ${e} changed`);
  for (let e = offset + tokens * rowStride; e < x.length; e++) {
    if (got[e] !== x[e]) throw new Error(`trailing element ${e} changed`);
  }
  for (const b of [gx, gpos, ginv]) b.destroy();
});

Deno.test("ropeQK at position 0 is the identity", async () => {
  const ctx = await gpuContext();
  const [tokens, heads, hd] = [3, 3, 10];
  const x = new Float32Array(tokens * heads * hd).map((_, i) => i + 1);
  const gx = ctx.upload(x, "x");
  const gpos = ctx.upload(new Uint32Array([0, 0, 0]), "pos");
  const ginv = uploadInvFreq(ctx, ropeInvFreq(hd, 10000));
  ropeQK(ctx, gx, gx, gpos, ginv, tokens, heads, 0, hd);
  assertClose(await ctx.readF32(gx), x, 0, "rope at position 0");
  for (const b of [gx, gpos, ginv]) b.destroy();
});
