/**
 * `deno task chat`: a multi-turn chat in the terminal with a local model (the bundled reasoner by default).
 *
 * The answer streams as it is generated; the thought (the text before `</think>`) is dimmed, or hidden with
 * --hide-thought. The conversation is rendered with the model's chat template at every turn. Ctrl-C stops the
 * current answer; Ctrl-C twice at the prompt exits. Commands: /reset, /kv POLICY [BUDGET], /stats, /help, /quit.
 */
import "./io/deno_fs.ts"; // local model paths and the terminal progress bar
import { parseArgs } from "node:util";
import { Engine } from "./engine/engine.ts";
import type { GenerationStats } from "./engine/generate.ts";
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
import type { KvPolicyOptions } from "./kv/policy.ts";
import { NoGpuError } from "./gpu/device.ts";
import { DEFAULT_MODEL_DIR } from "./util/paths.ts";
import { statsLine } from "./util/stats_line.ts";
import type { ChatMessage } from "../tokenizer/chat.ts";

const HELP = `Usage: deno task chat [options]

A multi-turn chat in the terminal. Type a message and Enter; the answer streams, its thought (before
</think>) dimmed. The bundled reasoner answers questions like "add the numbers 12 34 56." or
"walk 20 steps from 35. map: 13>35, 54>55, 35>54, 81>82, 55>81, 82>13.".

Options:
  --model DIR            model directory with a tokenizer.json (default: the bundled lethe-reasoner-tiny)
  --max-tokens N         tokens per answer at most (default 1024; less when the context is nearly full)
  --temperature T        0 = greedy (default 0)
  --seed S               RNG seed (default 0)
  --hide-thought         do not show the thought, only the answer after </think>
  --quiet                no loading progress bar
  -h, --help             this help

KV cache policy:
${kvHelpLines(23).join("\n")}

${"Commands at the prompt:"}
${commandHelp()}`;

function commandHelp(): string {
  return `  /reset                 start a new conversation
  /kv POLICY [BUDGET]    change the KV policy (and its per-layer budget) for the next answers; /kv alone shows it
  /stats                 the last answer's statistics: tokens, tok/s, KV peak against full KV
  /help                  these commands
  /quit                  exit (also Ctrl-D, or Ctrl-C twice at the prompt)
  Ctrl-C                 stop the current answer`;
}

class UsageError extends Error {}

/** Thrown from onToken to stop a generation that Ctrl-C interrupted; generate() frees the sequence. */
class Interrupted extends Error {}

interface ChatCli {
  model: string;
  maxTokens: number;
  temperature: number;
  seed: number;
  hideThought: boolean;
  quiet: boolean;
  kv: KvSettings;
}

function parseChatCli(args: string[]): ChatCli | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: "string" },
        "max-tokens": { type: "string" },
        temperature: { type: "string" },
        seed: { type: "string" },
        "hide-thought": { type: "boolean" },
        quiet: { type: "boolean" },
        ...KV_FLAG_OPTIONS,
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\nRun with --help for the options.`);
  }
  const v = parsed.values;
  if (v.help) return "help";
  const num = (name: string, text: string | undefined, fallback: number, ok: (x: number) => boolean) => {
    if (text === undefined) return fallback;
    const x = Number(text);
    if (text.trim() === "" || !Number.isFinite(x) || !ok(x)) {
      throw new UsageError(`--${name}: invalid value "${text}"`);
    }
    return x;
  };
  let kv: KvSettings;
  try {
    kv = kvSettingsFromFlags(v);
  } catch (e) {
    throw e instanceof KvOptionError ? new UsageError(e.format((s) => s.flag)) : e;
  }
  kv.policy ??= DEFAULT_POLICY;
  return {
    model: v.model ?? DEFAULT_MODEL_DIR,
    maxTokens: num("max-tokens", v["max-tokens"], 1024, (x) => Number.isInteger(x) && x > 0),
    temperature: num("temperature", v.temperature, 0, (x) => x >= 0),
    seed: num("seed", v.seed, 0, (x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32),
    hideThought: v["hide-thought"] ?? false,
    quiet: v.quiet ?? false,
    kv,
  };
}

/** Lines of stdin, one at a time; null at the end of input. */
class LineReader {
  readonly #reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  #buf = "";
  #done = false;

  async next(): Promise<string | null> {
    for (;;) {
      const nl = this.#buf.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buf.slice(0, nl).replace(/\r$/, "");
        this.#buf = this.#buf.slice(nl + 1);
        return line;
      }
      if (this.#done) {
        if (this.#buf === "") return null;
        const line = this.#buf;
        this.#buf = "";
        return line;
      }
      const r = await this.#reader.read();
      if (r.done) this.#done = true;
      else this.#buf += r.value;
    }
  }
}

const THINK_END = "</think>";

/** Splits streamed text at `</think>`: the thought before, the answer after (a marker split over pieces too). */
export class ThoughtSplitter {
  #inThought: boolean;
  #pending = "";

  constructor(startsInThought = true) {
    this.#inThought = startsInThought;
  }

  /** Whether the text so far is still the thought. */
  get inThought(): boolean {
    return this.#inThought;
  }

  /** Feeds a piece; returns what is final of the thought and of the answer. */
  push(text: string): { thought: string; answer: string; ended: boolean } {
    if (!this.#inThought) return { thought: "", answer: text, ended: false };
    this.#pending += text;
    const i = this.#pending.indexOf(THINK_END);
    if (i >= 0) {
      const thought = this.#pending.slice(0, i);
      const answer = this.#pending.slice(i + THINK_END.length).replace(/^\n+/, "");
      this.#pending = "";
      this.#inThought = false;
      return { thought, answer, ended: true };
    }
    // Hold back the longest tail that could begin the marker.
    let keep = 0;
    for (let k = Math.min(THINK_END.length - 1, this.#pending.length); k > 0; k--) {
      if (THINK_END.startsWith(this.#pending.slice(-k))) {
        keep = k;
        break;
      }
    }
    const thought = this.#pending.slice(0, this.#pending.length - keep);
    this.#pending = this.#pending.slice(this.#pending.length - keep);
    return { thought, answer: "", ended: false };
  }

  /** The held-back text at the end (still thought). */
  flush(): string {
    const t = this.#pending;
    this.#pending = "";
    return t;
  }
}

/** Runs the chat; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let cli;
  try {
    cli = parseChatCli(args);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    throw e;
  }
  if (cli === "help") {
    console.log(HELP);
    return 0;
  }
  const enc = new TextEncoder();
  const out = (s: string) => Deno.stdout.writeSync(enc.encode(s));
  let color = Deno.stdout.isTerminal();
  try {
    if (Deno.env.get("NO_COLOR")) color = false;
  } catch { /* no --allow-env: keep the terminal's answer */ }
  const dim = (s: string) => (color && s ? `\x1b[2m${s}\x1b[22m` : s);

  let engine: Engine;
  let defaults: KvPolicyOptions;
  let kv = cli.kv;
  try {
    defaults = await loadKvDefaults(cli.model);
    checkKvOptions(resolveKvOptions(kv, defaults), kv.policy);
    engine = await Engine.load(cli.model, { progress: cli.quiet ? false : undefined });
  } catch (e) {
    if (e instanceof KvOptionError) console.error(`error: ${e.format((s) => s.flag)}`);
    else if (e instanceof NoGpuError) console.error(`error: ${e.message}`);
    else console.error(`error: ${(e as Error).message}`);
    return e instanceof KvOptionError ? 2 : 1;
  }
  const tok = engine.tokenizer;
  if (!tok) {
    console.error(`error: model ${cli.model} has no tokenizer.json: the chat needs one`);
    engine.destroy();
    return 2;
  }
  // As `deno task generate --chat`: the model's own chat_template when it has one, else its tokenizer's family.
  const template = tok.chatTemplateSource ? undefined : tok.chatTemplate ?? "deepseek-r1";
  const context = engine.model.config.maxPositionEmbeddings;

  let messages: ChatMessage[] = [];
  let lastStats: GenerationStats | null = null;
  let generating = false;
  let abort = false;
  let interruptsAtPrompt = 0;
  const prompt = () => out("> ");
  const onSigint = () => {
    if (generating) {
      abort = true;
      return;
    }
    interruptsAtPrompt++;
    if (interruptsAtPrompt >= 2) {
      out("\n");
      engine.destroy();
      Deno.exit(0);
    }
    out("\n(Ctrl-C again to exit, or /quit)\n");
    prompt();
  };
  Deno.addSignalListener("SIGINT", onSigint);

  out(
    `Chat with ${cli.model} (KV ${kv.policy}${kv.budget !== undefined ? `, budget ${kv.budget}` : ""}). ` +
      `/help for the commands, /quit to exit.\n`,
  );
  const lines = new LineReader();
  try {
    for (;;) {
      prompt();
      const line = await lines.next();
      if (line === null) {
        out("\n");
        return 0;
      }
      interruptsAtPrompt = 0;
      const text = line.trim();
      if (text === "") continue;
      if (text.startsWith("/")) {
        const [cmd, ...rest] = text.split(/\s+/);
        if (cmd === "/quit" || cmd === "/exit") return 0;
        if (cmd === "/help") out(commandHelp() + "\n");
        else if (cmd === "/reset") {
          messages = [];
          out("(new conversation)\n");
        } else if (cmd === "/stats") {
          out(lastStats ? statsLine(lastStats) + "\n" : "(no answer yet)\n");
        } else if (cmd === "/kv") {
          if (rest.length === 0) {
            const o = resolveKvOptions(kv, defaults);
            out(`KV ${kv.policy}, budget ${o.budget} tokens per layer\n`);
          } else if (rest.length > 2) out("usage: /kv POLICY [BUDGET]\n");
          else {
            try {
              const next = kvSettingsFromFlags({ kv: rest[0], "kv-budget": rest[1] });
              const merged: KvSettings = { ...kv, ...next, lethe: { ...kv.lethe, ...next.lethe } };
              checkKvOptions(resolveKvOptions(merged, defaults), merged.policy);
              kv = merged;
              out(`KV ${kv.policy}, budget ${resolveKvOptions(kv, defaults).budget} tokens per layer\n`);
            } catch (e) {
              if (!(e instanceof KvOptionError)) throw e;
              out(`error: ${e.format((s) => (s.name === "policy" ? "POLICY" : "BUDGET"))}\n`);
            }
          }
        } else out(`unknown command ${cmd}: /help lists them\n`);
        continue;
      }

      const turn: ChatMessage[] = [...messages, { role: "user", content: text }];
      const ids = tok.encodeChat(turn, template, {
        defaultSystemPrompt: tok.defaultSystemPrompt,
        specialTokens: "plain",
      });
      const room = context - ids.length;
      if (room < 16) {
        out(`(the conversation fills the model's context of ${context} tokens: /reset to start anew)\n`);
        continue;
      }
      const splitter = new ThoughtSplitter(true);
      let answered = false;
      abort = false;
      generating = true;
      try {
        const result = await engine.generate(ids, {
          maxTokens: Math.min(cli.maxTokens, room),
          sampling: { temperature: cli.temperature, seed: cli.seed },
          kv,
          onToken: () => {
            if (abort) throw new Interrupted();
          },
          onText: (t) => {
            const p = splitter.push(t);
            if (!cli.hideThought) out(dim(p.thought));
            if (p.ended && !cli.hideThought) out("\n");
            if (p.answer) answered = true;
            out(p.answer);
          },
        });
        const tail = splitter.flush();
        if (!cli.hideThought) out(dim(tail));
        if (cli.hideThought && !answered && splitter.inThought) out("(no answer: the thought did not end)");
        out("\n");
        lastStats = result.stats;
        messages = [...turn, { role: "assistant", content: result.text }];
      } catch (e) {
        if (!(e instanceof Interrupted)) {
          out("\n");
          console.error(`error: ${(e as Error).message}`);
          continue;
        }
        out(`\n(stopped; this turn is not kept)\n`);
      } finally {
        generating = false;
        abort = false;
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSigint);
    engine.destroy();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
