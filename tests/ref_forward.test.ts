/**
 * The CPU reference forward against golden outputs of an independent float32 implementation of the real
 * trained stories260K model (converted from llama2.c's layout, which checks the RoPE row permutation too).
 */
import assert from "node:assert/strict";
import { convertLlama2c } from "../tools/convert_llama2c.ts";
import { RefModel, refRopeInvFreq } from "../src/ref/forward.ts";
import { relError } from "./helpers.ts";

const FIXTURE = new URL("./fixtures/stories260K/", import.meta.url).pathname;

interface Golden {
  prompt: number[];
  positions: number;
  logits: number[][];
  greedy: number[];
}

let modelDir: Promise<string> | null = null;
/** Converts the fixture once per test file into a temp dir. */
function convertedDir(): Promise<string> {
  return modelDir ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "lethe-s260k-" });
    await convertLlama2c(`${FIXTURE}stories260K.bin`, dir);
    return dir;
  })();
}

function argmaxAndGap(x: Float32Array): { arg: number; gap: number } {
  let a = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[a]) a = i;
  let second = -Infinity;
  for (let i = 0; i < x.length; i++) if (i !== a && x[i] > second) second = x[i];
  return { arg: a, gap: x[a] - second };
}

for (const name of ["golden_bos", "golden_prompt4"]) {
  Deno.test(`ref forward: stories260K ${name} logits and greedy continuation`, async () => {
    const g: Golden = JSON.parse(await Deno.readTextFile(`${FIXTURE}${name}.json`));
    const model = await RefModel.load(await convertedDir());
    const prefill = model.forward(g.prompt, 0);
    assert.equal(prefill.length, g.prompt.length);
    let logits = prefill[prefill.length - 1];
    let pos = g.prompt.length;
    let matched = 0;
    let firstTie = -1; // the first near-tie step: agreement is only required before it
    // One argmax per position run: the prompt's last position through positions-1.
    const steps = g.positions - g.prompt.length + 1;
    assert.equal(g.greedy.length, steps);
    let worst = 0;
    for (let s = 0; s < steps; s++) {
      if (s < g.logits.length) {
        const err = relError(logits, g.logits[s]);
        worst = Math.max(worst, err);
        assert(err <= 1e-4, `${name} step ${s}: logits relative error ${err.toExponential(3)} > 1e-4`);
      }
      const { arg, gap } = argmaxAndGap(logits);
      if (arg !== g.greedy[s]) {
        assert(
          firstTie >= 0 || gap < 1e-3,
          `${name} step ${s}: argmax ${arg} != golden ${g.greedy[s]} (top-2 gap ${gap})`,
        );
        break;
      }
      matched++;
      if (gap < 1e-3 && firstTie < 0) firstTie = s;
      if (s + 1 < steps) logits = model.forward([arg], pos++)[0];
    }
    console.log(
      `${name}: first ${g.logits.length} steps' logits within ${
        worst.toExponential(2)
      } relative; greedy matched ` +
        `${matched}/${steps}${firstTie >= 0 ? ` (first near-tie at step ${firstTie})` : ""}`,
    );
    if (firstTie < 0) assert.equal(matched, steps);
  });
}

Deno.test("ref forward: KV cache across calls equals one prefill; rewind and reset", async () => {
  const model = await RefModel.load(await convertedDir());
  const tokens = [1, 400, 300, 200, 17];
  const whole = model.forward(tokens, 0);
  model.reset();
  const parts = [...model.forward(tokens.slice(0, 2), 0), ...model.forward(tokens.slice(2), 2)];
  for (let i = 0; i < tokens.length; i++) assert.equal(relError(parts[i], whole[i]), 0);
  // Rewinding to position 3 forgets token 3 onward and recomputes it identically.
  const again = model.forward([200, 17], 3);
  assert.equal(relError(again[1], whole[4]), 0);
  assert.equal(model.length, 5);
  assert.throws(() => model.forward([1], 7), RangeError);
  assert.throws(() => model.forward([512], 0), RangeError);
  model.reset();
  assert.equal(model.length, 0);
});

Deno.test("ref forward: llama3 RoPE scaling keeps high, divides low, blends middle frequencies", () => {
  const scaling = {
    type: "llama3" as const,
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  };
  const plain = refRopeInvFreq(128, 500000, null);
  const scaled = refRopeInvFreq(128, 500000, scaling);
  assert.equal(plain[0], 1);
  assert.equal(scaled[0], 1); // wavelength 2π < 8192/4
  const last = plain.length - 1; // wavelength far beyond 8192
  assert(Math.abs(scaled[last] - plain[last] / 8) < 1e-18);
  let blended = 0;
  for (let i = 0; i < plain.length; i++) {
    assert(scaled[i] <= plain[i] && scaled[i] >= plain[i] / 8 - 1e-18);
    const wl = (2 * Math.PI) / plain[i];
    if (wl > 2048 && wl < 8192) {
      blended++;
      assert(scaled[i] < plain[i] && scaled[i] > plain[i] / 8);
    }
  }
  assert(blended > 0);
});
