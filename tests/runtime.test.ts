/** The GPU runtime: adapter errors, the buffer pool, the pipeline cache and batched recording. */
import { deepStrictEqual as assertEquals, ok as assert, rejects, throws } from "node:assert";
import { NoGpuError, requestGpuDevice } from "../src/gpu/device.ts";
import { BufferPool, sizeClass } from "../src/gpu/pool.ts";
import { add } from "../bench/dev/add.ts";
import { addRef } from "../src/ref/elementwise.ts";
import { assertClose, freshSeed, gpuContext, poison, randomF32, rng } from "./helpers.ts";

Deno.test("no adapter → NoGpuError naming what to install, not a stack of driver errors", async () => {
  const nav = globalThis.navigator as unknown as Record<string, unknown>;
  Object.defineProperty(nav, "gpu", {
    value: { requestAdapter: () => Promise.resolve(null) },
    configurable: true,
  });
  try {
    await rejects(requestGpuDevice(), (e: unknown) => {
      assert(e instanceof NoGpuError);
      assert(e.message.includes("mesa-vulkan-drivers"), e.message);
      return true;
    });
  } finally {
    delete nav.gpu; // the prototype's getter is visible again
  }
});

Deno.test("size classes: powers of two up to 1 MiB, eighths above; never smaller than asked", () => {
  assertEquals(sizeClass(1), 256);
  assertEquals(sizeClass(257), 512);
  assertEquals(sizeClass(1 << 20), 1 << 20);
  assertEquals(sizeClass((1 << 20) + 1), (1 << 20) + (1 << 17));
  for (const n of [3, 1000, 123_457, 5_000_001, 99_999_999]) {
    const c = sizeClass(n);
    assert(c >= n && c <= Math.max(256, n * 2), `${n} → ${c}`);
  }
});

Deno.test("buffer pool reuses released buffers, accounts bytes, and rejects double or foreign releases", async () => {
  const ctx = await gpuContext();
  const pool = new BufferPool(ctx.device);
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const a = pool.acquire(1000, usage);
  assertEquals(pool.stats().liveBytes, 1024);
  pool.release(a);
  const b = pool.acquire(900, usage);
  assert(a === b, "a released buffer of the same class is handed out again");
  assertEquals(pool.stats().created, 1);
  assertEquals(pool.stats().reused, 1);
  pool.release(b);
  throws(() => pool.release(b), /released twice/);
  const foreign = ctx.device.createBuffer({ size: 256, usage });
  throws(() => pool.release(foreign), /not from this pool/);
  pool.trim();
  assertEquals(pool.stats().allocatedBytes, 0);
  foreign.destroy();
});

Deno.test("pipeline cache compiles a kernel once; many dispatches go out in one submit", async () => {
  const ctx = await gpuContext();
  const next = rng(freshSeed());
  const n = 3000;
  const a = randomF32(n, next);
  const b = randomF32(n, next);
  const ga = ctx.upload(a, "a");
  const gb = ctx.upload(b, "b");
  const outs = Array.from({ length: 20 }, (_, i) => ctx.createBuffer(n * 4, `out${i}`));
  for (const o of outs) poison(ctx, o);
  ctx.flush();
  const before = { pipelines: ctx.pipelines.size, submits: ctx.stats.submits };
  for (const o of outs) add(ctx, ga, gb, o, n);
  ctx.flush();
  assertEquals(ctx.stats.submits - before.submits, 1, "20 dispatches, one submit");
  assert(ctx.pipelines.size - before.pipelines <= 1, "the add pipeline is compiled at most once");
  // Every dispatch ran with its own uniforms (a dropped dispatch would leave NaN poison behind).
  const want = addRef(a, b);
  for (const o of outs) assertClose(await ctx.readF32(o), want, 0, "batched add");
  for (const buf of [ga, gb, ...outs]) buf.destroy();
});
