"""The demo's training data: the .vgd files written by vigil-demo-export (tools/demo/export_data.c,
which runs vigil's own pipeline), plus the Python pieces train.py needs around them.

- read_vgd(): one clip's header, resized uint8 frames and per-question prompt ids/positions.
- patchify(): frames -> pixel_values_videos rows, bit-identical to pipeline/patchify.c (checked
  against the exporter's --patches output by `vgd.py check`).
- build_prompt(): the same prompt and MRoPE positions in Python (used to cross-check the exporter
  and the Python tokenizer, and by the smoke-only data path).
- load_py_clip(): SMOKE TESTS ONLY. A pure-Python approximation of the pipeline (ffmpeg CLI decode,
  numpy frame sampling, ffmpeg bicubic scaling). It is NOT what inference sees (the resize and the
  timestamps differ in detail); real training must use vigil-demo-export's .vgd files.

Usage: vgd.py check DATA_DIR TOKENIZER.json [N_DECODE]
       (cross-checks exporter output against Python; N_DECODE clips also against an ffmpeg CLI
       decode resized by torch)
"""
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np

MAGIC = b"VGDEMO01"


def read_vgd_header(path):
    """Only the JSON header of a .vgd file (cheap: no frames are read)."""
    with open(path, "rb") as f:
        fixed = f.read(16)
        if len(fixed) != 16 or fixed[:8] != MAGIC:
            raise ValueError(f"{path}: not a VGDEMO01 file")
        (jlen, _) = struct.unpack("<II", fixed[8:16])
        return json.loads(f.read(jlen).decode("utf-8"))


def read_vgd(path, with_frames=True):
    """Returns {"header": dict, "frames": uint8 [T,H,W,3] or None, "questions": [{"question",
    "ids": int32 [n], "pos": int32 [3,n], "rope_delta"}], "patches": float32 or None}."""
    with open(path, "rb") as f:
        fixed = f.read(16)
        if len(fixed) != 16 or fixed[:8] != MAGIC:
            raise ValueError(f"{path}: not a VGDEMO01 file")
        (jlen, _) = struct.unpack("<II", fixed[8:16])
        header = json.loads(f.read(jlen).decode("utf-8"))
        data = f.read()
    frames = None
    if with_frames:
        T, H, W = header["T"], header["H"], header["W"]
        nb = T * H * W * 3
        if header["frames_bytes"] != nb or header["frames_offset"] + nb > len(data):
            raise ValueError(f"{path}: frame blob does not match T,H,W")
        frames = np.frombuffer(data, np.uint8, nb, header["frames_offset"]).reshape(T, H, W, 3)
    qs = []
    for q in header["questions"]:
        n = q["n"]
        if q["pos_offset"] + 12 * n > len(data):
            raise ValueError(f"{path}: question blob past the end")
        ids = np.frombuffer(data, "<i4", n, q["ids_offset"]).astype(np.int64)
        pos = np.frombuffer(data, "<i4", 3 * n, q["pos_offset"]).reshape(3, n).astype(np.int64)
        qs.append({"question": q["question"], "ids": ids, "pos": pos,
                   "rope_delta": q["rope_delta"]})
    patches = None
    if "patches_offset" in header:
        r, c = header["patches_rows"], header["patches_cols"]
        patches = np.frombuffer(data, "<f4", r * c, header["patches_offset"]).reshape(r, c)
    return {"header": header, "frames": frames, "questions": qs, "patches": patches}


_LUT = (np.arange(256, dtype=np.float32) - np.float32(127.5)) / np.float32(127.5)


def patchify(frames, patch=16, tp=2, merge=2):
    """uint8 [T,H,W,3] -> float32 [grid_t*grid_h*grid_w, 3*tp*patch*patch] in the docs/qwen3vl.md §1.6 order
    (rows (t, bh, bw, mh, mw), columns (c, tp, py, px)); (x - 127.5)/127.5 as patchify.c does;
    an odd T repeats the last frame."""
    T, H, W, _ = frames.shape
    if T % tp:
        frames = np.concatenate([frames, np.repeat(frames[-1:], tp - T % tp, axis=0)])
        T = frames.shape[0]
    gt, gh, gw = T // tp, H // patch, W // patch
    x = frames.reshape(gt, tp, gh // merge, merge, patch, gw // merge, merge, patch, 3)
    # -> (gt, bh, bw, mh, mw, c, tp, py, px)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return _LUT[x.reshape(gt * gh * gw, 3 * tp * patch * patch)], (gt, gh, gw)


def build_prompt(tok, pair_strings, grid, question, merge=2):
    """The Qwen3-VL Instruct prompt with one video and the question after it, tokenized with the
    Python tokenizer, and its MRoPE positions (docs/qwen3vl.md §5.1). Returns (ids int64 [n], pos int64 [3,n])."""
    _, gh, gw = grid
    mh, mw = gh // merge, gw // merge
    video = "".join(s + "<|vision_start|>" + "<|video_pad|>" * (mh * mw) + "<|vision_end|>"
                    for s in pair_strings)
    text = ("<|im_start|>user\n" + video + question + "<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode(text)
    pad = tok.token_id("<|video_pad|>")
    pos = np.zeros((3, len(ids)), dtype=np.int64)
    p, i = 0, 0
    while i < len(ids):
        if ids[i] == pad:
            for j in range(mh * mw):
                pos[:, i + j] = (p, p + j // mw, p + j % mw)
            p += max(mh, mw)
            i += mh * mw
        else:
            pos[:, i] = p
            p += 1
            i += 1
    return np.array(ids, dtype=np.int64), pos


# ---------------------------------------------------------------------------------------------------
# SMOKE TESTS ONLY: a pure-Python approximation of the pipeline.
# ---------------------------------------------------------------------------------------------------
def _smart_resize(h, w, factor, min_pixels, max_pixels):
    hb = max(factor, round(h / factor) * factor)
    wb = max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = math.floor(h / beta / factor) * factor
        wb = math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


def load_py_clip(clip, gt_dir, min_pixels, max_pixels, fps_target=2.0):
    """SMOKE ONLY: decodes a generated clip with the ffmpeg CLI and samples/resizes it roughly as
    the pipeline does. Returns a read_vgd()-like dict without questions (train.py builds them)."""
    n_total, fps = clip["total_frames"], clip["fps"]
    n = n_total / fps * fps_target
    n = min(max(n, 4), (min(768, n_total) // 2) * 2, n_total)
    nframes = int(n // 2 * 2)
    idx = np.rint(np.linspace(0, n_total - 1, nframes)).astype(np.int64)
    max_pixels = min(max_pixels, 786432)
    h, w = _smart_resize(clip["height"], clip["width"], 32, min_pixels, max_pixels)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", os.path.join(gt_dir, clip["path"]), "-vf",
           f"scale={w}:{h}:flags=bicubic", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
    allf = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    idx = np.minimum(idx, allf.shape[0] - 1)
    times = idx / fps
    pair_times = [(times[2 * k] + times[2 * k + 1]) / 2 for k in range(nframes // 2)]
    header = {"clip": clip["path"], "index": clip["index"], "fps": fps, "T": nframes, "H": h,
              "W": w, "grid": [nframes // 2, h // 16, w // 16], "frame_indices": idx.tolist(),
              "frame_times": times.tolist(), "pair_times": pair_times,
              "pair_strings": ["<%.1f seconds>" % t for t in pair_times], "questions": []}
    return {"header": header, "frames": allf[idx].copy(), "questions": [], "patches": None}


# ---------------------------------------------------------------------------------------------------
def box_seen(frame, rgb):
    """Whether a resized frame shows a box of colour rgb (a few pixels within a small distance)."""
    dist = np.abs(frame.astype(np.int32) - np.asarray(rgb, dtype=np.int32)).sum(-1)
    return int((dist < 60).sum()) >= 2


def reference_frame(clip_path, index, width, height, out_h, out_w):
    """Frame `index` of a clip decoded to RGB24 by the ffmpeg CLI and resized with torch's
    antialiased bicubic (the reference of pipeline/resize.c), rounded to uint8 [out_h, out_w, 3]."""
    import torch
    import torch.nn.functional as F
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", clip_path, "-vf",
                          f"select=eq(n\\,{index})", "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, stdout=subprocess.PIPE).stdout
    img = np.frombuffer(raw, np.uint8).reshape(height, width, 3)
    x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(out_h, out_w), mode="bicubic", align_corners=False, antialias=True)
    return torch.round(y.clamp(0, 255))[0].permute(1, 2, 0).numpy().astype(np.uint8)


def check(data_dir, tok_path, n_decode=0):
    """Cross-checks every .vgd in data_dir: Python patchify == exporter patches (when stored);
    the Python tokenizer + prompt builder == the exporter's ids and positions; each sampled
    frame shows exactly the boxes the ground truth says it shows (frame indexing of generator and
    decoder agree; at most 2% misses allowed for boxes blurred away by resize and codec); and, for
    the first n_decode clips, the first sampled frame equals the ffmpeg CLI's decode resized by
    torch (max difference <= 3: rounding near ties and swscale versions aside)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tokenizer
    tok = tokenizer.Tokenizer.from_file(tok_path)
    with open(os.path.join(data_dir, "index.json")) as f:
        index = json.load(f)
    gt = {}
    if os.path.isfile(index.get("gt", "")):
        with open(index["gt"]) as f:
            gt = {c["index"]: c for c in json.load(f)["clips"]}
    bad, seen_bad, seen_n, worst = 0, 0, 0, []
    for k, name in enumerate(index["files"]):
        d = read_vgd(os.path.join(data_dir, name))
        h = d["header"]
        clip = gt.get(h["index"], {})
        if k < n_decode and clip:
            ref = reference_frame(os.path.join(os.path.dirname(index["gt"]), clip["path"]),
                                  h["frame_indices"][0], h["width"], h["height"], h["H"], h["W"])
            diff = np.abs(ref.astype(np.int32) - d["frames"][0].astype(np.int32)).max(-1)
            worst.append(int(diff.max()))
            if diff.max() > 3:
                cols = sorted(set(np.nonzero(diff > 3)[1].tolist()))
                print(f"{name}: {h['width']}x{h['height']} frame {h['frame_indices'][0]} differs "
                      f"from the reference decode+resize by up to {diff.max()} (columns {cols})")
                bad += 1
        for b in clip.get("boxes", []):
            for fi, fr in zip(h["frame_indices"], d["frames"]):
                want = b["start_frame"] <= fi <= b["end_frame"]
                seen_bad += int(box_seen(fr, b["rgb"]) != want)
                seen_n += 1
        if d["patches"] is not None:
            p, _ = patchify(d["frames"])
            if p.shape != d["patches"].shape or not np.array_equal(p, d["patches"]):
                print(f"{name}: patchify differs")
                bad += 1
        for q in d["questions"]:
            ids, pos = build_prompt(tok, h["pair_strings"], h["grid"], q["question"])
            if not (np.array_equal(ids, q["ids"]) and np.array_equal(pos, q["pos"])):
                print(f"{name}: prompt differs for {q['question']!r}")
                bad += 1
    print(f"{len(index['files'])} files checked, {bad} mismatches; box visibility: "
          f"{seen_bad} of {seen_n} sampled frames disagree with the ground truth"
          + (f"; reference decode: max difference {max(worst)} over {len(worst)} clips"
             if worst else ""))
    return 1 if bad or seen_bad > 0.02 * max(seen_n, 1) else 0


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) == 5 else 0))
    print(__doc__)
    sys.exit(2)
