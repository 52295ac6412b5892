"""Minimal safetensors reader and writer (stdlib + numpy + torch; the `safetensors` package is not
installed on the build machine).

Format: an 8-byte little-endian header length N, then N bytes of JSON mapping each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the header), an
optional "__metadata__" object of strings, then the raw little-endian C-order tensor bytes.
BF16 is handled through its bit pattern: widening is a 16-bit left shift into float32.
"""
import json
import struct

import numpy as np
import torch

_NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
         "BOOL": 1}


def load(path):
    """Reads every tensor of a .safetensors file. Returns ({name: torch.Tensor}, metadata dict).
    BF16 tensors come back as torch.bfloat16, the rest with their own dtype."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if 8 + hlen > len(raw):
        raise ValueError(f"{path}: header length {hlen} runs past the end of the file")
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(raw)[8 + hlen:]
    out = {}
    for name, info in header.items():
        dt, shape = info["dtype"], [int(s) for s in info["shape"]]
        b, e = info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if dt not in _SIZE or e - b != count * _SIZE[dt] or e > len(data):
            raise ValueError(f"{path}: tensor {name}: bad dtype/offsets {dt} {b}..{e} for {shape}")
        if dt == "BF16":
            bits = np.frombuffer(data[b:e], dtype="<u2").astype(np.uint32) << 16
            t = torch.from_numpy(bits.view(np.float32).reshape(shape).copy()).to(torch.bfloat16)
        else:
            arr = np.frombuffer(data[b:e], dtype=np.dtype(_NP[dt]).newbyteorder("<"))
            t = torch.from_numpy(arr.reshape(shape).copy())
        out[name] = t
    return out, meta


def _bf16_bits(t):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (numpy uint16), like torch's cast."""
    return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def save(tensors, path, dtype="F32", metadata=None):
    """Writes {name: tensor} to path. dtype "F32" or "BF16" applies to floating tensors; integer
    tensors keep theirs. Names are written sorted (as the reference writer does); the header is
    space-padded to a multiple of 8 bytes so every tensor starts 8-byte aligned."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.is_floating_point():
            if dtype == "BF16":
                buf, dt = _bf16_bits(t.float()).tobytes(), "BF16"
            else:
                buf, dt = t.float().numpy().astype("<f4").tobytes(), "F32"
        else:
            a = t.numpy()
            dt = {np.dtype(v): k for k, v in _NP.items()}[a.dtype]
            buf = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(buf)]}
        blobs.append(buf)
        off += len(buf)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
