/**
 * GPT-2 byte-level alphabet and UTF-8 helpers.
 *
 * Byte-level BPE vocabularies spell every byte as a printable code point so that a token is always a valid
 * string: the printable Latin-1 bytes stand for themselves and the other 68 bytes are moved to U+0100 and up,
 * in byte order.
 *
 * @module
 */

/** `BYTE_TO_CHAR[b]` is the vocabulary character that stands for byte `b`. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** Inverse of {@link BYTE_TO_CHAR}: code point → byte, or -1 for code points outside the alphabet. */
export const CHAR_TO_BYTE: Int16Array = buildCharToByte();

function buildByteToChar(): string[] {
  const table: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : next++);
  }
  return table;
}

function buildCharToByte(): Int16Array {
  // All alphabet characters are below U+0144, so a small dense table suffices.
  const table = new Int16Array(0x200).fill(-1);
  for (let b = 0; b < 256; b++) table[BYTE_TO_CHAR[b].charCodeAt(0)] = b;
  return table;
}

/**
 * Decodes a byte-level token spelling back to bytes, or returns null when a character is outside the
 * alphabet (then the caller uses the token's own UTF-8 bytes, as Hugging Face's ByteLevel decoder does).
 */
export function byteLevelToBytes(token: string): Uint8Array | null {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const c = token.charCodeAt(i);
    const b = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}

/** Spells a byte sequence in the byte-level alphabet. */
export function bytesToByteLevel(bytes: ArrayLike<number>, length: number = bytes.length): string {
  let s = "";
  for (let i = 0; i < length; i++) s += BYTE_TO_CHAR[bytes[i]];
  return s;
}

/**
 * Writes the UTF-8 bytes of `s` into `out` (which must hold 3 × s.length bytes) and returns the count.
 * Lone surrogates become U+FFFD, exactly as TextEncoder does. Hand-written because the encoder runs once per
 * pre-token on cache misses, where allocating a fresh Uint8Array per call would dominate.
 */
export function utf8Encode(s: string, out: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[n++] = c;
    } else if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
      out[n++] = 0x80 | (c & 63);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          out[n++] = 0xf0 | (c >> 18);
          out[n++] = 0x80 | ((c >> 12) & 63);
          out[n++] = 0x80 | ((c >> 6) & 63);
          out[n++] = 0x80 | (c & 63);
          continue;
        }
        c = 0xfffd;
      }
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 63);
      out[n++] = 0x80 | (c & 63);
    }
  }
  return n;
}
