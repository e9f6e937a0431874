/**
 * `deno task serve`: the OpenAI-compatible server from the command line.
 */
import "../io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "../engine/engine.ts";
import { loadKvDefaults } from "../kv/defaults.ts";
import {
  checkKvOptions,
  DEFAULT_POLICY,
  KV_FLAG_OPTIONS,
  type KvFlagValues,
  kvHelpLines,
  KvOptionError,
  type KvSettings,
  kvSettingsFromFlags,
  resolveKvOptions,
} from "../kv/options.ts";
import { startServer } from "./server.ts";
import { prepareWebDir } from "./static.ts";
import { DEFAULT_MODEL_DIR } from "../util/paths.ts";
import type { ChatTemplateName } from "../../tokenizer/mod.ts";

const HELP = `Usage: deno task serve [--model DIR] [--port N] [options]

  --model DIR            Hugging Face model directory (default: the bundled models/lethe-reasoner-tiny)
  --host H               address to bind (default 127.0.0.1)
  --port N               port (default 8000; 0 = any free port)
  --model-id NAME        the id clients pass as "model" (default: the directory's name)
  --kv-memory BYTES      byte cap on KV over all sequences, K/M/G suffixes (default 1G)
  --max-batch N          most sequences decoding together (default 16)
  --max-tokens N         max_tokens when a request gives none (default 256)
  --no-align-rounds      prune each sequence on its own schedule: outputs equal the CLI's even in a shared
                         batch, but every step with a round due waits for a readback (by default the batch's
                         rounds are lined up, moving some a few steps earlier, and the steps between them run
                         ahead)
  --chat-template T      deepseek-r1, chatml or llama3 (default: from tokenizer_config.json, else deepseek-r1)
  --cors ORIGIN          let pages of ORIGIN (or * for any) read the page and /model/ files (default: off)
  --no-web               serve neither the browser page at / nor the model's files at /model/ (built into
                         dist/web on start when missing or older than its sources)
  --help                 this text

KV defaults for requests (the request fields kv_policy, kv_budget, … override them; settings not given come
from the model directory's kv_defaults.json when it has one, else from the defaults below):
${kvHelpLines(23).join("\n")}
`;

/** The KV defaults the flags give; a bad one is an error that names its flag. */
async function kvFromFlags(values: KvFlagValues, model: string): Promise<KvSettings> {
  try {
    const kv = kvSettingsFromFlags(values);
    // Requests may pick any policy, so the budget must suit the pruning ones whatever the default policy.
    checkKvOptions(resolveKvOptions(kv, await loadKvDefaults(model)));
    return { ...kv, policy: kv.policy ?? DEFAULT_POLICY };
  } catch (e) {
    throw e instanceof KvOptionError ? new Error(e.format((s) => s.flag)) : e;
  }
}

/** Parses "512M", "1G", "1048576". */
export function parseByteSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(s.trim());
  if (!m) throw new Error(`not a byte size: ${s}`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase()]!;
  return Math.floor(Number(m[1]) * mult);
}

async function main(): Promise<void> {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      "model-id": { type: "string" },
      ...KV_FLAG_OPTIONS,
      "kv-memory": { type: "string" },
      "max-batch": { type: "string" },
      "max-tokens": { type: "string" },
      "chat-template": { type: "string" },
      "no-align-rounds": { type: "boolean" },
      cors: { type: "string" },
      "no-web": { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (v.help) {
    console.log(HELP);
    return;
  }
  const int = (name: string, s: string | undefined, def: number, min: number) => {
    if (s === undefined) return def;
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${s}`);
    return n;
  };
  const model = v.model ?? DEFAULT_MODEL_DIR;
  const kv = await kvFromFlags(v, model);
  if (v["chat-template"] !== undefined && !["deepseek-r1", "chatml", "llama3"].includes(v["chat-template"])) {
    throw new Error("--chat-template must be deepseek-r1, chatml or llama3");
  }
  const engine = await Engine.load(model, { progress: Deno.stderr.isTerminal() });
  const web = v["no-web"] ? null : await prepareWebDir(() => import("../../tools/build_web.ts"));
  if (web) console.error(`lethe: ${web.message}`);
  const server = startServer(engine, {
    modelId: v["model-id"],
    chatTemplate: v["chat-template"] as ChatTemplateName | undefined,
    hostname: v.host ?? "127.0.0.1",
    port: int("port", v.port, 8000, 0),
    kvMemory: v["kv-memory"] !== undefined ? parseByteSize(v["kv-memory"]) : undefined,
    maxBatch: int("max-batch", v["max-batch"], 16, 1),
    maxTokens: int("max-tokens", v["max-tokens"], 256, 1),
    alignRounds: !v["no-align-rounds"],
    kv,
    webDir: web?.dir ?? undefined,
    modelDir: web && !/^https?:/i.test(model) ? model : undefined,
    cors: v.cors,
  });
  console.error(
    `lethe: serving ${model} at ${server.url} (kv ${kv.policy}, pool ${server.scheduler.options.kvMemory} bytes, ` +
      `max batch ${server.scheduler.options.maxBatch})`,
  );
  // A line on stdout that scripts can wait for.
  console.log(`listening ${server.url}`);
  const stop = async () => {
    await server.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`lethe serve: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
