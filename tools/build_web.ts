/**
 * `deno task build:web`: bundles the browser page (`web/main.ts`, which imports the library from `mod.ts`) with
 * esbuild into one ES module, `dist/web/lethe.js`, and copies the page's other files (`index.html`, css) from
 * `web/` beside it. WGSL kernels are imported as text (`with { type: "text" }`), which esbuild loads through
 * the plugin below.
 *
 * Permissions: --allow-read, --allow-env (esbuild's options), --allow-run (the esbuild binary), --allow-write
 * (the output directory).
 */
// deno-lint-ignore no-import-prefix
import * as esbuild from "npm:esbuild@0.25.9";
import { fileURLToPath } from "node:url";

/** The repository root. */
const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/+$/, "");
/** The page's sources. */
export const WEB_SRC: string = `${ROOT}/web`;
/** Where `deno task build:web` and `deno task serve` put the built page. */
export const WEB_DIST: string = `${ROOT}/dist/web`;
/** The bundle's file name in the output directory. */
export const BUNDLE = "lethe.js";
/** The bundle's inputs, recorded for {@link webIsStale} (a dot file: the server never serves it). */
const INPUTS = ".inputs.json";

/** Options of {@link buildWeb}. */
export interface BuildWebOptions {
  /** Output directory (default `dist/web`). */
  outDir?: string;
  /** Minify the bundle (default true; a linked source map is written either way). */
  minify?: boolean;
}

/** What {@link buildWeb} wrote. */
export interface BuildWebResult {
  outDir: string;
  /** Output files, with their sizes in bytes. */
  files: { name: string; bytes: number }[];
  ms: number;
}

/** Loads any module imported `with { type: "text" }` (the library's `.wgsl` kernels) as a string. */
const textImports: esbuild.Plugin = {
  name: "text-imports",
  setup(build) {
    build.onLoad({ filter: /\.wgsl$/ }, async (args) => ({
      contents: await Deno.readTextFile(args.path),
      loader: "text",
    }));
    build.onLoad({ filter: /.*/ }, async (args) => {
      if (args.with?.type !== "text") return undefined;
      return { contents: await Deno.readTextFile(args.path), loader: "text" };
    });
  },
};

/**
 * Resolves bare imports that deno.json maps to `npm:` packages (the library's `@huggingface/jinja`) to the
 * package's ES module entry in Deno's npm cache (`deno info --json` fetches it there when missing).
 */
const npmImports: esbuild.Plugin = {
  name: "deno-npm-imports",
  setup(build) {
    const imports: Record<string, string> = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).imports ??
      {};
    const bare = Object.keys(imports).filter((k) => imports[k].startsWith("npm:"));
    if (bare.length === 0) return;
    const escaped = bare.map((k) => k.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&"));
    build.onResolve({ filter: new RegExp(`^(${escaped.join("|")})$`) }, async (args) => {
      const spec = imports[args.path];
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["info", "--json", spec],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        return { errors: [{ text: `deno info ${spec}: ${new TextDecoder().decode(out.stderr)}` }] };
      }
      const info = JSON.parse(new TextDecoder().decode(out.stdout));
      const pkg = info.npmPackages?.[info.modules?.[0]?.npmPackage];
      if (!pkg?.localPath) return { errors: [{ text: `deno info ${spec}: no local package` }] };
      const manifest = JSON.parse(await Deno.readTextFile(`${pkg.localPath}/package.json`));
      const dot = manifest.exports?.["."];
      const entry = (typeof dot === "string" ? dot : dot?.import?.default ?? dot?.import ?? dot?.default) ??
        manifest.module ?? manifest.main ?? "index.js";
      return { path: `${pkg.localPath}/${String(entry).replace(/^\.\//, "")}` };
    });
  },
};

/** Bundles `web/main.ts` into `<outDir>/lethe.js` and copies the page's assets from `web/`. */
export async function buildWeb(options: BuildWebOptions = {}): Promise<BuildWebResult> {
  const t0 = performance.now();
  const outDir = (options.outDir ?? WEB_DIST).replace(/\/+$/, "");
  let result: esbuild.BuildResult<{ write: false; metafile: true }>;
  try {
    result = await esbuild.build({
      entryPoints: [`${WEB_SRC}/main.ts`],
      outfile: `${outDir}/${BUNDLE}`,
      bundle: true,
      format: "esm",
      platform: "browser",
      // WebGPU arrived in Chrome/Edge 113, which run ES2022.
      target: "es2022",
      minify: options.minify ?? true,
      sourcemap: "linked",
      write: false,
      metafile: true,
      logLevel: "silent",
      plugins: [npmImports, textImports],
    });
  } catch (e) {
    const errors = (e as { errors?: esbuild.Message[] }).errors;
    if (errors?.length) {
      const text = await esbuild.formatMessages(errors, { kind: "error", color: false });
      throw new Error(`esbuild failed:\n${text.join("\n")}`);
    }
    throw e;
  } finally {
    await esbuild.stop();
  }
  await Deno.mkdir(outDir, { recursive: true });
  const files: BuildWebResult["files"] = [];
  for (const f of result.outputFiles) {
    await Deno.writeFile(f.path, f.contents);
    files.push({ name: f.path.slice(outDir.length + 1), bytes: f.contents.byteLength });
  }
  for await (const e of Deno.readDir(WEB_SRC)) {
    if (!e.isFile || e.name.endsWith(".ts")) continue;
    await Deno.copyFile(`${WEB_SRC}/${e.name}`, `${outDir}/${e.name}`);
    files.push({ name: e.name, bytes: (await Deno.stat(`${outDir}/${e.name}`)).size });
  }
  const inputs = Object.keys(result.metafile.inputs).map((p) => p.startsWith("/") ? p : `${Deno.cwd()}/${p}`);
  await Deno.writeTextFile(`${outDir}/${INPUTS}`, JSON.stringify(inputs));
  return { outDir, files, ms: performance.now() - t0 };
}

/** Newest modification time of a file, 0 when it is missing. */
async function mtime(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Why `outDir` needs a (re)build, or null when it is up to date: the bundle is missing, or a source it was
 * built from (as esbuild's metafile listed them) or a file of `web/` is newer than it.
 */
export async function webIsStale(outDir: string = WEB_DIST): Promise<string | null> {
  const built = await mtime(`${outDir}/${BUNDLE}`);
  if (built === 0) return `${outDir}/${BUNDLE} is missing`;
  let inputs: string[];
  try {
    inputs = JSON.parse(await Deno.readTextFile(`${outDir}/${INPUTS}`));
  } catch {
    return `${outDir}/${INPUTS} is missing`;
  }
  for await (const e of Deno.readDir(WEB_SRC)) {
    if (e.isFile) inputs.push(`${WEB_SRC}/${e.name}`);
  }
  for (const p of inputs) {
    const t = await mtime(p);
    if (t === 0 || t > built) return `${p} changed`;
  }
  return null;
}

/** One line on what a build wrote. */
export function describeBuild(r: BuildWebResult): string {
  const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
  const list = r.files.filter((f) => !f.name.endsWith(".map")).map((f) => `${f.name} ${kib(f.bytes)}`);
  const cwd = Deno.cwd() + "/";
  const dir = r.outDir.startsWith(cwd) ? r.outDir.slice(cwd.length) : r.outDir;
  return `built ${dir} in ${(r.ms / 1000).toFixed(1)} s: ${list.join(", ")}`;
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(`Usage: deno task build:web [--out DIR] [--no-minify]

Bundles the browser page (web/main.ts and the library it imports) with esbuild into one ES module,
DIR/lethe.js (+ source map), and copies web/index.html and web/style.css beside it (default DIR: dist/web).
deno task serve builds it on start when it is missing or older than its sources.`);
    Deno.exit(0);
  }
  const outIdx = Deno.args.indexOf("--out");
  const outDir = outIdx >= 0 ? Deno.args[outIdx + 1] : undefined;
  try {
    const r = await buildWeb({ outDir, minify: !Deno.args.includes("--no-minify") });
    console.log(describeBuild(r));
  } catch (e) {
    console.error(`build:web: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
