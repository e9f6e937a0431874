/**
 * Lethe's Deno entry: everything of the platform-neutral `mod.ts`, plus what needs Deno — local model
 * directories (`Engine.load("/path/to/model")`, {@link dirSource}), the terminal progress bar while weights
 * load, and the OpenAI-compatible server ({@link startServer}).
 *
 * ```ts
 * import { Engine } from "@lethe/lethe/deno";
 * const engine = await Engine.load("/path/to/model");
 * const result = await engine.generate("The capital of France is", { maxTokens: 32, kv: { policy: "lethe", budget: 128 } });
 * console.log(result.text, result.stats);
 * ```
 *
 * Permissions: `--allow-read` (the model directory), `--allow-env` (the GPU driver and terminal checks);
 * `--allow-net` for {@link startServer} or a model URL.
 *
 * @module
 */
import "./src/io/deno_fs.ts";
export * from "./mod.ts";
export { dirSource } from "./src/io/deno_fs.ts";
// The OpenAI-compatible server.
export { startServer } from "./src/server/server.ts";
export type { RunningServer, ServerOptions } from "./src/server/server.ts";
