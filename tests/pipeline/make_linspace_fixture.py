#!/usr/bin/python3
"""Builds tests/pipeline/linspace_fixture.txt: torch.linspace(start, end, n).round() in float32,
as the reference's frame sampling computes it (torch 1.13 CPU, Debian python3-torch), for random
frame ranges up to 2 million frames. Each line: start end n fnv1a64(indices) first last.
test_plan.c recomputes the indices with vg_linspace_round_f32() and compares the hash.

Run from the repository root:  /usr/bin/python3 tests/pipeline/make_linspace_fixture.py
"""
import os
import random

import torch


def fnv(vals):
    h = 1469598103934665603
    for v in vals:
        h ^= v & 0xFFFFFFFFFFFFFFFF
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    random.seed(20260130)
    lines = []
    for _ in range(600):
        total = random.choice([random.randint(2, 1000), random.randint(1000, 100000),
                               random.randint(100000, 2000000)])
        n = random.randint(2, min(total, 768))
        start = random.randint(0, total // 3) if random.random() < 0.3 else 0
        end = total - 1
        idx = torch.linspace(start, end, n).round().long().tolist()
        lines.append(f"{start} {end} {n} {fnv(idx)} {idx[0]} {idx[-1]}\n")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "linspace_fixture.txt")
    with open(path, "w") as f:
        f.write(f"# torch {torch.__version__}: start end n fnv1a64 first last\n")
        f.writelines(lines)
    print(f"wrote {path}: {len(lines)} cases")


if __name__ == "__main__":
    main()
