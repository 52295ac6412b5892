#!/usr/bin/python3
"""The video-blind baseline of issue 6: an interval at fixed fractions (a, b) of the clip's
duration, whatever the video shows. Fits (a, b) on training clips (grid search, step 0.01, for
the best mean tIoU over present boxes) and reports mean tIoU, R@0.3/0.5/0.7 on other clips.

Usage: fit_blind.py --fit TRAIN/clips.json [--fit ...] [--eval HELDOUT/clips.json ...]
Prints one JSON line per evaluated file, e.g. {"a": 0.12, "b": 0.88, "tiou": 0.6, ...}.
"""
import argparse
import json

import numpy as np


def intervals(paths):
    """(duration, start, end) of every box of every clip in the gen_clips.py files."""
    out = []
    for p in paths:
        with open(p) as f:
            for c in json.load(f)["clips"]:
                out.extend((c["duration"], b["start"], b["end"]) for b in c["boxes"])
    return np.array(out, dtype=np.float64).reshape(-1, 3)


def tious(a, b, iv):
    d, s, e = iv[:, 0], iv[:, 1], iv[:, 2]
    ps, pe = a * d, b * d
    inter = np.clip(np.minimum(pe, e) - np.maximum(ps, s), 0, None)
    union = np.maximum(pe, e) - np.minimum(ps, s)
    return inter / union


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", action="append", required=True)
    ap.add_argument("--eval", action="append", default=[])
    a = ap.parse_args()
    iv = intervals(a.fit)
    grid = np.round(np.arange(0, 1.0001, 0.01), 2)
    best = max(((tious(x, y, iv).mean(), x, y) for x in grid for y in grid if y > x))
    _, fa, fb = best
    for path in a.fit + a.eval:
        t = tious(fa, fb, intervals([path]))
        print(json.dumps({"file": path, "fitted_on": a.fit, "a": float(fa), "b": float(fb),
                          "boxes": int(len(t)), "tiou": round(float(t.mean()), 4),
                          "r03": round(float((t >= 0.3).mean()), 4),
                          "r05": round(float((t >= 0.5).mean()), 4),
                          "r07": round(float((t >= 0.7).mean()), 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
