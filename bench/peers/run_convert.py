#!/usr/bin/python3
"""Runs llama.cpp's own convert_hf_to_gguf.py, unmodified, on Debian 12's Python.

Debian 12 has torch 1.13 and no `transformers`; the converter imports both. This wrapper supplies
only what is missing, then runs the converter's main() with the remaining arguments:

- torch.uint16/uint32/uint64 and torch.float8_e4m3fn/float8_e5m2 (torch >= 2.1): placeholder
  objects. The converter uses them only as keys of its dtype tables; a checkpoint holding such a
  tensor would fail its lookups (vigil's checkpoints are BF16 with F32 norms, never these).
- a `transformers` module with the two names the converter imports for Qwen3-VL:
  AutoConfig.from_pretrained raises, and the converter falls back to reading config.json itself
  (its own code path); AutoTokenizer.from_pretrained returns the exact Qwen2 byte-level BPE of
  vigil's tools/demo/tokenizer.py (NFC, added tokens, the Qwen2 pre-tokenizer, merges by rank)
  over the checkpoint's tokenizer.json. The converter hashes the tokens of its test string to name
  the pre-tokenizer: this prints the name it found, and the conversion fails if the hash is not one
  it knows, so a wrong encoder cannot pass silently.

Usage: run_convert.py LLAMA_CPP_DIR VIGIL_REPO -- converter arguments...
"""
import os
import sys
import types


def _torch_placeholders():
    import torch
    for name in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"):
        if not hasattr(torch, name):
            setattr(torch, name, type("missing_torch_dtype_" + name, (), {})())


class _AddedToken:
    def __init__(self, content, special, normalized):
        self.content, self.special, self.normalized = content, special, normalized

    def __str__(self):
        return self.content


class _QwenTokenizer:
    """The part of a Hugging Face PreTrainedTokenizerFast the converter calls."""

    def __init__(self, directory):
        import json
        import tokenizer as demo_tok  # tools/demo/tokenizer.py
        with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        self._tok = demo_tok.Tokenizer(tj)
        self.added_tokens_decoder = {
            a["id"]: _AddedToken(a["content"], a["special"], a.get("normalized", False))
            for a in tj["added_tokens"]}
        self.vocab = dict(self._tok.vocab)
        self.vocab.update(self._tok.added)

    def get_vocab(self):
        return dict(self.vocab)

    def get_added_vocab(self):
        return dict(self._tok.added)

    def encode(self, text, add_special_tokens=True):  # Qwen adds no BOS/EOS
        return self._tok.encode(text)

    def decode(self, ids, skip_special_tokens=False):
        return self._tok.decode(ids, skip_special=skip_special_tokens)


class _AutoTokenizer:
    @staticmethod
    def from_pretrained(directory, **_):
        return _QwenTokenizer(str(directory))


class _AutoConfig:
    @staticmethod
    def from_pretrained(directory, **_):
        raise OSError("no transformers on this machine: the converter reads config.json itself")


def main():
    if len(sys.argv) < 4 or sys.argv[3] != "--":
        sys.exit(__doc__)
    llama_dir, vigil_repo = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(vigil_repo, "tools", "demo"))
    _torch_placeholders()
    tf = types.ModuleType("transformers")
    tf.AutoConfig, tf.AutoTokenizer = _AutoConfig, _AutoTokenizer
    sys.modules["transformers"] = tf
    sys.path.insert(0, llama_dir)
    sys.argv = [os.path.join(llama_dir, "convert_hf_to_gguf.py")] + sys.argv[4:]
    import convert_hf_to_gguf as conv
    orig = conv.TextModel.get_vocab_base_pre

    def report_pre(self, tokenizer):
        pre = orig(self, tokenizer)
        print(f"run_convert: tokenizer.ggml.pre = {pre!r}", flush=True)
        return pre

    conv.TextModel.get_vocab_base_pre = report_pre
    conv.main()


if __name__ == "__main__":
    main()
