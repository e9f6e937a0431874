"""The tiny byte-level BPE tokenizer of lethe-reasoner-tiny, written as a Hugging Face `tokenizer.json`,
and a Python encoder that follows the same rules as Lethe's TypeScript tokenizer for this file:
added tokens split out first (exact text), then a Split pre-tokenizer (regex ` ?[a-z]+| ?[0-9]+`, Isolated), the
GPT-2 byte-level alphabet, and BPE over each piece. The base vocabulary is the 256 byte symbols; merges only
build a few frequent task words and the numbers 10..99 written after a space; other digits,
operators and single letters stay one token each.
"""
import json
import re

from tasks import ASSISTANT, BOS, EOS, END_THINK, THINK, USER

SPLIT_REGEX = "[a-z] =|[#>][0-9]+| ?[a-z]+| ?[0-9]+"
MERGE_WORDS = ["values", "are", "mod", "what", "is", "so", "the", "add", "numbers", "sum", "copy", "list", "walk", "steps",
               "from", "map", "ends"]
ADDED = [BOS, EOS, USER, ASSISTANT, THINK, END_THINK]
SPECIAL = {BOS, EOS}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHARS = bytes_to_unicode()


def build_merges() -> list[tuple[str, str]]:
    """Merges that assemble each word left to right, then attach the leading space (Ġ)."""
    merges: list[tuple[str, str]] = []
    seen = set()

    def add(a, b):
        if (a, b) not in seen:
            seen.add((a, b))
            merges.append((a, b))

    for w in MERGE_WORDS:
        cur = w[0]
        for ch in w[1:]:
            add(cur, ch)
            cur += ch
    for w in MERGE_WORDS:
        add(BYTE_CHARS[32], w)
    # " 10" .. " 99" become single tokens (so a looked-up number is one token); digits written without a
    # leading space stay one token each for the scratchpad arithmetic.
    # " a" .. " z" and " =", " +", " -" too (made for the retired chain family's variables, like "x =" below
    # and its words in MERGE_WORDS; kept because the shipped token ids follow this order of merges).
    for c in "abcdefghijklmnopqrstuvwxyz=+-0123456789":
        add(BYTE_CHARS[32], c)
    for c in "abcdefghijklmnopqrstuvwxyz":
        add(c, BYTE_CHARS[32] + "=")
    for n in range(10, 100):
        add(BYTE_CHARS[32] + str(n)[0], str(n)[1])
    # "#1" .. "#99", the walk's countdown of steps left: one token each, and distinct from the numbers it
    # walks over, so looking a number up never lands on a counter. "#100" and up encode as "#10" .. "#29" then
    # a digit, which mirrors how the prompt writes them (" 12" then a digit) and counts down digit by digit.
    for n in range(1, 100):
        add("#" + str(n)[:-1], str(n)[-1])
    # ">10" .. ">99", an arrow's target in the walk's map: a number then appears once in the prompt (as a key),
    # so the lookup has one answer. (This order of merges is the shipped one: token ids follow it.)
    for n in range(20, 100):
        add(">" + str(n)[0], str(n)[1])
    for d in "123456789":
        add(">", d)
    for n in range(10, 20):
        add(">1", str(n)[1])
    return merges


class Tok:
    def __init__(self):
        self.merges = build_merges()
        self.vocab: dict[str, int] = {}
        for b in range(256):
            self.vocab[BYTE_CHARS[b]] = len(self.vocab)
        for a, b in self.merges:
            if a + b not in self.vocab:
                self.vocab[a + b] = len(self.vocab)
        self.added = {t: len(self.vocab) + i for i, t in enumerate(ADDED)}
        self.vocab_size = len(self.vocab) + len(self.added)
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.id_to_str = {i: s for s, i in self.vocab.items()}
        self.id_to_str.update({i: s for s, i in self.added.items()})
        self.byte_decoder = {c: b for b, c in BYTE_CHARS.items()}
        self._added_re = re.compile("|".join(re.escape(t) for t in sorted(ADDED, key=len, reverse=True)))
        self._split_re = re.compile(SPLIT_REGEX)
        self._cache: dict[str, list[int]] = {}

    def _bpe(self, piece: str) -> list[int]:
        hit = self._cache.get(piece)
        if hit is not None:
            return hit
        syms = [BYTE_CHARS[b] for b in piece.encode("utf-8")]
        while len(syms) > 1:
            best = None
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            syms = syms[:i] + [syms[i] + syms[i + 1]] + syms[i + 2:]
        ids = [self.vocab[s] for s in syms]
        self._cache[piece] = ids
        return ids

    def _encode_plain(self, text: str, out: list[int]) -> None:
        last = 0
        for m in self._split_re.finditer(text):
            if m.start() > last:
                out.extend(self._bpe(text[last:m.start()]))
            out.extend(self._bpe(m.group(0)))
            last = m.end()
        if last < len(text):
            out.extend(self._bpe(text[last:]))

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        last = 0
        for m in self._added_re.finditer(text):
            if m.start() > last:
                self._encode_plain(text[last:m.start()], out)
            out.append(self.added[m.group(0)])
            last = m.end()
        if last < len(text):
            self._encode_plain(text[last:], out)
        return out

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        for i in ids:
            s = self.id_to_str[i]
            if s in self.added:
                out.extend(s.encode("utf-8"))
            else:
                out.extend(self.byte_decoder[c] for c in s)
        return out.decode("utf-8", errors="replace")

    def tokenizer_json(self) -> dict:
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": t in SPECIAL}
                for t, i in self.added.items()
            ],
            "normalizer": None,
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": SPLIT_REGEX}, "behavior": "Isolated", "invert": False},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
                ],
            },
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": self.vocab,
                "merges": [[a, b] for a, b in self.merges],
            },
        }

    def tokenizer_config_json(self) -> dict:
        template = (
            "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
            "{{ bos_token }}{% for message in messages %}"
            "{% if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
            "{% elif message['role'] == 'assistant' %}{% set content = message['content'] %}"
            "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
            "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
        )
        return {
            "add_bos_token": False,
            "add_eos_token": False,
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": EOS,
            "model_max_length": 2048,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            "legacy": True,
            "chat_template": template,
        }

    def write(self, out_dir: str) -> None:
        with open(f"{out_dir}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(self.tokenizer_json(), f, ensure_ascii=False, indent=1)
            f.write("\n")
        with open(f"{out_dir}/tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(self.tokenizer_config_json(), f, ensure_ascii=False, indent=1)
            f.write("\n")
