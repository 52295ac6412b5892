#!/usr/bin/python3
"""For each GGUF file given, writes FILE.deq: one line per tensor, `NAME TYPE N FNV1A64`, the
64-bit FNV-1a hash of gguf-py's reference dequantization of the tensor (float32, little-endian,
in the file's element order). test_gguf_model dequantizes every tensor with model/quant.c and
compares hashes: equal means bit-identical. gguf-py comes from $LLAMA_CPP/gguf-py, unmodified."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("LLAMA_CPP", "/work/cache/llama.cpp"), "gguf-py"))
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


def fnv1a64(b):
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def fnv1a64_np(b):
    # same function, vectorized over 8-byte words is not equivalent: keep the byte loop but in
    # numpy chunks for speed
    h = np.uint64(0xcbf29ce484222325)
    p = np.uint64(0x100000001b3)
    with np.errstate(over="ignore"):
        for x in np.frombuffer(b, dtype=np.uint8):
            h = (h ^ np.uint64(x)) * p
    return int(h)


for path in sys.argv[1:]:
    r = GGUFReader(path)
    with open(path[:-5] + ".deq", "w") as f:
        for t in r.tensors:
            v = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            f.write(f"{t.name} {t.tensor_type.name} {v.size} {fnv1a64(v.tobytes()):016x}\n")
