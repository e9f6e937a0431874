import { add } from "../bench/dev/add.ts";
import { addRef } from "../src/ref/elementwise.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

Deno.test("add matches the CPU reference (odd sizes, over one workgroup row)", async () => {
  const ctx = await gpuContext();
  const next = rng(freshSeed());
  for (const n of [1, 255, 257, 10_001]) {
    const a = randomF32(n, next);
    const b = randomF32(n, next);
    const ga = ctx.upload(a, "a");
    const gb = ctx.upload(b, "b");
    const out = ctx.createBuffer(n * 4, "out");
    poison(ctx, out);
    add(ctx, ga, gb, out, n);
    assertClose(await ctx.readF32(out), addRef(a, b), 0, `add n=${n}`);
    for (const buf of [ga, gb, out]) buf.destroy();
  }
});
