// Runs the held-out prompts of dump_logits.py's JSON through Lethe's GPU Engine (greedy, full KV) and
// compares the generated ids with PyTorch's greedy ids, and the final answers with the expected ones.
// Usage: XDG_RUNTIME_DIR=/tmp deno run -A tools/train/check_engine.ts MODEL_DIR LOGITS_JSON
import "../../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { Engine } from "../../src/engine/engine.ts";

const [dir, file] = Deno.args;
const cases = JSON.parse(await Deno.readTextFile(file)) as {
  family: string;
  prompt_ids: number[];
  greedy_ids: number[];
}[];
const engine = await Engine.load(dir, { progress: false });
let same = 0;
for (const c of cases) {
  const t0 = performance.now();
  const r = await engine.generate(c.prompt_ids, { maxTokens: 512, kv: { policy: "full" } });
  const want = c.greedy_ids;
  // PyTorch's list ends with EOS; the Engine stops at EOS (it may or may not include it in ids).
  const got = r.ids;
  const n = Math.min(got.length, want.length);
  let agree = 0;
  while (agree < n && got[agree] === want[agree]) agree++;
  const identical = agree === want.length || (agree === want.length - 1 && got.length === want.length - 1);
  if (identical) same++;
  console.log(
    `${c.family}: torch ${want.length} tokens, engine ${got.length} tokens, agree on first ${agree}` +
      `${identical ? " (identical)" : ""}, ${((performance.now() - t0) / 1000).toFixed(1)}s`,
  );
}
console.log(`${same}/${cases.length} greedy generations identical to PyTorch`);
if (same !== cases.length) Deno.exit(1);
