/** Shared test helpers: one GPU context per test file, seeded random inputs, poisoning, error measures. */
import "../src/io/deno_fs.ts"; // local model paths and the terminal progress bar
import { GpuContext } from "../src/gpu/context.ts";
import { type GpuPath, parseGpuPath } from "../src/gpu/device.ts";
import { mulberry32 } from "../src/util/rng.ts";

const shared = new Map<GpuPath, Promise<GpuContext>>();

/**
 * One GPU context per kernel path shared by the tests of a file (creating devices is slow on the CPU
 * adapter). The default path is `LETHE_GPU_PATH` (auto, texture or storage) when set, else "auto"; tests that
 * cover both paths ask for "texture" and "storage".
 */
export function gpuContext(path?: GpuPath): Promise<GpuContext> {
  const p = path ?? parseGpuPath(Deno.env.get("LETHE_GPU_PATH") ?? "auto", "LETHE_GPU_PATH");
  let c = shared.get(p);
  if (!c) shared.set(p, c = GpuContext.create({ gpuPath: p }));
  return c;
}

/** Fresh random seed per run (printed so a failure can be replayed with LETHE_TEST_SEED). */
export function freshSeed(): number {
  const fixed = Deno.env.get("LETHE_TEST_SEED");
  return fixed ? Number(fixed) : (Math.random() * 2 ** 31) >>> 0;
}

/** Mulberry32: small, fast, seeded. */
export const rng: (seed: number) => () => number = mulberry32;

/** `n` uniform values in [-scale, scale). */
export function randomF32(n: number, next: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 2 - 1) * scale;
  return out;
}

/** Fills a buffer with NaN so any element a kernel fails to write shows up as a failure. */
export function poison(ctx: GpuContext, buffer: GPUBuffer): void {
  const nan = new Uint32Array(buffer.size / 4).fill(0x7fc00000);
  ctx.write(buffer, nan);
}

/** max |a-b| / max(max |b|, tiny): relative error against the reference's scale; NaN anywhere → Infinity. */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (!Number.isFinite(a) && a !== e) return Infinity;
    maxDiff = Math.max(maxDiff, Math.abs(a - e));
    maxRef = Math.max(maxRef, Math.abs(e));
  }
  return maxDiff / Math.max(maxRef, 1e-30);
}

/**
 * Throws with a readable message when the relative error exceeds `bound`. `scale`, when given, is the size the
 * error is measured against if larger than max |expected| — for sums whose terms cancel (a dot product of
 * O(1) terms can be ~1e-4), the terms' magnitude, which is what f32 rounding errors scale with.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  bound: number,
  what: string,
  scale = 0,
): void {
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) maxRef = Math.max(maxRef, Math.abs(expected[i]));
  const err = relError(actual, expected) * (maxRef >= scale ? 1 : maxRef / scale);
  if (!(err <= bound)) {
    let worst = 0;
    for (let i = 0; i < expected.length; i++) {
      if (!(Math.abs(actual[i] - expected[i]) <= Math.abs(actual[worst] - expected[worst]))) worst = i;
    }
    throw new Error(
      `${what}: relative error ${err.toExponential(3)} > ${bound} (worst at ${worst}: got ${
        actual[worst]
      }, want ${expected[worst]})`,
    );
  }
}
