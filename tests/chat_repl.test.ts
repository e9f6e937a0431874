/**
 * `deno task chat` as a user drives it: in a pseudo-terminal (a detached tmux session), keys typed, the screen
 * read back with `tmux capture-pane`. Skips, saying so, when tmux is missing (.ci/run installs it).
 */
import { ok as assert } from "node:assert";
import { fileURLToPath } from "node:url";

const REPL = fileURLToPath(new URL("../src/chat_repl.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("..", import.meta.url));

function hasTmux(): boolean {
  try {
    return new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

const TMUX = hasTmux();
if (!TMUX) console.warn("tests/chat_repl.test.ts: tmux is not installed: the chat REPL test is SKIPPED");

Deno.test({
  name: "chat: answers, /stats, /kv, a second turn, Ctrl-C stops an answer and the REPL lives on, /quit",
  ignore: !TMUX,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const socket = `lethe-chat-${Deno.pid}-${Date.now()}`;
    const tmux = async (...args: string[]): Promise<string> => {
      const out = await new Deno.Command("tmux", { args: ["-L", socket, ...args], stderr: "piped" }).output();
      if (!out.success) throw new Error(`tmux ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
      return new TextDecoder().decode(out.stdout);
    };
    const screen = () => tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", "chat");
    /** Waits until `pred` holds for the screen; returns the screen. */
    const waitFor = async (what: string, pred: (s: string) => boolean, ms = 15_000): Promise<string> => {
      const end = Date.now() + ms;
      for (;;) {
        const s = await screen();
        if (pred(s)) return s;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; the screen:\n${s}`);
        await new Promise((r) => setTimeout(r, 150));
      }
    };
    const count = (s: string, sub: string) => s.split(sub).length - 1;
    const prompts = (s: string) => s.split("\n").filter((l) => l.startsWith("> ")).length;
    const alive = async () => {
      const panes = await tmux("list-panes", "-t", "chat", "-F", "#{pane_dead}");
      return panes.trim() === "0";
    };
    const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
    const cmd = [
      q(Deno.execPath()),
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      q(REPL),
      "--quiet",
    ].join(" ") + "; echo CHAT_EXITED=$?; sleep 30";
    await tmux(
      "-f",
      "/dev/null",
      "new-session",
      "-d",
      "-s",
      "chat",
      "-x",
      "160",
      "-y",
      "50",
      "-c",
      ROOT,
      "-e",
      `XDG_RUNTIME_DIR=${Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp"}`,
      "-e",
      "NO_COLOR=1",
      cmd,
    );
    try {
      await waitFor("the first prompt", (s) => prompts(s) >= 1, 30_000);
      await tmux("send-keys", "-t", "chat", "-l", "add the numbers 12 34 56.");
      await tmux("send-keys", "-t", "chat", "Enter");
      let s = await waitFor("the answer 102", (s) => /^102$/m.test(s) && prompts(s) >= 2);
      assert(s.includes("so the sum is 102."), "the thought is shown");

      await tmux("send-keys", "-t", "chat", "-l", "/stats");
      await tmux("send-keys", "-t", "chat", "Enter");
      s = await waitFor("the stats", (s) => s.includes("full f16 KV at the end:") && prompts(s) >= 3);
      assert(/KV full f16: peak [\d.]+ KiB allocated, [\d.]+ KiB live/.test(s), s);

      await tmux("send-keys", "-t", "chat", "-l", "/kv lethe 64");
      await tmux("send-keys", "-t", "chat", "Enter");
      await waitFor(
        "the KV change",
        (s) => s.includes("KV lethe, budget 64 tokens per layer") && prompts(s) >= 4,
      );

      await tmux("send-keys", "-t", "chat", "-l", "/reset");
      await tmux("send-keys", "-t", "chat", "Enter");
      await waitFor("the reset", (s) => s.includes("(new conversation)") && prompts(s) >= 5);
      await tmux("send-keys", "-t", "chat", "-l", "add the numbers 12 34 56.");
      await tmux("send-keys", "-t", "chat", "Enter");
      await waitFor(
        "the second answer 102 (under Lethe)",
        (s) => (s.match(/^102$/gm) ?? []).length >= 2 && prompts(s) >= 6,
      );

      await tmux(
        "send-keys",
        "-t",
        "chat",
        "-l",
        "walk 200 steps from 35. map: 13>35, 54>55, 35>54, 81>82, 55>81, 82>13.",
      );
      await tmux("send-keys", "-t", "chat", "Enter");
      await waitFor("the walk to start", (s) => count(s, "#19") >= 1);
      await tmux("send-keys", "-t", "chat", "C-c");
      s = await waitFor(
        "the prompt after Ctrl-C",
        (s) => s.includes("(stopped; this turn is not kept)") && prompts(s) >= 7,
      );
      assert(!s.includes("CHAT_EXITED"), "Ctrl-C during an answer does not end the chat");
      assert(await alive(), "the chat is alive after Ctrl-C");

      await tmux("send-keys", "-t", "chat", "C-c");
      await waitFor(
        "the hint after Ctrl-C at the prompt",
        (s) => s.includes("(Ctrl-C again to exit, or /quit)"),
      );
      assert(await alive(), "one Ctrl-C at the prompt does not end the chat");
      await tmux("send-keys", "-t", "chat", "-l", "/quit");
      await tmux("send-keys", "-t", "chat", "Enter");
      await waitFor("the exit", (s) => s.includes("CHAT_EXITED=0"));
    } finally {
      await tmux("kill-server").catch(() => {});
    }
  },
});
