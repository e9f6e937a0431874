/**
 * Byte-level BPE model: turns one pre-token into token ids by applying merges in rank order.
 *
 * Merges are looked up in an open-addressing hash table keyed by the pair of symbol ids (two Int32Arrays
 * for the key halves, one for the rank), so the inner loop never builds strings. Short words use an O(n²)
 * scan (fast for the typical 1–10 symbols); long ones a binary heap over a linked list. Results are cached
 * per pre-token string, since natural text repeats words heavily.
 *
 * @module
 */

import { BYTE_TO_CHAR, bytesToByteLevel, utf8Encode } from "./bytes.ts";

/** The parts of a `tokenizer.json` BPE model that this encoder uses. */
export interface BpeModelJson {
  vocab: Record<string, number>;
  merges: Array<string | [string, string]>;
  ignore_merges?: boolean;
}

/** Above this many symbols a word is merged with the heap algorithm instead of the quadratic scan. */
const SMALL_WORD = 48;
/** The word cache is dropped wholesale when it grows past this many entries (bounded memory). */
const CACHE_LIMIT = 100_000;
const TWO32 = 4294967296;

/** Encodes pre-tokens with a byte-level BPE vocabulary. */
export class BytePairEncoder {
  /** Model vocabulary (byte-level spellings → ids); added tokens are kept by the Tokenizer. */
  readonly vocab: Map<string, number>;
  /** Model id → byte-level spelling (sparse where the model has gaps). */
  readonly idToToken: string[];
  private readonly ignoreMerges: boolean;
  private readonly byteIds: Int32Array = new Int32Array(256);
  /** Slot h holds [left id (-1 = empty), right id, rank, unused] at 4h: one cache line serves a probe. */
  private readonly table: Int32Array;
  private readonly shift: number;
  private readonly mask: number;
  private readonly mergedId: Int32Array;
  private readonly cache: Map<string, number[]> = new Map();
  private bytes: Uint8Array = new Uint8Array(256);
  private syms: Int32Array = new Int32Array(256);
  private ranks: Int32Array = new Int32Array(256);

  constructor(model: BpeModelJson) {
    this.vocab = new Map();
    this.idToToken = [];
    const vocab = model.vocab;
    for (const tok in vocab) {
      const id = vocab[tok];
      this.vocab.set(tok, id);
      this.idToToken[id] = tok;
    }
    this.ignoreMerges = model.ignore_merges === true;
    for (let b = 0; b < 256; b++) this.byteIds[b] = this.vocab.get(BYTE_TO_CHAR[b]) ?? -1;

    const merges = model.merges;
    let bits = 4;
    while ((1 << bits) < merges.length * 2) bits++;
    this.shift = 32 - bits;
    this.mask = (4 << bits) - 1;
    this.table = new Int32Array(4 << bits).fill(-1);
    this.mergedId = new Int32Array(merges.length);
    for (let rank = 0; rank < merges.length; rank++) {
      const m = merges[rank];
      let left: string, right: string;
      if (typeof m === "string") {
        const sp = m.indexOf(" ");
        if (sp < 0 || m.indexOf(" ", sp + 1) >= 0) {
          throw new Error(`tokenizer: malformed merge ${JSON.stringify(m)}`);
        }
        left = m.slice(0, sp);
        right = m.slice(sp + 1);
      } else {
        [left, right] = m;
      }
      const a = this.vocab.get(left), b = this.vocab.get(right), ab = this.vocab.get(left + right);
      if (a === undefined || b === undefined || ab === undefined) {
        throw new Error(`tokenizer: merge ${JSON.stringify(m)} uses a token missing from the vocabulary`);
      }
      this.mergedId[rank] = ab;
      // A repeated pair keeps its last rank, as the Rust crate's HashMap collection does.
      const t = this.table;
      let h = this.hash(a, b) << 2;
      while (t[h] !== -1 && (t[h] !== a || t[h + 1] !== b)) h = (h + 4) & this.mask;
      t[h] = a;
      t[h + 1] = b;
      t[h + 2] = rank;
    }
  }

  private hash(a: number, b: number): number {
    return Math.imul(a ^ Math.imul(b, 0x85ebca6b), 0x9e3779b1) >>> this.shift;
  }

  /** Rank of merging symbols a and b, or -1 when no merge exists. */
  private rank(a: number, b: number): number {
    const t = this.table, mask = this.mask;
    let h = this.hash(a, b) << 2;
    for (;;) {
      const k = t[h];
      if (k === -1) return -1;
      if (k === a && t[h + 1] === b) return t[h + 2];
      h = (h + 4) & mask;
    }
  }

  /** Appends the ids of one pre-token (a plain-text string, before byte-level spelling) to `out`. */
  encodeWord(piece: string, out: number[]): void {
    let ids = this.cache.get(piece);
    if (ids === undefined) {
      ids = this.encodeUncached(piece);
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(piece, ids);
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]);
  }

  /** Forgets cached words (for benchmarks of the cold path). */
  clearCache(): void {
    this.cache.clear();
  }

  private encodeUncached(piece: string): number[] {
    if (this.bytes.length < piece.length * 3) {
      const cap = piece.length * 3 + 16;
      this.bytes = new Uint8Array(cap);
      this.syms = new Int32Array(cap);
      this.ranks = new Int32Array(cap);
    }
    const bytes = this.bytes;
    const n = utf8Encode(piece, bytes);
    if (this.ignoreMerges) {
      // Llama-3 style: a pre-token that is itself a vocabulary entry is emitted whole, merges or not.
      const whole = this.vocab.get(this.byteLevelKey(piece, bytes, n));
      if (whole !== undefined) return [whole];
    }
    const syms = this.syms;
    for (let i = 0; i < n; i++) {
      const id = this.byteIds[bytes[i]];
      if (id < 0) {
        throw new Error(`tokenizer: byte 0x${bytes[i].toString(16)} has no token in the vocabulary`);
      }
      syms[i] = id;
    }
    const len = n <= SMALL_WORD ? this.mergeSmall(n) : this.mergeLarge(n);
    const ids: number[] = new Array(len);
    for (let i = 0; i < len; i++) ids[i] = syms[i];
    return ids;
  }

  /**
   * The byte-level spelling of a pre-token. Printable ASCII spells itself and a leading space is "Ġ", which
   * covers most words without building the string one character at a time.
   */
  private byteLevelKey(piece: string, bytes: Uint8Array, n: number): string {
    if (n !== piece.length) return bytesToByteLevel(bytes, n);
    for (let i = 1; i < n; i++) {
      const b = bytes[i];
      if (b < 0x21 || b > 0x7e) return bytesToByteLevel(bytes, n);
    }
    const b0 = bytes[0];
    if (b0 === 0x20) return "Ġ" + piece.slice(1);
    return b0 >= 0x21 && b0 <= 0x7e ? piece : bytesToByteLevel(bytes, n);
  }

  /** Quadratic merge: repeatedly merges the leftmost lowest-rank pair. Returns the new symbol count. */
  private mergeSmall(n: number): number {
    const syms = this.syms, ranks = this.ranks, merged = this.mergedId;
    for (let i = 0; i + 1 < n; i++) ranks[i] = this.rank(syms[i], syms[i + 1]);
    while (n > 1) {
      let best = -1, bestRank = 0x7fffffff;
      for (let i = 0; i + 1 < n; i++) {
        const r = ranks[i];
        if (r >= 0 && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      syms[best] = merged[bestRank];
      for (let j = best + 1; j + 1 < n; j++) {
        syms[j] = syms[j + 1];
        ranks[j] = ranks[j + 1];
      }
      n--;
      if (best > 0) ranks[best - 1] = this.rank(syms[best - 1], syms[best]);
      if (best + 1 < n) ranks[best] = this.rank(syms[best], syms[best + 1]);
    }
    return n;
  }

  /**
   * Heap merge for long words: entries are rank·2³² + position, so popping the minimum gives the lowest
   * rank and, among equal ranks, the leftmost pair — the same order as the quadratic scan.
   */
  private mergeLarge(n: number): number {
    const syms = this.syms, merged = this.mergedId;
    const next = new Int32Array(n), prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new Float64Array(3 * n);
    let size = 0;
    const push = (key: number): void => {
      let i = size++;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p] <= key) break;
        heap[i] = heap[p];
        i = p;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0];
      const last = heap[--size];
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= size) break;
        if (c + 1 < size && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= last) break;
        heap[i] = heap[c];
        i = c;
      }
      heap[i] = last;
      return top;
    };
    for (let i = 0; i + 1 < n; i++) {
      const r = this.rank(syms[i], syms[i + 1]);
      if (r >= 0) push(r * TWO32 + i);
    }
    while (size > 0) {
      const key = pop();
      const r = Math.floor(key / TWO32);
      const pos = key - r * TWO32;
      const q = next[pos];
      if (syms[pos] < 0 || q < 0 || this.rank(syms[pos], syms[q]) !== r) continue; // stale entry
      syms[pos] = merged[r];
      syms[q] = -1;
      next[pos] = next[q];
      if (next[q] >= 0) prev[next[q]] = pos;
      const p = prev[pos];
      if (p >= 0) {
        const rl = this.rank(syms[p], syms[pos]);
        if (rl >= 0) push(rl * TWO32 + p);
      }
      if (next[pos] >= 0) {
        const rr = this.rank(syms[pos], syms[next[pos]]);
        if (rr >= 0) push(rr * TWO32 + pos);
      }
    }
    let len = 0;
    for (let i = 0; i >= 0; i = next[i]) syms[len++] = syms[i];
    return len;
  }
}
