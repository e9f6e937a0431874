/**
 * Answer extraction and normalisation for the evaluation harness: `\boxed{…}` (nested braces) for MATH-style
 * answers, the number after `####` for GSM8K references, the text after `</think>` for R1-style outputs, and
 * a normalisation that makes "1,000", "$1000", "1000.0" and "1000" compare equal.
 */

/** The contents of the last `\boxed{…}` (or `\fbox{…}`) in `text`, braces balanced; null when absent. */
export function extractBoxed(text: string): string | null {
  const re = /\\(?:boxed|fbox)\s*\{/g;
  let last: number | null = null;
  for (let m = re.exec(text); m; m = re.exec(text)) last = m.index + m[0].length;
  if (last === null) {
    // `\boxed 5` (no braces), as some models write it.
    const bare = /\\boxed\s+([^\s$]+)/g;
    let found: string | null = null;
    for (let m = bare.exec(text); m; m = bare.exec(text)) found = m[1];
    return found;
  }
  let depth = 1;
  for (let i = last; i < text.length; i++) {
    const c = text[i];
    if (c === "\\") {
      i++; // an escaped character (\{ or \}) does not change the depth
      continue;
    }
    if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return text.slice(last, i);
  }
  return null; // unbalanced: the output was cut off inside the box
}

/** The reference answer of a GSM8K row: what follows the last `####`, normalised; null when absent. */
export function gsm8kReference(answer: string): string | null {
  const at = answer.lastIndexOf("####");
  if (at < 0) return null;
  return normalizeAnswer(answer.slice(at + 4));
}

const NUMBER = /-?\d[\d,]*(?:\.\d+)?(?:\s*\/\s*\d+)?/g;

/** The last number in `text` (commas, a decimal part, or a `a/b` fraction included), or null. */
export function lastNumber(text: string): string | null {
  const t = text.replace(/\u2212/g, "-");
  let found: string | null = null;
  for (const m of t.matchAll(NUMBER)) {
    // A comma group must be three digits ("1,000"), else the comma is punctuation ("3, 4").
    const parts = m[0].split(",");
    if (parts.length > 1 && !parts.slice(1).every((p) => /^\d{3}(?:\.\d+)?(?:\s*\/\s*\d+)?$/.test(p))) {
      found = parts.at(-1)!;
    } else found = m[0];
  }
  return found;
}

/** The text after the last `</think>` (the whole text when there is none). */
export function afterThink(text: string): string {
  const at = text.lastIndexOf("</think>");
  return at < 0 ? text : text.slice(at + "</think>".length);
}

/**
 * The final answer of a model's output: the answer part (after `</think>`), its last `\boxed{…}` when there
 * is one, else its last number; null when neither is found.
 */
export function extractModelAnswer(text: string): string | null {
  const answer = afterThink(text);
  const boxed = extractBoxed(answer) ?? extractBoxed(text);
  if (boxed !== null) return normalizeAnswer(boxed);
  const n = lastNumber(answer) ?? (answer === text ? null : lastNumber(text));
  return n === null ? null : normalizeAnswer(n);
}

/** Normalises an answer for comparison: no spaces, `$`, units of degrees/percent, number commas, or `.0`. */
export function normalizeAnswer(s: string): string {
  let t = s.trim().replace(/\u2212/g, "-");
  t = t.replace(/\\text\{\s*([^{}]*)\}/g, "$1").replace(/\\mbox\{\s*([^{}]*)\}/g, "$1");
  t = t.replace(/\\[dt]frac/g, "\\frac").replace(/\\left|\\right|\\!|\\,|\\;|\\:/g, "");
  t = t.replace(/\\\$|\$/g, "").replace(/\\%|%/g, "");
  t = t.replace(/\^\s*\{?\s*\\circ\s*\}?/g, "").replace(/\\circ/g, "");
  t = t.replace(/\s+/g, "");
  // \frac{a}{b}, \frac ab → a/b when both are plain (signed) numbers.
  t = t.replace(/\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}/g, "$1/$2");
  t = t.replace(/\\frac(\d)(\d)/g, "$1/$2");
  // Thousands separators: only between digit groups of three.
  t = t.replace(/(\d),(?=\d{3}(?!\d))/g, "$1");
  // A trailing full stop, then trailing zeros of a decimal: 18.00 → 18, 2.50 → 2.5.
  t = t.replace(/\.$/, "");
  t = t.replace(/^(-?\d+)\.0+$/, "$1").replace(/^(-?\d+\.\d*?[1-9])0+$/, "$1");
  // Leading "x=" of a single-variable answer.
  t = t.replace(/^[a-zA-Z]=(?=-?\d)/, "");
  if (/^\+\d/.test(t)) t = t.slice(1);
  return t;
}

/** The numeric value of a normalised answer ("-3", "2.5", "3/4"), or null when it is not a plain number. */
export function numericValue(s: string): number | null {
  const f = /^(-?\d+(?:\.\d+)?)\/(-?\d+(?:\.\d+)?)$/.exec(s);
  if (f) {
    const d = Number(f[2]);
    return d === 0 ? null : Number(f[1]) / d;
  }
  return /^-?\d+(?:\.\d+)?$/.test(s) ? Number(s) : null;
}

/** Whether a predicted answer matches the reference: equal after normalisation, or equal as numbers. */
export function answersMatch(predicted: string | null, reference: string): boolean {
  if (predicted === null) return false;
  const a = normalizeAnswer(predicted);
  const b = normalizeAnswer(reference);
  if (a === b) return true;
  const x = numericValue(a);
  const y = numericValue(b);
  return x !== null && y !== null && Math.abs(x - y) <= 1e-9 * Math.max(1, Math.abs(y));
}
