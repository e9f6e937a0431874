/**
 * `deno task generate`: generate text with a local Hugging Face model directory.
 *
 * Run with --help for the flags. Without --model it runs the model that ships with the project.
 */
import "./io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "./engine/engine.ts";
import type { GenerateOptions } from "./engine/generate.ts";
import type { PruneRound } from "./engine/rounds.ts";
import { loadKvDefaults } from "./kv/defaults.ts";
import {
  checkKvOptions,
  DEFAULT_POLICY,
  KV_FLAG_OPTIONS,
  kvHelpLines,
  KvOptionError,
  type KvSettings,
  kvSettingsFromFlags,
  resolveKvOptions,
} from "./kv/options.ts";
import { type GpuPath, NoGpuError, parseGpuPath } from "./gpu/device.ts";
import { parseWeightsOption, type WeightsOption } from "./model/model.ts";
import { DEFAULT_MODEL_DIR } from "./util/paths.ts";
import { statsLine } from "./util/stats_line.ts";

/** Directory of the model that ships with the project: lethe-reasoner-tiny (see tools/train/README.md). */
export { DEFAULT_MODEL_DIR };

const HELP = `Usage: deno task generate [options]

Generates a continuation with a local Hugging Face model directory (config.json + *.safetensors
[+ tokenizer.json]). Text streams to stdout; the loading progress goes to stderr.

Model and prompt:
  --model DIR            model directory (default: the bundled lethe-reasoner-tiny, a 1.6M-parameter
                         Qwen2 trained on the tasks of tools/train: use --chat with one of its questions;
                         models/stories260K has no tokenizer: use --prompt-ids, output is token ids)
  --prompt TEXT          prompt text (needs the model's tokenizer.json)
  --prompt-ids 1,2,3     prompt as comma-separated token ids (default for models without a tokenizer: 1)
  --chat                 wrap --prompt in the model's chat template (DeepSeek-R1 or ChatML); control-token
                         text in the prompt (<｜Assistant｜>, <|im_end|>) stays plain text
  --chat-special-tokens  with --chat: encode control-token text in the prompt as control tokens
  --max-tokens N         tokens to generate at most (default 256)
  --stop TEXT            stop when this text appears (repeatable; the earliest match in the text wins)

Sampling (default greedy):
  --temperature T        0 = greedy (default 0)
  --top-k K              keep the K most likely tokens, 0 = off (default 0)
  --top-p P              nucleus sampling mass, 1 = off (default 1)
  --seed S               RNG seed; the same seed gives the same output (default 0)
  --min-p P              keep tokens at least P × as likely as the best one, after temperature (0 = off)
  --presence-penalty X   in [-2, 2]: subtract X from a token's logit once it was generated (OpenAI; 0 = off)
  --frequency-penalty X  in [-2, 2]: subtract X per time a token was generated (OpenAI; 0 = off)
  --repetition-penalty R > 0: divide positive logits (multiply negative) of prompt and generated tokens by R
                         (HF/vLLM; 1 = off). Penalties also apply to greedy decoding.

KV cache policy:
${kvHelpLines(23).join("\n")}
  --kv-trace FILE        write one JSON line per pruning round
  KV settings not given come from the model directory's kv_defaults.json when it has one (the bundled
  reasoner's: recent ratio 0.7, γ 0.9, chosen by its evaluation), else from the defaults above.

Weights and GPU:
  --weights FORMAT       stored (default: as the checkpoint stores them, a quantized one included), q8 or q4:
                         quantize bf16/f16/f32 matrices while loading (groups of 32 values, one f16 scale
                         each; embedding and LM head too) — ~0.53× / ~0.28× bf16's bytes, and as much less
                         read per token. deno task quantize SRC DST writes such a checkpoint once.
  --gpu-path PATH        auto (default; LETHE_GPU_PATH when set), texture or storage: texture copies of the
                         weights (fast on CPU adapters such as lavapipe) or storage buffers only (what real
                         GPUs and browsers run); auto picks texture on a CPU adapter only

Output:
  --json                 print one JSON object (prompt_ids, ids, text, stats) instead of streaming
  --quiet                no progress bar
  -h, --help             this help
`;

/** Exit with a message (no stack trace) for user errors. */
class UsageError extends Error {}

/** A KV setting's problem in the CLI's words: the flag names the setting. */
function kvUsage(e: unknown): unknown {
  return e instanceof KvOptionError ? new UsageError(e.format((s) => s.flag)) : e;
}

function num(
  name: string,
  v: string | undefined,
  fallback: number,
  check: (x: number) => boolean,
  what: string,
): number {
  if (v === undefined) return fallback;
  const x = Number(v);
  if (v.trim() === "" || !Number.isFinite(x) || !check(x)) {
    throw new UsageError(`--${name} must be ${what}, got "${v}"`);
  }
  return x;
}

const isInt = (x: number) => Number.isInteger(x);

/**
 * How long to wait for a WebGPU adapter: `LETHE_ADAPTER_TIMEOUT_MS` when set (and readable), else the
 * library's default (15 s). Without a working driver the search can otherwise spin for minutes.
 */
function adapterTimeoutMs(): number | undefined {
  let v: string | undefined;
  try {
    v = Deno.env.get("LETHE_ADAPTER_TIMEOUT_MS");
  } catch {
    return undefined; // no --allow-env
  }
  if (v === undefined || v.trim() === "") return undefined;
  const ms = Number(v);
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new UsageError(`LETHE_ADAPTER_TIMEOUT_MS must be a positive number of milliseconds, got "${v}"`);
  }
  return ms;
}

/** `LETHE_GPU_PATH` when set and readable (the switch tests and scripts use), else undefined. */
function envGpuPath(): string | undefined {
  try {
    return Deno.env.get("LETHE_GPU_PATH") || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

/** Runs a validator, turning its RangeError into a UsageError (exit code 2, no stack). */
function usage<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw e instanceof RangeError ? new UsageError(e.message) : e;
  }
}

/** Parses CLI arguments into engine inputs; throws UsageError on bad input. */
export function parseCli(args: string[]): {
  help: boolean;
  model: string;
  weights: WeightsOption;
  gpuPath: GpuPath;
  prompt: string | null;
  promptIds: number[] | null;
  chat: boolean;
  chatSpecialTokens: boolean;
  json: boolean;
  quiet: boolean;
  trace: string | null;
  options: GenerateOptions & { maxTokens: number; kv: KvSettings };
} {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: "string" },
        weights: { type: "string" },
        "gpu-path": { type: "string" },
        prompt: { type: "string" },
        "prompt-ids": { type: "string" },
        chat: { type: "boolean" },
        "chat-special-tokens": { type: "boolean" },
        "max-tokens": { type: "string" },
        stop: { type: "string", multiple: true },
        temperature: { type: "string" },
        "top-k": { type: "string" },
        "top-p": { type: "string" },
        seed: { type: "string" },
        "min-p": { type: "string" },
        "presence-penalty": { type: "string" },
        "frequency-penalty": { type: "string" },
        "repetition-penalty": { type: "string" },
        ...KV_FLAG_OPTIONS,
        "kv-trace": { type: "string" },
        json: { type: "boolean" },
        quiet: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\nRun with --help for the options.`);
  }
  const v = parsed.values;
  // Only the settings given: the rest come from the model's kv_defaults.json, else the documented defaults.
  let kv;
  try {
    kv = kvSettingsFromFlags(v);
  } catch (e) {
    throw kvUsage(e);
  }
  kv.policy ??= DEFAULT_POLICY;
  let promptIds: number[] | null = null;
  if (v["prompt-ids"] !== undefined) {
    promptIds = v["prompt-ids"].split(",").map((s) => {
      const x = Number(s.trim());
      if (s.trim() === "" || !Number.isInteger(x) || x < 0) {
        throw new UsageError(
          `--prompt-ids must be comma-separated non-negative integers, got "${v["prompt-ids"]}"`,
        );
      }
      return x;
    });
  }
  if (promptIds && v.prompt !== undefined) {
    throw new UsageError("give either --prompt or --prompt-ids, not both");
  }
  if (v.chat && v.prompt === undefined) throw new UsageError("--chat needs --prompt");
  if (v["chat-special-tokens"] && !v.chat) throw new UsageError("--chat-special-tokens needs --chat");
  const maxTokens = num(
    "max-tokens",
    v["max-tokens"],
    256,
    (x) => isInt(x) && x > 0 && x <= 1_000_000,
    "an integer in [1, 1000000]",
  );
  return {
    help: v.help ?? false,
    model: v.model ?? DEFAULT_MODEL_DIR,
    weights: usage(() => parseWeightsOption(v.weights ?? "stored", "--weights")),
    gpuPath: usage(() =>
      parseGpuPath(v["gpu-path"] ?? envGpuPath() ?? "auto", v["gpu-path"] ? "--gpu-path" : "LETHE_GPU_PATH")
    ),
    prompt: v.prompt ?? null,
    promptIds,
    chat: v.chat ?? false,
    chatSpecialTokens: v["chat-special-tokens"] ?? false,
    json: v.json ?? false,
    quiet: v.quiet ?? false,
    trace: v["kv-trace"] ?? null,
    options: {
      maxTokens,
      stop: v.stop,
      sampling: {
        temperature: num("temperature", v.temperature, 0, (x) => x >= 0, "a number ≥ 0"),
        topK: num("top-k", v["top-k"], 0, (x) => isInt(x) && x >= 0, "an integer ≥ 0"),
        topP: num("top-p", v["top-p"], 1, (x) => x > 0 && x <= 1, "in (0, 1]"),
        seed: num("seed", v.seed, 0, (x) => isInt(x) && x >= 0 && x < 2 ** 32, "an integer in [0, 2^32)"),
        minP: num("min-p", v["min-p"], 0, (x) => x >= 0 && x <= 1, "in [0, 1]"),
        presencePenalty: num(
          "presence-penalty",
          v["presence-penalty"],
          0,
          (x) => x >= -2 && x <= 2,
          "in [-2, 2]",
        ),
        frequencyPenalty: num(
          "frequency-penalty",
          v["frequency-penalty"],
          0,
          (x) => x >= -2 && x <= 2,
          "in [-2, 2]",
        ),
        repetitionPenalty: num(
          "repetition-penalty",
          v["repetition-penalty"],
          1,
          (x) => x > 0,
          "a number > 0",
        ),
      },
      kv,
    },
  };
}

/** Runs the CLI; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  let cli;
  try {
    cli = parseCli(args);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    throw e;
  }
  if (cli.help) {
    console.log(HELP);
    return 0;
  }
  const enc = new TextEncoder();
  const out = (s: string) => Deno.stdout.writeSync(enc.encode(s));
  let traceFile: Deno.FsFile | null = null;
  try {
    // Each KV flag was checked alone; whether the budget exceeds the sinks depends on the model's defaults too.
    try {
      checkKvOptions(
        resolveKvOptions(cli.options.kv, await loadKvDefaults(cli.model)),
        cli.options.kv.policy,
      );
    } catch (e) {
      throw kvUsage(e);
    }
    const engine = await Engine.load(cli.model, {
      progress: cli.quiet ? false : undefined,
      adapterTimeoutMs: adapterTimeoutMs(),
      weights: cli.weights,
      gpuPath: cli.gpuPath,
    });
    let prompt: string | number[];
    if (cli.promptIds) prompt = cli.promptIds;
    else if (cli.prompt !== null) {
      if (!engine.tokenizer) {
        throw new UsageError(`model ${cli.model} has no tokenizer.json: use --prompt-ids`);
      }
      if (cli.chat) {
        // The template's markers are control tokens; the prompt's text is plain unless --chat-special-tokens.
        // The model's own chat_template when it has one, else the family its tokenizer looks like.
        const tok = engine.tokenizer;
        const template = tok.chatTemplateSource ? undefined : tok.chatTemplate ?? "deepseek-r1";
        prompt = engine.tokenizer.encodeChat([{ role: "user", content: cli.prompt }], template, {
          defaultSystemPrompt: engine.tokenizer.defaultSystemPrompt,
          specialTokens: cli.chatSpecialTokens ? "parse" : "plain",
        });
      } else prompt = cli.prompt;
    } else if (engine.tokenizer) {
      throw new UsageError(
        'give a prompt: --prompt TEXT or --prompt-ids 1,2,3 (the bundled model: --chat --prompt "add the numbers 12 34 56.")',
      );
    } else prompt = [engine.model.config.bosTokenId ?? 1];

    if (cli.trace) traceFile = await Deno.open(cli.trace, { write: true, create: true, truncate: true });
    const options: GenerateOptions = {
      ...cli.options,
      onPrune: traceFile
        ? (r: PruneRound) => traceFile!.writeSync(enc.encode(JSON.stringify(r) + "\n"))
        : undefined,
    };
    if (!cli.json) {
      if (engine.tokenizer) options.onText = (t) => out(t);
      else options.onToken = (id) => out(`${id} `);
    }
    const result = await engine.generate(prompt, options);
    if (cli.json) {
      console.log(
        JSON.stringify({
          prompt_ids: result.promptIds,
          ids: result.ids,
          text: result.text,
          finish_reason: result.finishReason,
          stats: result.stats,
        }),
      );
    } else {
      out("\n");
      const s = result.stats;
      if (!cli.quiet) {
        console.error(`[${statsLine(s)}]`);
      }
    }
    return 0;
  } catch (e) {
    if (e instanceof UsageError || e instanceof NoGpuError) {
      console.error(`error: ${e.message}`);
      return e instanceof UsageError ? 2 : 1;
    }
    console.error(`error: ${(e as Error).message}`);
    return 1;
  } finally {
    traceFile?.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
