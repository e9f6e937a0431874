// Checks that Lethe's TypeScript tokenizer encodes texts to exactly the ids the Python trainer used.
// Usage: deno run -A tools/train/check_parity.ts MODEL_DIR PARITY_JSON   (JSON: [{text, ids}])
import "../../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { Tokenizer } from "../../tokenizer/mod.ts";

const [dir, file] = Deno.args;
const tok = await Tokenizer.fromFile(`${dir}/tokenizer.json`);
const cases = JSON.parse(await Deno.readTextFile(file)) as { text: string; ids: number[] }[];
let bad = 0;
for (const c of cases) {
  const got = tok.encode(c.text, { addSpecialTokens: false });
  const same = got.length === c.ids.length && got.every((v, i) => v === c.ids[i]);
  const round = tok.decode(got) === c.text;
  if (!same || !round) {
    bad++;
    if (bad <= 3) {
      console.log("MISMATCH", JSON.stringify(c.text.slice(0, 80)), got.slice(0, 20), c.ids.slice(0, 20));
    }
  }
}
console.log(`${cases.length - bad}/${cases.length} texts encode identically and round-trip`);
if (bad) Deno.exit(1);
