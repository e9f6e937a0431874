/** Paths and file checks shared by the CLI, the server, the evaluation and the benchmarks. */
import { fileURLToPath } from "node:url";

/** Directory of the model that ships with the project and every tool's default: lethe-reasoner-tiny. */
export const DEFAULT_MODEL_DIR: string = fileURLToPath(
  new URL("../../models/lethe-reasoner-tiny", import.meta.url),
);

/** Whether `path` exists (file or directory). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
