/**
 * Translation of the Oniguruma patterns found in `tokenizer.json` (the Rust `tokenizers` crate compiles
 * them with Oniguruma) into JavaScript `RegExp`s with the `u` flag.
 *
 * Semantics that differ and are translated:
 * - `\s`/`\S`: Oniguruma uses the Unicode White_Space property (includes U+0085, excludes U+FEFF); JS `\s`
 *   is a different set, so both become `\p{White_Space}`/`\P{White_Space}`.
 * - `\d`, `\w`: Unicode in Oniguruma, ASCII in JS → `\p{Nd}`, `[\p{L}\p{M}\p{Nd}\p{Pc}]`.
 * - `.` excludes only `\n` in Oniguruma → `[^\n]`.
 * - `^`/`$` are line anchors (only `\n`) in Ruby syntax → look-arounds; `\A`/`\z` are input anchors.
 * - `\x{HHHH}` → `\u{HHHH}`; identity escapes of non-syntax characters (e.g. `\'`) lose their backslash,
 *   which `u` mode requires.
 * - `(?i:…)` is kept: V8 supports modifier groups and folds case with Unicode simple case folding, as
 *   Oniguruma does for the single letters these patterns use (`'s` also matches `'ſ` in both).
 *
 * Constructs whose meaning cannot be kept (atomic groups, possessive quantifiers, nested classes and
 * intersections, POSIX brackets, `\G`, `\K`, `\h`) throw instead of silently changing the tokenization.
 *
 * @module
 */

const SYNTAX_CHARS = "^$\\.*+?()[]{}|/";
const WORD = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

/** Translates an Oniguruma pattern to an equivalent JavaScript pattern source for the `u` flag. */
export function onigToJsSource(pattern: string): string {
  let out = "";
  let inClass = false;
  let i = 0;
  const fail = (what: string): never => {
    throw new Error(
      `tokenizer regex: unsupported Oniguruma construct ${what} at ${i} in ${JSON.stringify(pattern)}`,
    );
  };
  while (i < pattern.length) {
    const c = pattern[i];
    if (c === "\\") {
      const e = pattern[i + 1];
      if (e === undefined) fail("trailing backslash");
      i += 2;
      switch (e) {
        case "s":
          out += "\\p{White_Space}";
          break;
        case "S":
          out += "\\P{White_Space}";
          break;
        case "d":
          out += "\\p{Nd}";
          break;
        case "D":
          out += "\\P{Nd}";
          break;
        case "w":
          out += inClass ? WORD : `[${WORD}]`;
          break;
        case "W":
          if (inClass) fail("\\W inside a class");
          out += `[^${WORD}]`;
          break;
        case "A":
          if (inClass) fail("\\A inside a class");
          out += "(?<![\\s\\S])";
          break;
        case "z":
          if (inClass) fail("\\z inside a class");
          out += "(?![\\s\\S])";
          break;
        case "Z":
          if (inClass) fail("\\Z inside a class");
          out += "(?=\\n?(?![\\s\\S]))";
          break;
        case "p":
        case "P": {
          const close = pattern.indexOf("}", i);
          if (pattern[i] !== "{" || close < 0) fail(`\\${e} without braces`);
          let name = pattern.slice(i + 1, close);
          let neg = e === "P";
          if (name.startsWith("^")) {
            name = name.slice(1);
            neg = !neg;
          }
          out += `\\${neg ? "P" : "p"}{${name}}`;
          i = close + 1;
          break;
        }
        case "x": {
          if (pattern[i] === "{") {
            const close = pattern.indexOf("}", i);
            if (close < 0) fail("\\x{ without }");
            out += `\\u{${pattern.slice(i + 1, close)}}`;
            i = close + 1;
          } else {
            out += "\\x" + pattern.slice(i, i + 2);
            i += 2;
          }
          break;
        }
        case "u":
          out += "\\u" + pattern.slice(i, i + 4);
          i += 4;
          break;
        case "n":
        case "r":
        case "t":
        case "f":
        case "v":
        case "b":
        case "B":
          if (inClass && (e === "b" || e === "B")) fail(`\\${e} inside a class`);
          out += "\\" + e;
          break;
        case "0":
          out += "\\0";
          break;
        case "-":
          out += inClass ? "\\-" : "-";
          break;
        default:
          if (/[A-Za-z0-9]/.test(e)) fail(`\\${e}`);
          out += SYNTAX_CHARS.includes(e) ? "\\" + e : e;
      }
      continue;
    }
    if (inClass) {
      if (c === "[") {
        if (pattern[i + 1] === ":") fail("POSIX bracket");
        fail("nested character class");
      }
      if (c === "&" && pattern[i + 1] === "&") fail("class intersection");
      if (c === "]") inClass = false;
      out += c;
      i++;
      continue;
    }
    switch (c) {
      case "[":
        inClass = true;
        out += c;
        i++;
        if (pattern[i] === "^") {
          out += "^";
          i++;
        }
        // A leading ']' is a literal in Oniguruma.
        if (pattern[i] === "]") {
          out += "\\]";
          i++;
        }
        continue;
      case "(":
        if (pattern[i + 1] === "?") {
          const rest = pattern.slice(i + 2);
          const ok = [":", "=", "!", "<=", "<!", "i:"].find((p) => rest.startsWith(p));
          if (ok === undefined) {
            if (rest.startsWith("<") && /^<[A-Za-z_]\w*>/.test(rest)) {
              out += "(?";
              i += 2;
              continue;
            }
            fail(`group (?${rest.slice(0, 2)}`);
          }
          out += "(?" + ok;
          i += 2 + ok!.length;
          continue;
        }
        out += c;
        i++;
        continue;
      case "+":
      case "*":
      case "?":
      case "}":
        out += c;
        i++;
        if (pattern[i] === "+") fail("possessive quantifier");
        continue;
      case ".":
        out += "[^\\n]";
        i++;
        continue;
      case "^":
        out += "(?<![^\\n])";
        i++;
        continue;
      case "$":
        out += "(?![^\\n])";
        i++;
        continue;
      default:
        out += c;
        i++;
    }
  }
  if (inClass) fail("unterminated class");
  return out;
}

/** Compiles an Oniguruma pattern to a global, Unicode-aware JavaScript RegExp. */
export function onigToRegExp(pattern: string): RegExp {
  return new RegExp(onigToJsSource(pattern), "gu");
}

/** Escapes a literal string for use inside a JavaScript `u`-mode pattern. */
export function escapeRegExp(s: string): string {
  return s.replace(/[\^$\\.*+?()[\]{}|/]/g, "\\$&");
}
