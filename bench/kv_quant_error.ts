/**
 * Why int8 KV is quantized per token (and head), not per channel for keys as KIVI does: measured on real
 * caches. A generation runs with f32 KV; every layer's K and V are read back and quantized on the CPU both ways —
 * per token and head (one scale per head of each token: what src/ops/kv_layout.ts stores) and per channel over
 * groups of 32 consecutive tokens (KIVI's keys) — and the relative RMS error of each is printed, with the
 * attention-logit error q·k for the cached keys used as queries (a proxy for the next tokens' queries).
 *
 *   deno run -A bench/kv_quant_error.ts [--model models/lethe-reasoner-tiny] [--tokens 300]
 */
import "../src/io/deno_fs.ts";
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "models/lethe-reasoner-tiny" },
    tokens: { type: "string", default: "300" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log("usage: deno run -A bench/kv_quant_error.ts [--model DIR] [--tokens N]");
  Deno.exit(0);
}

const q8 = (x: number, scale: number) =>
  scale === 0 ? 0 : Math.max(-127, Math.min(127, Math.round(x / scale * 127))) / 127 * scale;

/** Per token and head: one scale per (token, head). */
function perToken(x: Float32Array, rows: number, heads: number, hd: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      const o = (r * heads + h) * hd;
      let m = 0;
      for (let d = 0; d < hd; d++) m = Math.max(m, Math.abs(x[o + d]));
      for (let d = 0; d < hd; d++) out[o + d] = q8(x[o + d], m);
    }
  }
  return out;
}

/** Per channel over groups of `g` tokens: one scale per (group, channel). */
function perChannel(x: Float32Array, rows: number, width: number, g = 32): Float32Array {
  const out = new Float32Array(x.length);
  for (let r0 = 0; r0 < rows; r0 += g) {
    for (let c = 0; c < width; c++) {
      let m = 0;
      for (let r = r0; r < Math.min(rows, r0 + g); r++) m = Math.max(m, Math.abs(x[r * width + c]));
      for (let r = r0; r < Math.min(rows, r0 + g); r++) out[r * width + c] = q8(x[r * width + c], m);
    }
  }
  return out;
}

function relRms(a: Float32Array, b: Float32Array): number {
  let e = 0, n = 0;
  for (let i = 0; i < a.length; i++) e += (a[i] - b[i]) ** 2, n += a[i] ** 2;
  return Math.sqrt(e / n);
}

/** Relative RMS error of q·k over all (query, key) pairs of one head, queries = the exact keys. */
function logitError(k: Float32Array, kq: Float32Array, rows: number, heads: number, hd: number): number {
  let e = 0, n = 0;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < rows; i += 7) {
      for (let j = 0; j < rows; j++) {
        let exact = 0, approx = 0;
        for (let d = 0; d < hd; d++) {
          const q = k[(i * heads + h) * hd + d];
          exact += q * k[(j * heads + h) * hd + d];
          approx += q * kq[(j * heads + h) * hd + d];
        }
        e += (exact - approx) ** 2, n += exact ** 2;
      }
    }
  }
  return Math.sqrt(e / n);
}

const engine = await Engine.load(values.model!, { progress: false });
const c = engine.config;
const seq = engine.newSequence({ policy: "full", dtype: "f32" }, 1024);
const prompt = engine.tokenizer
  ? engine.tokenizer.encodeChat(
    [{ role: "user", content: "add the numbers 85 23 67 41 19 72 33 8." }],
    undefined,
    {
      specialTokens: "plain",
    },
  )
  : [1, 400, 300, 200];
let logits = await engine.ctx.readF32(engine.forward.prefill(seq, prompt), 0, c.vocabSize);
for (let s = 0; s < Number(values.tokens); s++) {
  const next = logits.indexOf(Math.max(...logits));
  logits = await engine.ctx.readF32(engine.forward.decode([seq], [next]), 0, c.vocabSize);
}
const width = c.numKvHeads * c.headDim;
console.log(`${values.model}: ${seq.kv.layers[0].len} tokens, ${c.numKvHeads} KV heads × ${c.headDim}`);
console.log(
  "| layer | K per token | K per channel (32) | K·q per token | K·q per channel | V per token | V per channel |",
);
console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
const f = (x: number) => x.toExponential(2);
for (let l = 0; l < c.numLayers; l++) {
  const L = seq.kv.layers[l];
  const k = await engine.ctx.readF32(L.k.buffer, L.k.offset, L.len * width);
  const v = await engine.ctx.readF32(L.v.buffer, L.v.offset, L.len * width);
  const kt = perToken(k, L.len, c.numKvHeads, c.headDim), kc = perChannel(k, L.len, width);
  const vt = perToken(v, L.len, c.numKvHeads, c.headDim), vc = perChannel(v, L.len, width);
  console.log(
    `| ${l} | ${f(relRms(k, kt))} | ${f(relRms(k, kc))} | ${
      f(logitError(k, kt, L.len, c.numKvHeads, c.headDim))
    } | ${f(logitError(k, kc, L.len, c.numKvHeads, c.headDim))} | ${f(relRms(v, vt))} | ${
      f(relRms(v, vc))
    } |`,
  );
}
seq.kv.destroy();
engine.destroy();
