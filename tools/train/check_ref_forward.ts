// Compares Lethe's CPU reference forward (src/ref/forward.ts) with the PyTorch logits written by
// dump_logits.py, over the prompt and PyTorch's greedy continuation (teacher-forced), and checks that
// greedy argmax agrees at every position.
// Usage: deno run -A tools/train/check_ref_forward.ts MODEL_DIR LOGITS_JSON
import "../../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { RefModel } from "../../src/ref/forward.ts";

const [dir, file] = Deno.args;
const model = await RefModel.load(dir);
const cases = JSON.parse(await Deno.readTextFile(file)) as {
  family: string;
  prompt_ids: number[];
  greedy_ids: number[];
  logits: number[][];
}[];
let worst = 0;
let argmaxMismatch = 0;
let positions = 0;
for (const c of cases) {
  const ids = [...c.prompt_ids, ...c.greedy_ids];
  model.reset();
  const got = model.forward(ids, 0);
  let caseWorst = 0;
  for (let p = 0; p < ids.length; p++) {
    const want = c.logits[p];
    let maxAbs = 0, maxDiff = 0, am = 0, bm = 0;
    for (let i = 0; i < want.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(want[i]));
      maxDiff = Math.max(maxDiff, Math.abs(want[i] - got[p][i]));
      if (want[i] > want[am]) am = i;
      if (got[p][i] > got[p][bm]) bm = i;
    }
    caseWorst = Math.max(caseWorst, maxDiff / maxAbs);
    // Only count argmax disagreements where PyTorch's top choice is clear (ties can flip either way).
    if (am !== bm && Math.abs(want[am] - want[bm]) > 1e-3) argmaxMismatch++;
    positions++;
  }
  worst = Math.max(worst, caseWorst);
  console.log(
    `${c.family}: ${ids.length} tokens, max |Δlogit| / max |logit| = ${caseWorst.toExponential(2)}`,
  );
}
console.log(
  `worst relative error ${
    worst.toExponential(2)
  } over ${positions} positions; argmax mismatches: ${argmaxMismatch}`,
);
if (worst > 1e-2 || argmaxMismatch > 0) Deno.exit(1);
