#!/usr/bin/python3
"""Runs llama.cpp's convert_hf_to_gguf.py (unmodified, from $LLAMA_CPP) with one addition: its
pre-tokenizer fingerprint (get_vocab_base_pre hashes the ids of a fixed text) only knows released
vocabularies, so a small test vocabulary such as models/demo's (360 tokens) is refused even though
it uses Qwen2's pre-tokenizer. When the fingerprint is unknown and tokenizer.json declares exactly
the Qwen2 pre-tokenizer (the Split regex below, Isolated, then ByteLevel without regex) and the
NFC normalizer, the wrapper answers "qwen2", which is what the converter writes for Qwen2/Qwen3
vocabularies; anything else still fails as the converter would. Used by make_fixtures.sh."""
import json
import os
import sys

LLAMA_CPP = os.environ.get("LLAMA_CPP", "/work/cache/llama.cpp")
sys.path.insert(0, LLAMA_CPP)
sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
import convert_hf_to_gguf as conv  # noqa: E402

QWEN2_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
               "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_orig = conv.TextModel.get_vocab_base_pre


def _is_qwen2(dir_model):
    with open(os.path.join(str(dir_model), "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    pre = tj.get("pre_tokenizer") or {}
    p = pre.get("pretokenizers", [])
    return (tj.get("normalizer") == {"type": "NFC"} and pre.get("type") == "Sequence" and len(p) == 2
            and p[0].get("type") == "Split" and p[0].get("pattern") == {"Regex": QWEN2_SPLIT}
            and p[0].get("behavior") == "Isolated" and not p[0].get("invert")
            and p[1].get("type") == "ByteLevel" and p[1].get("use_regex") is False)


def get_vocab_base_pre(self, tokenizer):
    try:
        return _orig(self, tokenizer)
    except NotImplementedError:
        if _is_qwen2(self.dir_model):
            return "qwen2"
        raise


conv.TextModel.get_vocab_base_pre = get_vocab_base_pre
if __name__ == "__main__":
    conv.main()
