#!/usr/bin/python3
"""The demo's Python BPE encoder (tools/demo/tokenizer.py, used to tokenize training answers) must
produce exactly the ids of model/'s C tokenizer (`vigil-model tokenize`), on the demo vocabulary and,
when ../shared is present, on the real Qwen3 vocabulary of the golden case.

usage: tokenizer_parity.py SOURCE_DIR VIGIL_MODEL [SHARED_DIR]
"""
import json
import os
import random
import subprocess
import sys
import tempfile

src, engine = sys.argv[1], sys.argv[2]
shared = sys.argv[3] if len(sys.argv) > 3 else None
sys.path.insert(0, os.path.join(src, "tools", "demo"))
import tokenizer as T  # noqa: E402

random.seed(5)
alphabet = (list("abcXYZ019 .,?!'<>-_\n\r\t")
            + ["  ", "'s", "'LL", "\u00e9", "\u00fc", "\u4f60", "\U0001f600", "\u0301", "e\u0301",
               "\u00a0", "\u2028", "\u2460", "\u00b2", "\u216b", "<|im_end|>", "<|video_pad|>",
               " seconds", " red", "The", "There", "12.5"])
texts = ["".join(random.choice(alphabet) for _ in range(random.randint(0, 25)))
         for _ in range(2000)]
texts += ["The red box is visible from 12.5 to 30.0 seconds.", "There is no blue box in the video.",
          "When does the white box appear?", "x  \n\n  y", "   ", "\n", "a\r\n\r\nb"]

with tempfile.TemporaryDirectory() as tmp:
    demo_tok = os.path.join(tmp, "tokenizer.json")
    with open(demo_tok, "w", encoding="utf-8") as f:
        json.dump(T.build(), f, ensure_ascii=False)
    files = [demo_tok]
    golden = os.path.join(shared or "", "golden", "tiny1", "tokenizer.json")
    if shared and os.path.isfile(golden):
        files.append(golden)
    failed = 0
    for path in files:
        tok = T.Tokenizer.from_file(path)
        inp = "".join(json.dumps(t) + "\n" for t in texts).encode()
        out = subprocess.run([engine, "tokenize", path], input=inp, stdout=subprocess.PIPE,
                             check=True).stdout.decode().splitlines()
        bad = [t for t, line in zip(texts, out) if json.loads(line) != tok.encode(t)]
        bad += texts[len(out):]
        print(f"{path}: {len(texts)} texts, {len(bad)} mismatches")
        for t in bad[:5]:
            print("  ", repr(t))
        failed += len(bad)
sys.exit(1 if failed else 0)
