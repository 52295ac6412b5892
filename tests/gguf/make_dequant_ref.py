#!/usr/bin/python3
"""Writes tests/gguf/dequant_ref.bin: random blocks of every GGUF tensor type vigil reads, with
gguf-py's reference dequantization of them (llama.cpp's gguf-py, unmodified, from LLAMA_CPP, default
/work/cache/llama.cpp; needs python3-numpy). test_gguf checks model/quant.c against it bit for bit.

Record per type: uint32 ggml type, uint32 value count n, uint32 byte count b, b bytes of blocks,
n float32 values. Scales are drawn as finite fp16 values (random bytes would give NaN scales whose
payload propagation is the FPU's business, not the format's); quants are random bytes."""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("LLAMA_CPP", "/work/cache/llama.cpp"), "gguf-py"))
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

rng = np.random.default_rng(14)


def f16(vals):
    return np.asarray(vals, dtype=np.float16).view(np.uint8)


def blocks(t, nb):
    out = []
    for _ in range(nb):
        if t == T.Q8_0:
            b = np.concatenate([f16([rng.normal(0, 0.01)]), rng.integers(0, 256, 32, dtype=np.uint8)])
        elif t == T.Q4_0:
            b = np.concatenate([f16([rng.normal(0, 0.01)]), rng.integers(0, 256, 16, dtype=np.uint8)])
        elif t in (T.Q4_1, T.Q5_0, T.Q5_1):
            sc = [rng.normal(0, 0.01)] + ([rng.normal(0, 0.05)] if t != T.Q5_0 else [])
            rest = 16 + (4 if t != T.Q4_1 else 0)
            b = np.concatenate([f16(sc), rng.integers(0, 256, rest, dtype=np.uint8)])
        elif t in (T.Q4_K, T.Q5_K):
            rest = 12 + 128 + (32 if t == T.Q5_K else 0)
            b = np.concatenate([f16([abs(rng.normal(0, 1e-3)), abs(rng.normal(0, 1e-3))]),
                                rng.integers(0, 256, rest, dtype=np.uint8)])
        elif t == T.Q6_K:
            b = np.concatenate([rng.integers(0, 256, 208, dtype=np.uint8), f16([rng.normal(0, 1e-3)])])
        out.append(b)
    return np.concatenate(out).astype(np.uint8)


with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "dequant_ref.bin"), "wb") as f:
    cases = [(T.F32, rng.normal(0, 1, 64).astype(np.float32).view(np.uint8)),
             (T.F16, np.concatenate([f16(rng.normal(0, 1, 60)), f16([6e-8, -6e-5, 65504, 0])])),
             (T.BF16, rng.integers(0, 65536, 64, dtype=np.uint16).view(np.uint8)),
             (T.Q8_0, blocks(T.Q8_0, 8)), (T.Q4_0, blocks(T.Q4_0, 8)),
             (T.Q4_1, blocks(T.Q4_1, 8)), (T.Q5_0, blocks(T.Q5_0, 8)), (T.Q5_1, blocks(T.Q5_1, 8)),
             (T.Q4_K, blocks(T.Q4_K, 4)), (T.Q5_K, blocks(T.Q5_K, 4)), (T.Q6_K, blocks(T.Q6_K, 4))]
    for t, raw in cases:
        if t == T.BF16:  # keep bf16 finite too
            v = raw.view(np.uint16) & 0xBFFF
            raw = v.astype(np.uint16).view(np.uint8)
        ref = dequantize(raw, t).astype(np.float32).reshape(-1)
        f.write(struct.pack("<III", int(t), ref.size, raw.size))
        f.write(raw.tobytes())
        f.write(ref.tobytes())
        print(t.name, ref.size, "values", raw.size, "bytes")
