import { GpuContext } from "../src/gpu/context.ts";
import { createWeight, type Weight } from "../src/gpu/weights.ts";
import { matvec } from "../src/ops/matvec.ts";
import { quantizeRows } from "../src/model/quantize.ts";
import { marginalMs, weightCopies } from "./roofline.ts";
const ctx = await GpuContext.create();
const shapes: [number, number, number][] = [[151936, 1536, 1], [8960, 1536, 8], [1536, 8960, 4], [1536, 1536, 8], [256, 1536, 8]];
const res: Record<string, number[]> = {};
const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1];
for (const [rows, cols, mult] of shapes) {
  const vals = new Float32Array(rows * cols).map((_, i) => Math.sin(i * 0.37));
  const sets: Record<string, Weight[]> = { bf16: weightCopies(ctx, "bf16", rows, cols, 64 << 20) };
  for (const f of ["q8", "q4"] as const) {
    const q = quantizeRows(f, vals, rows, cols);
    const n = Math.max(1, Math.ceil((64 << 20) / q.data.byteLength));
    sets[f] = Array.from({ length: n }, () => {
      const w = createWeight(ctx, "w", f, rows, cols, undefined, { texture: "auto", keepBuffer: false });
      w.write(0, q.data, q.scales);
      return w.weight;
    });
  }
  const x = ctx.createBuffer(cols * 4, "x"), y = ctx.createBuffer(rows * 4, "y");
  for (let r = 0; r < 5; r++) {
    for (const [name, ws] of Object.entries(sets)) {
      const ms = await marginalMs(ctx, (i) => matvec(ctx, ws[i % ws.length], x, y), Math.max(2, Math.ceil(40 / (rows * cols / 1e6))), 1);
      (res[`${rows}x${cols} ${name}`] ??= []).push(ms * mult);
    }
  }
  for (const ws of Object.values(sets)) for (const w of ws) { for (const t of w.textures ?? []) t.texture.destroy(); }
  console.log(Object.entries(res).filter(([k]) => k.startsWith(`${rows}x${cols}`)).map(([k, v]) => `${k} ${med(v).toFixed(1)} ms (×${mult} per 4-layer step)`).join("\n"));
}
