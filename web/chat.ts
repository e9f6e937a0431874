/// <reference lib="dom" />
/**
 * The conversation: user messages, and assistant messages whose thought (the text before `</think>`) streams
 * into a collapsible "thinking" panel with the answer below it.
 */
import { ThinkSplitter } from "../src/server/text.ts";

function div(cls: string, text = ""): HTMLDivElement {
  const d = document.createElement("div");
  d.className = cls;
  d.textContent = text;
  return d;
}

/** One assistant message being streamed. */
export class AssistantMessage {
  /** The message's element. */
  readonly element: HTMLDivElement;
  readonly #splitter: ThinkSplitter;
  readonly #details: HTMLDetailsElement;
  readonly #summary: HTMLElement;
  readonly #thought: Text;
  readonly #answer: Text;
  readonly #meta: HTMLDivElement;
  #raw = "";
  #thinking = false;

  /** `startsInThought`: the prompt opened the thought (R1's generation prompt ends with `<think>`). */
  constructor(startsInThought: boolean) {
    this.#splitter = new ThinkSplitter(startsInThought);
    this.element = div("msg assistant");
    this.#details = document.createElement("details");
    this.#details.className = "thinking";
    this.#details.hidden = true;
    this.#summary = document.createElement("summary");
    this.#summary.textContent = "Thinking…";
    const pre = document.createElement("pre");
    pre.className = "thought";
    this.#thought = document.createTextNode("");
    pre.append(this.#thought);
    this.#details.append(this.#summary, pre);
    const answer = div("answer");
    this.#answer = document.createTextNode("");
    answer.append(this.#answer);
    this.#meta = div("meta");
    this.element.append(this.#details, answer, this.#meta);
  }

  /** Everything generated so far (thought, `</think>` and answer). */
  get raw(): string {
    return this.#raw;
  }

  /** Adds streamed text. */
  push(text: string): void {
    this.#raw += text;
    this.#show(this.#splitter.push(text));
  }

  /** Ends the stream; `meta` is a line of statistics under the answer. */
  finish(meta: string): void {
    this.#show(this.#splitter.flush());
    if (this.#thinking) this.#endThought();
    this.#meta.textContent = meta;
    this.element.classList.add("done");
  }

  /** Shows an error under what was generated. */
  fail(message: string): void {
    this.#show(this.#splitter.flush());
    this.#meta.textContent = message;
    this.element.classList.add("failed");
  }

  #show(pieces: { kind: "reasoning" | "content"; text: string }[]): void {
    for (const p of pieces) {
      if (p.kind === "reasoning") {
        if (!this.#thinking) {
          this.#thinking = true;
          this.#details.hidden = false;
          this.#details.open = true;
        }
        this.#thought.appendData(p.text);
        const pre = this.#thought.parentElement!;
        pre.scrollTop = pre.scrollHeight;
      } else {
        if (this.#thinking) this.#endThought();
        this.#answer.appendData(p.text);
      }
    }
  }

  #endThought(): void {
    this.#thinking = false;
    this.#details.open = false;
    const lines = this.#thought.data.split("\n").filter((l) => l.trim()).length;
    this.#summary.textContent = `Thought (${lines} line${lines === 1 ? "" : "s"})`;
  }
}

/** The message list. */
export class ChatView {
  readonly #list: HTMLElement;

  constructor(list: HTMLElement) {
    this.#list = list;
  }

  /** Adds a user message. */
  user(text: string): void {
    this.#list.append(div("msg user", text));
    this.#scroll();
  }

  /** Adds an assistant message to stream into. */
  assistant(startsInThought: boolean): AssistantMessage {
    const m = new AssistantMessage(startsInThought);
    this.#list.append(m.element);
    this.#scroll();
    return m;
  }

  /** A line of its own (errors, notes). */
  note(text: string, cls = "note"): void {
    this.#list.append(div(`msg ${cls}`, text));
    this.#scroll();
  }

  clear(): void {
    this.#list.replaceChildren();
  }

  /** Keeps the newest message in view while it streams. */
  #scroll(): void {
    this.#list.scrollTop = this.#list.scrollHeight;
  }

  /** Call after streamed text grew a message. */
  follow(): void {
    this.#scroll();
  }
}
