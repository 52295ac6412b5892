#!/usr/bin/python3
"""A long camera-like clip with boxes in known intervals, for `vigil eval --live` (issue 18).

The clip looks like the demo's training clips (gen_clips.py: a muted background, filled boxes of
the demo's colours) but lasts minutes and shows each box in several intervals, so it can be played
to vigild as a live source. Each interval shows its box at its own random place (static). Frames
are rendered with numpy and encoded by the real ffmpeg (H.264 in mp4).

Output: OUT/NAME.mp4 and OUT/NAME.jsonl, one line per question for `vigil eval --live`:
    {"video": "NAME.mp4", "query": "When is the red box visible?", "intervals": [[12, 26], ...],
     "duration": 180}
(the clip eval's JSON Lines, with several intervals per question; times are those of the first
and last frame the box is visible).

Two ways to place the intervals:
  --intervals red:12-26,40-49 --intervals blue:5-9   given (seconds)
  --random 60 --colours red,green,blue [--seed S]     N intervals of random colours and lengths
                                                      (--min-len/--max-len s), separated by
                                                      --min-gap s or more, over --duration
Questions: "When is the {colour} box visible?" for each colour in --questions (default: every
colour that has intervals).

Usage: gen_live.py --out DIR [--name live] [--duration 180] [--size 320x240] [--fps 10] ...
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_clips import COLOURS, make_background, render  # noqa: E402

QUESTION = "When is the {colour} box visible?"


def parse_given(specs):
    out = []
    for spec in specs:
        colour, _, ranges = spec.partition(":")
        if colour not in COLOURS or not ranges:
            raise SystemExit(f"gen_live.py: bad --intervals {spec!r} (COLOUR:S-E,S-E...)")
        for r in ranges.split(","):
            s, _, e = r.partition("-")
            out.append((colour, float(s), float(e)))
    return out


def random_intervals(rng, n, duration, colours, min_len, max_len, min_gap):
    """n intervals laid out in order with gaps >= min_gap (one colour at a time on screen)."""
    lens = rng.uniform(min_len, max_len, size=n)
    free = duration - lens.sum() - min_gap * (n + 1)
    if free < 0:
        raise SystemExit("gen_live.py: the intervals do not fit in --duration")
    extra = rng.dirichlet(np.ones(n + 1)) * free
    t, out = min_gap + extra[0], []
    for i in range(n):
        s, e = round(float(t), 1), round(float(t + lens[i]), 1)
        out.append((str(rng.choice(colours)), s, e))
        t = e + min_gap + extra[i + 1]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="live")
    ap.add_argument("--duration", type=float, default=180.0)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--fps", default="10")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--intervals", action="append", default=[])
    ap.add_argument("--random", type=int, default=0)
    ap.add_argument("--colours", default="red,green,blue")
    ap.add_argument("--questions", default="")
    ap.add_argument("--min-len", type=float, default=5.0)
    ap.add_argument("--max-len", type=float, default=22.0)
    ap.add_argument("--min-gap", type=float, default=8.0)
    ap.add_argument("--box", type=float, default=0.2, help="box side / the frame's short side")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    w, h = (int(x) for x in args.size.split("x"))
    fps = float(eval(args.fps, {}, {})) if "/" in args.fps else float(args.fps)
    if args.random:
        iv = random_intervals(rng, args.random, args.duration, args.colours.split(","),
                              args.min_len, args.max_len, args.min_gap)
    else:
        iv = parse_given(args.intervals)
    if not iv:
        raise SystemExit("gen_live.py: no intervals (--intervals or --random)")
    n_frames = int(round(args.duration * fps))
    bg, _ = make_background(rng, w, h)
    side = int(min(w, h) * args.box)
    boxes = []
    for colour, s, e in iv:
        sf, ef = int(round(s * fps)), min(int(round(e * fps)), n_frames - 1)
        x, y = float(rng.uniform(0, w - side)), float(rng.uniform(0, h - side))
        boxes.append({"colour": colour, "rgb": list(COLOURS[colour]), "start_frame": sf,
                      "end_frame": ef, "from": [x, y, side, side], "to": [x, y, side, side]})
    clip = {"width": w, "height": h, "fps_str": args.fps, "total_frames": n_frames,
            "codec": "h264", "container": "mp4", "boxes": boxes}
    os.makedirs(args.out, exist_ok=True)
    video = f"{args.name}.mp4"
    render(clip, bg, os.path.join(args.out, video))
    asked = args.questions.split(",") if args.questions else sorted({c for c, _, _ in iv})
    with open(os.path.join(args.out, f"{args.name}.jsonl"), "w") as f:
        for colour in asked:
            ivs = [[b["start_frame"] / fps, b["end_frame"] / fps] for b in boxes
                   if b["colour"] == colour]
            f.write(json.dumps({"video": video, "query": QUESTION.format(colour=colour),
                                "intervals": ivs, "duration": n_frames / fps}) + "\n")
    print(f"{args.out}/{video}: {n_frames / fps:.1f} s, {w}x{h}, {len(iv)} intervals; "
          f"questions: {', '.join(asked)}")


if __name__ == "__main__":
    main()
