#!/usr/bin/python3
"""Synthetic surveillance-like clips for the demo model (issue 6), encoded by the real ffmpeg.

Each clip: a static background (solid or textured, muted colours), 0 to 3 filled boxes of distinct
colours from {red, green, blue, yellow, white}, each visible during one interval of at least 2 s,
static or moving in a straight line; 4 to 40 s; 160x120 to 1280x720, portrait too; 10 to 60 fps
(including 29.97 and 59.94); H.264 (libx264) or MPEG-4 part 2 in mp4 or mkv. Frames are rendered
with numpy and piped to ffmpeg as rawvideo rgb24.

Ground truth (OUT/clips.json): per clip its path (relative to OUT), duration (= frames / fps), fps,
size, codec, container and boxes with colour, start and end: the times of the first and last frame
the box is visible (frame index / fps), plus those frame indices. Questions use exactly the issue's
templates, for every colour: "When is the {colour} box visible?" and "When does the {colour} box
appear?", answered "The {colour} box is visible from {s:.1f} to {e:.1f} seconds." or "There is no
{colour} box in the video.". OUT/eval.jsonl has the same questions as Charades-STA-style lines
{video, query, start, end, duration} (no start/end for an absent colour) for `vigil eval`.

Deterministic: clip i depends only on (--seed, i) and the limiting options, not on --count or on
timing, so a larger --count extends a smaller one.

Usage: gen_clips.py --out DIR [--count N] [--seed S] [--min-duration 4] [--max-duration 40]
                    [--max-size 1280] [--box-scale 1.0] [--jobs 1]
"""
import argparse
import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np

COLOURS = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
}
COLOUR_NAMES = list(COLOURS)
FPS_CHOICES = ["10", "12", "15", "20", "24", "25", "30000/1001", "30", "50", "60000/1001", "60"]
ASPECTS = [(4, 3), (16, 9), (3, 2), (5, 4)]
QUESTION_TEMPLATES = ["When is the {colour} box visible?", "When does the {colour} box appear?"]
ANSWER_PRESENT = "The {colour} box is visible from {s:.1f} to {e:.1f} seconds."
ANSWER_ABSENT = "There is no {colour} box in the video."


def pick_size(rng, max_size):
    """An even width x height within 160x120 .. 1280x720 (long side <= max_size); 25% portrait."""
    lo_w, hi_w = 160, max(160, min(1280, max_size))
    for _ in range(100):
        aw, ah = ASPECTS[rng.integers(len(ASPECTS))]
        w = int(rng.integers(lo_w // 2, hi_w // 2 + 1)) * 2
        h = int(round(w * ah / aw / 2)) * 2
        if 120 <= h <= 720:
            break
    else:
        w, h = 160, 120
    if rng.random() < 0.25:
        w, h = h, w
    return w, h


def make_background(rng, w, h):
    """Solid or textured (smooth noise + gradient + optional stripes), muted, uint8 [h, w, 3]."""
    base = rng.uniform(35, 150)
    tint = rng.uniform(-18, 18, size=3)
    col = np.clip(base + tint, 0, 255)
    if rng.random() < 0.3:
        return np.broadcast_to(col.astype(np.uint8), (h, w, 3)).copy(), "solid"
    gh, gw = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    coarse = rng.uniform(-30, 30, size=(gh, gw, 3))
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, gh - 1)
    x1 = np.minimum(x0 + 1, gw - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    smooth = ((1 - fy) * ((1 - fx) * coarse[y0][:, x0] + fx * coarse[y0][:, x1])
              + fy * ((1 - fx) * coarse[y1][:, x0] + fx * coarse[y1][:, x1]))
    grad = np.linspace(-1, 1, w)[None, :, None] * rng.uniform(-20, 20)
    img = col + smooth + grad
    if rng.random() < 0.4:  # floor tiles / fence stripes
        period = int(rng.integers(8, 40))
        img = img + 10.0 * (((np.arange(w) // period) % 2)[None, :, None] - 0.5)
    img = img + rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 200).astype(np.uint8), "textured"


def make_boxes(rng, n_frames, fps, w, h, box_scale):
    """0..3 boxes: colour, visible frame interval (>= 2 s), start/end rectangles (linear motion)."""
    n_boxes = int(rng.integers(0, 4))
    colours = list(rng.permutation(COLOUR_NAMES)[:n_boxes])
    min_len = int(np.ceil(2.0 * fps))  # frames spanned by end - start
    boxes = []
    short = min(w, h)
    for colour in colours:
        length = int(rng.integers(min_len, n_frames))  # end_frame - start_frame
        s = int(rng.integers(0, n_frames - length))
        e = s + length
        size = short * rng.uniform(0.10, 0.25) * box_scale
        bw = int(np.clip(size * rng.uniform(0.7, 1.4), 4, w - 2))
        bh = int(np.clip(size * rng.uniform(0.7, 1.4), 4, h - 2))
        p0 = (float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)))
        if rng.random() < 0.5:
            motion, p1 = "static", p0
        else:
            motion, p1 = "linear", (float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)))
        jitter = rng.integers(-8, 9, size=3)
        rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour], jitter))
        boxes.append({"colour": colour, "rgb": list(rgb), "start_frame": s, "end_frame": e,
                      "start": s / fps, "end": e / fps, "motion": motion,
                      "from": [round(p0[0], 2), round(p0[1], 2), bw, bh],
                      "to": [round(p1[0], 2), round(p1[1], 2), bw, bh]})
    # Largest first, so a smaller box drawn later can never hide a larger one completely.
    boxes.sort(key=lambda b: -b["from"][2] * b["from"][3])
    return boxes


def box_rect(b, f):
    """Integer rectangle (x0, y0, x1, y1) of box b at frame f (within its visible interval)."""
    s, e = b["start_frame"], b["end_frame"]
    a = (f - s) / (e - s) if e > s else 0.0
    x = b["from"][0] + a * (b["to"][0] - b["from"][0])
    y = b["from"][1] + a * (b["to"][1] - b["from"][1])
    x0, y0 = int(round(x)), int(round(y))
    return x0, y0, x0 + b["from"][2], y0 + b["from"][3]


def questions(boxes):
    """The issue's templates for every colour, with answers at the true times."""
    present = {b["colour"]: b for b in boxes}
    qa = []
    for colour in COLOUR_NAMES:
        for tpl in QUESTION_TEMPLATES:
            q = tpl.format(colour=colour)
            if colour in present:
                b = present[colour]
                qa.append({"question": q, "colour": colour, "present": True,
                           "start": b["start"], "end": b["end"],
                           "answer": ANSWER_PRESENT.format(colour=colour, s=b["start"],
                                                           e=b["end"])})
            else:
                qa.append({"question": q, "colour": colour, "present": False,
                           "answer": ANSWER_ABSENT.format(colour=colour)})
    return qa


def plan_clip(seed, index, args):
    """Everything random about clip `index`, from its own generator."""
    rng = np.random.default_rng([seed, index])
    fps_str = FPS_CHOICES[rng.integers(len(FPS_CHOICES))]
    fps = float(Fraction(fps_str))
    lo = max(4.0, args.min_duration)
    hi = max(lo, min(40.0, args.max_duration))
    dur = float(rng.uniform(lo, hi))
    n_frames = max(int(round(dur * fps)), int(np.ceil(4.0 * fps)))
    w, h = pick_size(rng, args.max_size)
    codec = "h264" if rng.random() < 0.6 else "mpeg4"
    container = "mp4" if rng.random() < 0.6 else "mkv"
    bg, bg_kind = make_background(rng, w, h)
    boxes = make_boxes(rng, n_frames, fps, w, h, args.box_scale)
    return {"index": index, "fps": fps, "fps_str": fps_str, "total_frames": n_frames,
            "duration": n_frames / fps, "width": w, "height": h, "codec": codec,
            "container": container, "background": bg_kind, "boxes": boxes}, bg


def render(clip, bg, path):
    """Pipes the frames through ffmpeg into path. Raises on an encoder failure."""
    w, h = clip["width"], clip["height"]
    if clip["codec"] == "h264":
        venc = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-threads", "1"]
    else:
        venc = ["-c:v", "mpeg4", "-q:v", "3", "-threads", "1"]
    tmp = path + ".part"  # renamed when complete, so an interrupted run leaves no bad clip
    fmt = "mp4" if clip["container"] == "mp4" else "matroska"
    cmd = (["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
            f"{w}x{h}", "-r", clip["fps_str"], "-i", "-"] + venc
           + ["-pix_fmt", "yuv420p", "-an", "-map_metadata", "-1", "-fflags", "+bitexact",
              "-flags:v", "+bitexact", "-f", fmt, tmp])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    try:
        for f in range(clip["total_frames"]):
            frame = bg.copy()
            for b in clip["boxes"]:
                if b["start_frame"] <= f <= b["end_frame"]:
                    x0, y0, x1, y1 = box_rect(b, f)
                    frame[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = b["rgb"]
            proc.stdin.write(frame.tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed for {path}")
    os.replace(tmp, path)


def make_one(job):
    seed, index, args, out = job
    clip, bg = plan_clip(seed, index, args)
    name = f"clip_{index:05d}.{clip['container']}"
    clip["path"] = name
    if not args.no_render and not (args.skip_existing and os.path.exists(os.path.join(out, name))):
        render(clip, bg, os.path.join(out, name))
    clip["qa"] = questions(clip["boxes"])
    return clip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", type=int, default=0, help="index of the first clip")
    ap.add_argument("--min-duration", type=float, default=4.0)
    ap.add_argument("--max-duration", type=float, default=40.0)
    ap.add_argument("--max-size", type=int, default=1280, help="limit on the long side")
    ap.add_argument("--box-scale", type=float, default=1.0, help="box size multiplier (curricula)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel encoders")
    ap.add_argument("--skip-existing", action="store_true", help="do not re-encode existing files")
    ap.add_argument("--no-render", action="store_true",
                    help="ground truth only (no video files), e.g. for fit_blind.py")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    jobs = [(args.seed, i, args, args.out) for i in range(args.first, args.first + args.count)]
    if args.jobs > 1:
        from multiprocessing import Pool
        with Pool(args.jobs) as pool:
            clips = pool.map(make_one, jobs)
    else:
        clips = [make_one(j) for j in jobs]
    meta = {"generator": "tools/demo/gen_clips.py", "seed": args.seed,
            "options": {k: getattr(args, k) for k in ("min_duration", "max_duration", "max_size",
                                                      "box_scale")},
            "clips": clips}
    with open(os.path.join(args.out, "clips.json"), "w") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(args.out, "eval.jsonl"), "w") as f:
        for c in clips:
            for qa in c["qa"]:
                line = {"video": os.path.abspath(os.path.join(args.out, c["path"])),
                        "query": qa["question"], "duration": c["duration"]}
                if qa["present"]:
                    line["start"], line["end"] = qa["start"], qa["end"]
                f.write(json.dumps(line) + "\n")
    print(f"{len(clips)} clips in {args.out} (seed {args.seed})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
