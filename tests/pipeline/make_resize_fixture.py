#!/usr/bin/python3
"""Builds tests/pipeline/resize_fixture.bin: the reference's antialiased bicubic resize outputs.

The reference (qwen-vl-utils fetch_video) resizes uint8 frames with
torchvision.transforms.functional.resize(video, [h, w], InterpolationMode.BICUBIC, antialias=True).
This script runs exactly that call (Debian python3-torch 1.13 + python3-torchvision 0.14) on small
frames that test_resize.c regenerates bit-for-bit from the same seed (make_frame below and
make_frame() in test_resize.c must stay identical), and stores only the expected outputs, so the
fixture stays small.

Run from the repository root:  /usr/bin/python3 tests/pipeline/make_resize_fixture.py

Format (little-endian): b"VGRS", u32 version (1), u32 case count; per case u32 seed, src_w, src_h,
dst_w, dst_h, then dst_h*dst_w*3 bytes of interleaved RGB.
"""
import os
import struct

import torch
import torchvision
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

# (seed, src_w, src_h, dst_w, dst_h): down, up, mixed, odd sizes, one identity axis, big factors.
CASES = [
    (1, 97, 61, 64, 32),
    (2, 64, 48, 160, 96),
    (3, 200, 120, 96, 128),
    (4, 640, 360, 128, 96),
    (5, 31, 31, 64, 64),
    (6, 150, 100, 150, 64),
    (7, 333, 77, 61, 45),
    (8, 50, 90, 50, 90),
]


def xorshift32(state):
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


def make_frame(seed, w, h):
    """Gradients + a checkerboard of hard edges + uniform noise, [h][w][3] uint8 values."""
    s = (seed * 2654435761 + 12345) & 0xFFFFFFFF
    if s == 0:
        s = 1
    out = bytearray(w * h * 3)
    i = 0
    for y in range(h):
        for x in range(w):
            for c in range(3):
                s = xorshift32(s)
                if c == 0:
                    base = x * 255 // max(w - 1, 1)
                elif c == 1:
                    base = y * 255 // max(h - 1, 1)
                else:
                    base = ((x + y) * 4) & 255
                noise = (s % 64) - 32
                checker = 60 if ((x // 5 + y // 7) % 2) else -60
                v = base + noise + checker
                out[i] = 0 if v < 0 else (255 if v > 255 else v)
                i += 1
    return bytes(out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "resize_fixture.bin")
    blob = bytearray(b"VGRS" + struct.pack("<II", 1, len(CASES)))
    for seed, sw, sh, dw, dh in CASES:
        frame = make_frame(seed, sw, sh)
        t = torch.frombuffer(bytearray(frame), dtype=torch.uint8).reshape(sh, sw, 3).permute(2, 0, 1)
        r = F.resize(t.contiguous(), [dh, dw], interpolation=InterpolationMode.BICUBIC, antialias=True)
        assert r.dtype == torch.uint8 and tuple(r.shape) == (3, dh, dw)
        blob += struct.pack("<IIIII", seed, sw, sh, dw, dh)
        blob += r.permute(1, 2, 0).contiguous().numpy().tobytes()
    with open(path, "wb") as f:
        f.write(blob)
    print(f"wrote {path}: {len(CASES)} cases, {len(blob)} bytes "
          f"(torch {torch.__version__}, torchvision {torchvision.__version__})")


if __name__ == "__main__":
    main()
