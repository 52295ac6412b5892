#!/usr/bin/python3
"""The demo model's small byte-level BPE tokenizer: builds tokenizer.json in the real Hugging Face
format and encodes/decodes text exactly as a Qwen2/Qwen3 tokenizer does (docs/qwen3vl.md §7).

Vocabulary (ids are fixed by construction, deterministic):
  0..255    the 256 byte tokens, in GPT-2 bytes_to_unicode order (like Qwen's own vocabulary);
  256..     one token per BPE merge, learned greedily (most frequent pair, ties by the pair's text)
            from the demo's template words until each is a single token; digits, '.', '<', '>'
            stay single tokens, so timestamps are spelled digit by digit as in Qwen;
  then      the Qwen added tokens (<|endoftext|>, <|im_start|>, <|im_end|>, ..., <|vision_start|>,
            <|vision_end|>, <|vision_pad|>, <|image_pad|>, <|video_pad|>, <tool_call>, ...) in
            Qwen's order, as added_tokens (not in model.vocab, as in Qwen's tokenizer.json).

Encoding (what model/'s C tokenizer does with the same file): NFC; split out added tokens
literally; pre-tokenize with the Qwen2 regex (implemented as an exact scanner, since Python's re
has no \\p{L}); map bytes through bytes_to_unicode; merge by rank; look up ids.

Usage: tokenizer.py build OUT.json      writes the tokenizer
       tokenizer.py encode TOK.json TEXT prints ids (added tokens parsed)
"""
import json
import sys
import unicodedata

# Words of the prompt and answer templates (and the chat roles) that become single tokens.
TEMPLATE_WORDS = [
    " seconds", " box", " red", " green", " blue", " yellow", " white", "The", " is", " visible",
    " from", " to", "There", " no", " in", " the", " video", "When", " does", " appear", "user",
    "assistant", "?", "\n",
]

QWEN_ADDED = [  # (content, special) in Qwen's id order (151643..151668)
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table, in its canonical order."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


BYTE_ORDER = bytes_to_unicode()
B2U = {b: u for b, u in BYTE_ORDER}
U2B = {u: b for b, u in BYTE_ORDER}


# ---------------------------------------------------------------------------------------------------
# Pre-tokenizer: an exact scanner for the Qwen2 regex (alternatives tried in order, with the
# backtracking outcomes of the greedy quantifiers worked out by hand).
# ---------------------------------------------------------------------------------------------------
def _is_l(ch):
    return unicodedata.category(ch).startswith("L")


def _is_n(ch):
    return unicodedata.category(ch).startswith("N")


def _is_s(ch):
    return ch.isspace()


def pretokenize(text):
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        # 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if ch == "'":
            low = text[i + 1:i + 3].lower()
            if low[:2] in ("re", "ve", "ll"):
                out.append(text[i:i + 3])
                i += 3
                continue
            if low[:1] in ("s", "t", "m", "d"):
                out.append(text[i:i + 2])
                i += 2
                continue
        # 2. [^\r\n\p{L}\p{N}]?\p{L}+
        j = i
        if not (_is_l(ch) or _is_n(ch) or ch in "\r\n") and i + 1 < n and _is_l(text[i + 1]):
            j = i + 1
        if _is_l(text[j]):
            k = j
            while k < n and _is_l(text[k]):
                k += 1
            out.append(text[i:k])
            i = k
            continue
        # 3. \p{N}
        if _is_n(ch):
            out.append(ch)
            i += 1
            continue
        # 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        j = i + 1 if ch == " " else i
        k = j
        while k < n and not (_is_s(text[k]) or _is_l(text[k]) or _is_n(text[k])):
            k += 1
        if k > j:
            while k < n and text[k] in "\r\n":
                k += 1
            out.append(text[i:k])
            i = k
            continue
        # 5-7: whitespace runs.
        k = i
        while k < n and _is_s(text[k]):
            k += 1
        run = text[i:k]
        last_nl = max(run.rfind("\r"), run.rfind("\n"))
        if last_nl >= 0:  # 5. \s*[\r\n]+ : up to the last newline of the run
            out.append(run[:last_nl + 1])
            i += last_nl + 1
            continue
        if k == n or len(run) >= 2:  # 6. \s+(?!\S)
            end = k if k == n else k - 1
            out.append(text[i:end])
            i = end
            continue
        out.append(run)  # 7. \s+
        i = k
    return out


# ---------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------
def learn_merges(words):
    """Greedy BPE on the byte-level forms of `words` (each counted once) until every word is one
    token. Returns the merges as (left, right) pairs in rank order."""
    seqs = [[B2U[b] for b in w.encode("utf-8")] for w in words]
    merges = []
    while True:
        counts = {}
        for s in seqs:
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p[0] + p[1], p))
        merges.append(best)
        for s in seqs:
            k = 0
            while k < len(s) - 1:
                if (s[k], s[k + 1]) == best:
                    s[k:k + 2] = [s[k] + s[k + 1]]
                k += 1


def build(words=TEMPLATE_WORDS):
    """Returns the tokenizer.json dictionary."""
    for w in words:
        for p in pretokenize(w):
            if p != w:
                raise ValueError(f"template word {w!r} is not one pre-token")
    vocab = {u: i for i, (_, u) in enumerate(BYTE_ORDER)}
    merges = learn_merges(words)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    added = []
    for content, special in QWEN_ADDED:
        added.append({"id": len(vocab) + len(added), "content": content, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": False, "special": special})
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
          "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated",
             "invert": False}, dict(bl)]},
        "post_processor": dict(bl), "decoder": dict(bl),
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": [[a, b] for a, b in merges]},
    }


# ---------------------------------------------------------------------------------------------------
# Encoding / decoding
# ---------------------------------------------------------------------------------------------------
class Tokenizer:
    def __init__(self, tj):
        m = tj["model"]
        self.vocab = dict(m["vocab"])
        self.ranks = {}
        for r, mg in enumerate(m["merges"]):
            a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
            self.ranks[(a, b)] = r
        self.added = {a["content"]: a["id"] for a in tj["added_tokens"]}
        self.special_ids = {a["id"] for a in tj["added_tokens"] if a["special"]}
        self.id_to_tok = {i: t for t, i in self.vocab.items()}
        self.id_to_tok.update({i: t for t, i in self.added.items()})
        self.vocab_size = max(self.id_to_tok) + 1
        self._cache = {}

    @classmethod
    def from_file(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def token_id(self, tok):
        return self.added.get(tok, self.vocab.get(tok, -1))

    def _bpe(self, piece):
        if piece in self._cache:
            return self._cache[piece]
        sym = [B2U[b] for b in piece.encode("utf-8")]
        while len(sym) > 1:
            best, rank = None, None
            for k in range(len(sym) - 1):
                r = self.ranks.get((sym[k], sym[k + 1]))
                if r is not None and (rank is None or r < rank):
                    best, rank = k, r
            if best is None:
                break
            a, b = sym[best], sym[best + 1]
            merged, k = [], 0
            while k < len(sym):
                if k < len(sym) - 1 and sym[k] == a and sym[k + 1] == b:
                    merged.append(a + b)
                    k += 2
                else:
                    merged.append(sym[k])
                    k += 1
            sym = merged
        ids = [self.vocab[s] for s in sym]
        self._cache[piece] = ids
        return ids

    def encode(self, text, parse_special=True):
        spans = self._split_added(text) if parse_special else [text]
        ids = []
        for s in spans:
            if isinstance(s, int):
                ids.append(s)
                continue
            for piece in pretokenize(unicodedata.normalize("NFC", s)):
                ids.extend(self._bpe(piece))
        return ids

    def _split_added(self, text):
        """Splits text into plain strings and added-token ids (leftmost, longest match first)."""
        out, i, start = [], 0, 0
        keys = sorted(self.added, key=len, reverse=True)
        while i < len(text):
            hit = None
            if text[i] == "<":
                for k in keys:
                    if text.startswith(k, i):
                        hit = k
                        break
            if hit:
                if start < i:
                    out.append(text[start:i])
                out.append(self.added[hit])
                i += len(hit)
                start = i
            else:
                i += 1
        if start < len(text):
            out.append(text[start:])
        return out

    def decode(self, ids, skip_special=True):
        buf = bytearray()
        for i in ids:
            t = self.id_to_tok[i]
            if i in self.special_ids or t in self.added:
                if not (skip_special and i in self.special_ids):
                    buf += t.encode("utf-8")
            else:
                buf += bytes(U2B[c] for c in t)
        return buf.decode("utf-8", errors="replace")


def main(argv):
    if len(argv) >= 3 and argv[1] == "build":
        tj = build()
        with open(argv[2], "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False, indent=1)
            f.write("\n")
        n = len(tj["model"]["vocab"]) + len(tj["added_tokens"])
        print(f"{argv[2]}: {len(tj['model']['merges'])} merges, {n} ids")
        return 0
    if len(argv) >= 4 and argv[1] == "encode":
        print(Tokenizer.from_file(argv[2]).encode(argv[3]))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
