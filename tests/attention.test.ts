import { attentionDecodeBatch, attentionPrefill, decodeBatchMax } from "../src/ops/attention.ts";
import { type KvDtype, kvLayout } from "../src/ops/kv_layout.ts";
import { attentionDecodeRef, attentionPrefillRef, type AttentionShape } from "../src/ref/attention.ts";
import { decodeKvRows, encodeKvRows } from "../src/ref/kv_codec.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

// f32 throughout; the GPU sums in a different order (split-K chunks, vec4 dots) than the f64 reference.
// Outputs and scores stay within 2e-5 of the reference scale for len ≤ 4097 (measured ~1e-6).
const OUT_BOUND = 2e-5;
const SCORE_BOUND = 2e-5;

const SHAPES: AttentionShape[] = [
  { nHeads: 12, nKvHeads: 2, headDim: 128 },
  { nHeads: 8, nKvHeads: 4, headDim: 64 },
  { nHeads: 4, nKvHeads: 4, headDim: 128 },
  { nHeads: 8, nKvHeads: 4, headDim: 8 },
];

const seed = freshSeed();
console.log(`attention tests: LETHE_TEST_SEED=${seed}`);
const next = rng(seed);

/** K/V with `capacity` slots; the slots past `len` are NaN so reading them would poison the result. */
function kvBuffers(shape: AttentionShape, len: number, capacity: number, scale = 1) {
  const row = shape.nKvHeads * shape.headDim;
  const k = randomF32(len * row, next, scale);
  const v = randomF32(len * row, next);
  const pad = (a: Float32Array) => {
    const b = new Float32Array(capacity * row).fill(NaN);
    b.set(a);
    return b;
  };
  return { k, v, kPad: pad(k), vPad: pad(v) };
}

Deno.test("decode attention matches the reference (outputs, fresh and decayed scores)", async () => {
  const ctx = await gpuContext();
  const cases: [AttentionShape, number][] = [];
  for (const s of SHAPES) for (const len of [1, 7, 300]) cases.push([s, len]);
  cases.push([SHAPES[0], 4097], [SHAPES[3], 4097], [SHAPES[0], 32768]);
  for (const [shape, len] of cases) {
    const what = `decode ${shape.nHeads}/${shape.nKvHeads}×${shape.headDim} len=${len}`;
    // K scaled up so the softmax is peaked rather than flat (a flat one hides indexing errors).
    const { k, v, kPad, vPad } = kvBuffers(shape, len, len + 5, 3);
    const q = randomF32(shape.nHeads * shape.headDim, next, 3);
    const ref = attentionDecodeRef(shape, q, k, v, len);
    // q and out at a non-zero element offset inside bigger buffers; scores at an offset too.
    const qOff = 8, outOff = 4, sOff = 3;
    const qBuf = new Float32Array(qOff + q.length + 4).fill(NaN);
    qBuf.set(q, qOff);
    const gq = ctx.upload(qBuf, "q");
    const gk = ctx.upload(kPad, "k");
    const gv = ctx.upload(vPad, "v");
    const out = ctx.createBuffer((outOff + q.length) * 4, "out");
    const fresh = ctx.createBuffer((sOff + len + 2) * 4, "scores");
    const prior = randomF32(sOff + len + 2, next).map(Math.abs);
    const decayed = ctx.upload(prior, "decayed");
    poison(ctx, out);
    poison(ctx, fresh);
    attentionDecodeBatch(ctx, {
      ...shape,
      q: gq,
      qOffset: qOff,
      out,
      outOffset: outOff,
      seqs: [{ k: gk, v: gv, len, scores: { buffer: fresh, offset: sOff } }],
    });
    const gamma = 0.9;
    attentionDecodeBatch(ctx, {
      ...shape,
      q: gq,
      qOffset: qOff,
      out,
      outOffset: outOff,
      seqs: [{ k: gk, v: gv, len, scores: { buffer: decayed, offset: sOff, gamma } }],
    });
    const o = await ctx.readF32(out);
    assertClose(o.subarray(outOff), ref.out, OUT_BOUND, `${what} out`);
    const sc = await ctx.readF32(fresh);
    assertClose(sc.subarray(sOff, sOff + len), ref.score, SCORE_BOUND, `${what} scores`);
    // Untouched outside [sOff, sOff + len).
    if (!Number.isNaN(sc[0]) || !Number.isNaN(sc[sOff + len])) {
      throw new Error(`${what}: wrote outside scores`);
    }
    const dc = await ctx.readF32(decayed);
    const want = new Float64Array(len);
    for (let j = 0; j < len; j++) want[j] = gamma * prior[sOff + j] + ref.score[j];
    assertClose(dc.subarray(sOff, sOff + len), want, SCORE_BOUND, `${what} decayed scores`);
    if (dc[0] !== prior[0] || dc[sOff + len] !== prior[sOff + len]) {
      throw new Error(`${what}: decayed outside`);
    }
    // Scores sum to nHeads (each head's probabilities sum to 1).
    let total = 0;
    for (let j = 0; j < len; j++) total += sc[sOff + j];
    if (Math.abs(total - shape.nHeads) > 1e-3 * shape.nHeads) throw new Error(`${what}: Σ scores ${total}`);
    for (const b of [gq, gk, gv, out, fresh, decayed]) b.destroy();
  }
});

Deno.test("batched decode attention: every sequence equals the reference, scores only where asked", async () => {
  const ctx = await gpuContext();
  // Lengths across chunk boundaries; some sequences score (fresh or decayed), some do not; a batch larger
  // than one call takes (decodeBatchMax) exercises the split into groups.
  for (
    const [shape, lens] of [
      [SHAPES[0], [1, 300, 129, 7, 4097]],
      [
        SHAPES[3],
        Array.from(
          { length: decodeBatchMax(SHAPES[3].nHeads * SHAPES[3].headDim) + 3 },
          (_, i) => 1 + 37 * i,
        ),
      ],
    ] as [AttentionShape, number[]][]
  ) {
    for (const texture of [true, false]) {
      const what =
        `batch of ${lens.length} ${shape.nHeads}/${shape.nKvHeads}×${shape.headDim} texture=${texture}`;
      const qRow = shape.nHeads * shape.headDim;
      const B = lens.length;
      const qOff = 4;
      const qAll = randomF32(qOff + B * qRow, next, 3);
      const gq = ctx.upload(qAll, "q");
      const out = ctx.createBuffer((qOff + B * qRow) * 4, "out");
      poison(ctx, out);
      const seqs = lens.map((len, b) => {
        const { k, v, kPad, vPad } = kvBuffers(shape, len, len + 3, 3);
        const mode = b % 3; // 0: no scores, 1: fresh, 2: decayed
        const prior = randomF32(len + 1, next).map(Math.abs);
        const score = ctx.upload(mode === 1 ? new Float32Array(len + 1).fill(NaN) : prior, "score");
        return {
          k,
          v,
          len,
          mode,
          prior,
          score,
          gk: ctx.upload(kPad, "k"),
          gv: ctx.upload(vPad, "v"),
        };
      });
      const gamma = 0.8;
      attentionDecodeBatch(ctx, {
        ...shape,
        q: gq,
        qOffset: qOff,
        out,
        outOffset: qOff,
        texture,
        seqs: seqs.map((s) => ({
          k: s.gk,
          v: s.gv,
          len: s.len,
          scores: s.mode === 0 ? undefined : { buffer: s.score, gamma: s.mode === 2 ? gamma : undefined },
        })),
      });
      const o = await ctx.readF32(out);
      for (let b = 0; b < B; b++) {
        const s = seqs[b];
        const q = qAll.subarray(qOff + b * qRow, qOff + (b + 1) * qRow);
        const ref = attentionDecodeRef(shape, q, s.k, s.v, s.len);
        assertClose(
          o.subarray(qOff + b * qRow, qOff + (b + 1) * qRow),
          ref.out,
          OUT_BOUND,
          `${what} seq ${b} out`,
        );
        const sc = await ctx.readF32(s.score);
        if (s.mode === 0) {
          if (sc.some((x, j) => x !== s.prior[j])) {
            throw new Error(`${what} seq ${b}: scores written unasked`);
          }
        } else {
          const want = Float64Array.from(ref.score, (x, j) => (s.mode === 2 ? gamma * s.prior[j] : 0) + x);
          assertClose(sc.subarray(0, s.len), want, SCORE_BOUND, `${what} seq ${b} scores`);
          if (!Object.is(sc[s.len], s.mode === 1 ? NaN : s.prior[s.len])) {
            throw new Error(`${what} seq ${b}: wrote past len`);
          }
        }
        for (const x of [s.gk, s.gv, s.score]) x.destroy();
      }
      gq.destroy();
      out.destroy();
    }
  }
});

Deno.test("batched decode attention over regions of shared buffers (the KV arena layout)", async () => {
  const ctx = await gpuContext();
  const shape = SHAPES[1];
  const row = shape.nKvHeads * shape.headDim;
  const align = 64; // slots: keeps every region offset a valid binding offset on any adapter
  // Sequences alternate between two shared buffer sets (so runs break on the buffer path), with gaps of NaN
  // between regions; scores in one shared buffer per set, at the region's binding offset plus an element offset.
  const lens = [5, 300, 1, 129, 64, 17, 200];
  const bases: number[] = [];
  const used = [0, 0];
  lens.forEach((len, i) => {
    const set = i % 2;
    bases.push(used[set]);
    used[set] += Math.ceil((len + 40) / align) * align;
  });
  for (const texture of [true, false]) {
    const what = `shared regions texture=${texture}`;
    const kAll = [0, 1].map((set) => new Float32Array(used[set] * row).fill(NaN));
    const vAll = [0, 1].map((set) => new Float32Array(used[set] * row).fill(NaN));
    const prior = [0, 1].map((set) => randomF32(used[set], next).map(Math.abs));
    const seqs = lens.map((len, i) => {
      const { k, v } = kvBuffers(shape, len, len, 3);
      kAll[i % 2].set(k, bases[i] * row);
      vAll[i % 2].set(v, bases[i] * row);
      return { k, v, len };
    });
    const gk = kAll.map((a) => ctx.upload(a, "k-arena"));
    const gv = vAll.map((a) => ctx.upload(a, "v-arena"));
    const gs = prior.map((a) => ctx.upload(a, "score-arena"));
    const B = lens.length, qRow = shape.nHeads * shape.headDim;
    const qAll = randomF32(B * qRow, next, 3);
    const gq = ctx.upload(qAll, "q");
    const out = ctx.createBuffer(B * qRow * 4, "out");
    poison(ctx, out);
    const gamma = 0.9;
    attentionDecodeBatch(ctx, {
      ...shape,
      q: gq,
      out,
      texture,
      seqs: seqs.map((s, i) => {
        const set = i % 2, bytes = bases[i] * row * 4, size = (s.len + 8) * row * 4;
        return {
          k: { buffer: gk[set], offset: bytes, size },
          v: { buffer: gv[set], offset: bytes, size },
          len: s.len,
          // Region binding at the base, the first score 2 elements in; every third sequence decays.
          scores: {
            buffer: { buffer: gs[set], offset: bases[i] * 4 },
            offset: 2,
            gamma: i % 3 === 0 ? gamma : undefined,
          },
        };
      }),
    });
    const o = await ctx.readF32(out);
    const sc = await Promise.all(gs.map((b) => ctx.readF32(b)));
    const touched = [new Set<number>(), new Set<number>()];
    seqs.forEach((s, i) => {
      const ref = attentionDecodeRef(shape, qAll.subarray(i * qRow, (i + 1) * qRow), s.k, s.v, s.len);
      assertClose(o.subarray(i * qRow, (i + 1) * qRow), ref.out, OUT_BOUND, `${what} seq ${i} out`);
      const set = i % 2, first = bases[i] + 2;
      const want = Float64Array.from(
        ref.score,
        (x, j) => (i % 3 === 0 ? gamma * prior[set][first + j] : 0) + x,
      );
      assertClose(sc[set].subarray(first, first + s.len), want, SCORE_BOUND, `${what} seq ${i} scores`);
      for (let j = 0; j < s.len; j++) touched[set].add(first + j);
    });
    for (const set of [0, 1]) {
      sc[set].forEach((x, j) => {
        if (!touched[set].has(j) && x !== prior[set][j]) {
          throw new Error(`${what}: score ${j} of set ${set} written`);
        }
      });
    }
    for (const b of [...gk, ...gv, ...gs, gq, out]) b.destroy();
  }
});

Deno.test("decode attention without scores, storage-buffer and texture K/V paths", async () => {
  const ctx = await gpuContext();
  for (
    const [shape, len] of [[SHAPES[1], 129], [SHAPES[0], 1000], [SHAPES[3], 3000]] as [
      AttentionShape,
      number,
    ][]
  ) {
    const { k, v, kPad, vPad } = kvBuffers(shape, len, len, 3);
    const q = randomF32(shape.nHeads * shape.headDim, next, 3);
    const ref = attentionDecodeRef(shape, q, k, v, len);
    const gq = ctx.upload(q, "q"), gk = ctx.upload(kPad, "k"), gv = ctx.upload(vPad, "v");
    const out = ctx.createBuffer(q.length * 4, "out");
    poison(ctx, out);
    for (const texture of [false, true]) {
      poison(ctx, out);
      attentionDecodeBatch(ctx, { ...shape, q: gq, out, seqs: [{ k: gk, v: gv, len }], texture });
      assertClose(
        await ctx.readF32(out),
        ref.out,
        OUT_BOUND,
        `decode no-scores len=${len} texture=${texture}`,
      );
    }
    for (const b of [gq, gk, gv, out]) b.destroy();
  }
});

Deno.test("prefill attention matches the reference (causal, start 0 and > 0, window scores, both K/V paths)", async () => {
  const ctx = await gpuContext();
  const cases: [AttentionShape, number, number, number][] = [];
  // [shape, T, start, window]
  for (const s of SHAPES) {
    cases.push([s, 1, 0, 1], [s, 17, 0, 8], [s, 17, 40, 32]);
  }
  cases.push([SHAPES[0], 100, 0, 32], [SHAPES[1], 100, 77, 32], [SHAPES[3], 100, 300, 100]);
  for (const [shape, T, start, W] of cases) {
    const what = `prefill ${shape.nHeads}/${shape.nKvHeads}×${shape.headDim} T=${T} start=${start} W=${W}`;
    const n = start + T;
    const { k, v, kPad, vPad } = kvBuffers(shape, n, n + 3, 3);
    const q = randomF32(T * shape.nHeads * shape.headDim, next, 3);
    const ref = attentionPrefillRef(shape, q, k, v, T, start, W);
    const gq = ctx.upload(q, "q"), gk = ctx.upload(kPad, "k"), gv = ctx.upload(vPad, "v");
    const out = ctx.createBuffer(q.length * 4, "out");
    const sc = ctx.createBuffer((n + 1) * 4, "scores");
    for (const texture of [false, true]) {
      poison(ctx, out);
      poison(ctx, sc);
      const window = { buffer: sc, size: W };
      attentionPrefill(ctx, { ...shape, q: gq, k: gk, v: gv, out, T, start, window, texture });
      assertClose(await ctx.readF32(out), ref.out, OUT_BOUND, `${what} texture=${texture} out`);
      const s = await ctx.readF32(sc);
      assertClose(s.subarray(0, n), ref.score, SCORE_BOUND, `${what} texture=${texture} scores`);
      if (!Number.isNaN(s[n])) throw new Error(`${what}: wrote past the scores`);
    }
    for (const b of [gq, gk, gv, out, sc]) b.destroy();
  }
});

Deno.test("prefill window scores accumulate with decay; q, out and scores at offsets", async () => {
  const ctx = await gpuContext();
  const shape = SHAPES[1];
  const T = 20, start = 5, W = 6, n = start + T, gamma = 0.5;
  const qOff = 12, outOff = 8, sOff = 3;
  const { k, v, kPad, vPad } = kvBuffers(shape, n, n, 2);
  const q = randomF32(T * shape.nHeads * shape.headDim, next, 2);
  const ref = attentionPrefillRef(shape, q, k, v, T, start, W);
  const prior = randomF32(sOff + n + 1, next);
  const qBuf = new Float32Array(qOff + q.length).fill(NaN);
  qBuf.set(q, qOff);
  const gq = ctx.upload(qBuf, "q"), gk = ctx.upload(kPad, "k"), gv = ctx.upload(vPad, "v");
  const out = ctx.createBuffer((outOff + q.length + 4) * 4, "out");
  poison(ctx, out);
  const sc = ctx.upload(prior, "scores");
  attentionPrefill(ctx, {
    ...shape,
    q: gq,
    qOffset: qOff,
    k: gk,
    v: gv,
    out,
    outOffset: outOff,
    T,
    start,
    window: { buffer: sc, offset: sOff, size: W, gamma },
  });
  const o = await ctx.readF32(out);
  assertClose(o.subarray(outOff, outOff + q.length), ref.out, OUT_BOUND, "prefill at offsets out");
  if (!Number.isNaN(o[0]) || !Number.isNaN(o[outOff + q.length])) {
    throw new Error("prefill wrote outside out");
  }
  const got = await ctx.readF32(sc);
  const want = ref.score.map((x, j) => gamma * prior[sOff + j] + x);
  assertClose(got.subarray(sOff, sOff + n), want, SCORE_BOUND, "prefill decayed window scores");
  if (got[0] !== prior[0] || got[sOff + n] !== prior[sOff + n]) {
    throw new Error("window scores outside range");
  }
  for (const b of [gq, gk, gv, out, sc]) b.destroy();
});

Deno.test("attention reads f16 and int8 K/V (decode batch with mixed dtypes, prefill; both K/V paths) as the reference over the decoded values", async () => {
  const ctx = await gpuContext();
  const shapes = [SHAPES[1], SHAPES[3], { nHeads: 12, nKvHeads: 2, headDim: 128 }];
  for (const shape of shapes) {
    const qRow = shape.nHeads * shape.headDim;
    // Stored words of `rows` random rows (NaN words past them), and the values attention must see.
    const stored = (dtype: KvDtype, rows: number, capacity: number) => {
      const layout = kvLayout(dtype, shape.nKvHeads, shape.headDim);
      const raw = (scale: number) => {
        const x = randomF32(rows * layout.values, next, scale);
        const words = new Uint32Array(capacity * layout.words).fill(0x7fc00000);
        words.set(encodeKvRows(layout, x, rows));
        return { words, seen: decodeKvRows(layout, words, rows) };
      };
      return { k: raw(3), v: raw(1) };
    };
    // Decode: one batch with a sequence of each dtype (the op splits runs by dtype).
    const lens = [130, 7, 300];
    const dtypes: KvDtype[] = ["f16", "int8", "f32"];
    const data = dtypes.map((d, i) => stored(d, lens[i], lens[i] + 5));
    const q = randomF32(lens.length * qRow, next, 3);
    const gq = ctx.upload(q, "q");
    const bufs = data.map((x) => ({ k: ctx.upload(x.k.words, "k"), v: ctx.upload(x.v.words, "v") }));
    const out = ctx.createBuffer(q.length * 4, "out");
    for (const texture of [false, true]) {
      poison(ctx, out);
      attentionDecodeBatch(ctx, {
        ...shape,
        q: gq,
        out,
        texture,
        seqs: dtypes.map((dtype, i) => ({ k: bufs[i].k, v: bufs[i].v, len: lens[i], dtype })),
      });
      const o = await ctx.readF32(out);
      dtypes.forEach((dtype, i) => {
        const ref = attentionDecodeRef(
          shape,
          q.subarray(i * qRow, (i + 1) * qRow),
          data[i].k.seen,
          data[i].v.seen,
          lens[i],
        );
        assertClose(
          o.subarray(i * qRow, (i + 1) * qRow),
          ref.out,
          OUT_BOUND,
          `decode ${dtype} hd=${shape.headDim} texture=${texture}`,
        );
      });
    }
    // Prefill over each dtype, with window scores.
    for (const dtype of ["f16", "int8"] as KvDtype[]) {
      const T = 19, start = 30, n = start + T;
      const x = stored(dtype, n, n + 3);
      const qp = randomF32(T * qRow, next, 3);
      const ref = attentionPrefillRef(shape, qp, x.k.seen, x.v.seen, T, start, 8);
      const gqp = ctx.upload(qp, "q"), gk = ctx.upload(x.k.words, "k"), gv = ctx.upload(x.v.words, "v");
      const o = ctx.createBuffer(qp.length * 4, "out"), sc = ctx.createBuffer(n * 4, "scores");
      for (const texture of [false, true]) {
        poison(ctx, o);
        poison(ctx, sc);
        attentionPrefill(ctx, {
          ...shape,
          q: gqp,
          k: gk,
          v: gv,
          kvDtype: dtype,
          out: o,
          T,
          start,
          window: { buffer: sc, size: 8 },
          texture,
        });
        const what = `prefill ${dtype} hd=${shape.headDim} texture=${texture}`;
        assertClose(await ctx.readF32(o), ref.out, OUT_BOUND, `${what} out`);
        assertClose(await ctx.readF32(sc), ref.score, SCORE_BOUND, `${what} scores`);
      }
      for (const b of [gqp, gk, gv, o, sc]) b.destroy();
    }
    for (const b of [gq, out, ...bufs.flatMap((x) => [x.k, x.v])]) b.destroy();
  }
});
