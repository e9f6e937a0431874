/**
 * The Deno side of model loading: a local directory as a {@link ModelSource}, and, as a side effect of
 * importing this module, local paths in `Engine.load("/path")` (and every loader taking a path) plus the
 * terminal progress bar. Every Deno program of the project imports it; the library's Deno entry (`deno.ts`)
 * does too. Never imported by the platform-neutral modules.
 *
 * @module
 */
import { ProgressBar } from "../util/progress.ts";
import { setTerminalProgress } from "./progress.ts";
import { type ModelSource, setLocalSourceFactory } from "./source.ts";

function isAbsent(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory;
}

/**
 * The files of a local directory: ranges with open/seek/read (one handle per read, so concurrent reads never
 * interleave), sizes with stat; a missing file is null.
 */
export function dirSource(path: string): ModelSource {
  const at = (file: string): string => path.endsWith("/") ? path + file : `${path}/${file}`;
  return {
    name: path,
    async readFile(file: string): Promise<Uint8Array | null> {
      try {
        return await Deno.readFile(at(file));
      } catch (e) {
        if (isAbsent(e)) return null;
        throw e;
      }
    },
    async size(file: string): Promise<number | null> {
      try {
        const info = await Deno.stat(at(file));
        return info.isFile ? info.size : null;
      } catch (e) {
        if (isAbsent(e)) return null;
        throw e;
      }
    },
    async readRange(file: string, offset: number, length: number): Promise<Uint8Array> {
      const where = at(file);
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
        throw new RangeError(`${where}: invalid byte range (offset ${offset}, length ${length})`);
      }
      let fh: Deno.FsFile;
      try {
        fh = await Deno.open(where, { read: true });
      } catch (e) {
        if (isAbsent(e)) throw new Error(`${where}: no such file`, { cause: e });
        throw new Error(`${where}: cannot open (${(e as Error).message})`, { cause: e });
      }
      try {
        const out = new Uint8Array(length);
        await fh.seek(offset, Deno.SeekMode.Start);
        let got = 0;
        while (got < length) {
          const n = await fh.read(out.subarray(got));
          if (n === null) throw new Error(`${where}: unexpected end of file at byte ${offset + got}`);
          got += n;
        }
        return out;
      } finally {
        fh.close();
      }
    },
  };
}

setLocalSourceFactory(dirSource);
setTerminalProgress({
  create: (label, totalBytes) => new ProgressBar(label, totalBytes, true),
  auto: () => Deno.stderr.isTerminal(),
});
