"""A stand-in for the parts of Hugging Face `transformers` that llama.cpp's convert_hf_to_gguf.py
calls for a Qwen3-VL checkpoint, because Debian 12 does not package transformers (numpy and torch
it does). Used only by tests/gguf/make_fixtures.sh, through PYTHONPATH; the converter itself runs
unmodified.

- AutoConfig.from_pretrained(dir).to_dict(): config.json as a dict (what transformers returns for
  a model_type it knows, minus the defaults it would fill in; the converter reads only keys that
  Qwen3-VL's config.json has).
- AutoTokenizer.from_pretrained(dir): the vocabulary and added tokens of dir/tokenizer.json, and
  encode/decode. encode runs vigil's own tokenizer (`vigil-model tokenize`, the binary named by
  $VIGIL_MODEL), which tests/tokenizer checks against Hugging Face's on the shared vectors; the
  converter needs it to fingerprint the pre-tokenizer (get_vocab_base_pre hashes the ids of a fixed
  text) and to round-trip added tokens.
"""
import json
import os
import subprocess

__all__ = ["AutoConfig", "AutoTokenizer"]


class _Config:
    def __init__(self, d):
        self._d = d

    def to_dict(self):
        return json.loads(json.dumps(self._d))


class AutoConfig:
    @staticmethod
    def from_pretrained(path, **_):
        with open(os.path.join(str(path), "config.json"), encoding="utf-8") as f:
            return _Config(json.load(f))


class _Added:
    def __init__(self, t):
        self.content = t["content"]
        self.special = bool(t.get("special", False))
        self.normalized = bool(t.get("normalized", False))
        self.lstrip = bool(t.get("lstrip", False))
        self.rstrip = bool(t.get("rstrip", False))
        self.single_word = bool(t.get("single_word", False))


# GPT-2's byte <-> unicode table (what byte-level BPE token strings are written in)
def _byte_table():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class _Tokenizer:
    def __init__(self, path):
        self._dir = str(path)
        with open(os.path.join(self._dir, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        self._base = dict(tj["model"]["vocab"])
        self.added_tokens_decoder = {t["id"]: _Added(t) for t in tj.get("added_tokens", [])}
        self.vocab = dict(self._base)
        for i, a in self.added_tokens_decoder.items():
            self.vocab[a.content] = i
        self._id_to_tok = {i: t for t, i in self.vocab.items()}
        self._bytes = _byte_table()
        self._proc = None

    def get_vocab(self):
        return dict(self.vocab)

    def get_added_vocab(self):
        return {a.content: i for i, a in self.added_tokens_decoder.items()}

    def encode(self, text, add_special_tokens=True, **_):
        if self._proc is None:
            exe = os.environ.get("VIGIL_MODEL", "vigil-model")
            self._proc = subprocess.Popen([exe, "tokenize", self._dir], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, encoding="utf-8")
        self._proc.stdin.write(json.dumps(text) + "\n")
        self._proc.stdin.flush()
        ids = json.loads(self._proc.stdout.readline())
        if ids is None:
            raise ValueError("vigil-model tokenize refused the text")
        return ids  # Qwen2's tokenizer adds no BOS/EOS

    def decode(self, ids, **_):
        out = b""
        for i in ids:
            t = self._id_to_tok[i]
            if i in self.added_tokens_decoder:
                out += t.encode("utf-8")
            else:
                out += bytes(self._bytes[c] for c in t)
        return out.decode("utf-8", errors="replace")


class AutoTokenizer:
    @staticmethod
    def from_pretrained(path, **_):
        return _Tokenizer(path)
