/** bench/roofline.ts in quick mode: it runs, and its --json output has the documented schema. */

Deno.test("roofline --quick --json prints rows of {kernel, shape, dtype, gbps, ceiling_gbps, ratio}", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "bench/roofline.ts", "--quick", "--json"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`roofline failed: ${stderr}`);
  const rows = JSON.parse(new TextDecoder().decode(out.stdout).trim());
  if (!Array.isArray(rows) || rows.length === 0) throw new Error("expected a non-empty JSON array");
  for (const r of rows) {
    const keys = Object.keys(r).sort().join(",");
    if (keys !== "ceiling_gbps,dtype,gbps,kernel,ratio,shape") throw new Error(`unexpected keys ${keys}`);
    if (typeof r.kernel !== "string" || !r.kernel.startsWith("matvec")) throw new Error(`kernel ${r.kernel}`);
    if (!/^\d+x\d+$/.test(r.shape)) throw new Error(`shape ${r.shape}`);
    if (!["bf16", "f16", "f32"].includes(r.dtype)) throw new Error(`dtype ${r.dtype}`);
    for (const k of ["gbps", "ceiling_gbps", "ratio"]) {
      if (typeof r[k] !== "number" || !Number.isFinite(r[k]) || r[k] <= 0) throw new Error(`${k} = ${r[k]}`);
    }
    const ratio = r.gbps / r.ceiling_gbps;
    if (Math.abs(ratio - r.ratio) > 1e-3 * Math.max(1, ratio)) {
      throw new Error(`ratio ${r.ratio} vs ${ratio}`);
    }
  }
});
