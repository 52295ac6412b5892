#!/usr/bin/python3
"""Trains the demo model (issue 6): a tiny Qwen3-VL that answers "When is the {colour} box visible?"
/ "When does the {colour} box appear?" on synthetic clips, following ../shared/notes/demo-training.md.

Data: one directory per curriculum stage, each written by vigil-demo-export (tools/demo/export_data.c)
from clips of tools/demo/gen_clips.py, so the frames, timestamps, prompt ids and MRoPE positions are
exactly those vigil's pipeline produces at inference. Stages are given in order with --data.

Recipe (what the first experiment found):
  * Salience curriculum gated on measured accuracy, not on time: stage k trains on its own clips
    (e.g. boxes 3x larger, then 2x, 1.5x, 1x; then longer clips); the run moves to stage k+1 when the
    held-out presence accuracy (and, where --gate-copy applies, the copy accuracy) reaches the gate.
    From --gate-copy-from on, leaving a stage also needs copy accuracy >= --gate-copy (copying is
    learned on short clips before they get longer). A fraction --mix-prev of the batches still
    comes from earlier stages. Each batch holds clips of similar length (--bucket).
  * Balanced questions: each present colour plus as many absent ones (at least one), each with a
    random one of the two templates, so the yes/no decision is about 50/50.
  * Shared video prefix: the video is encoded once per clip; each question follows it in its own
    block, with a mask letting a block see the prefix and itself only (exact: the block's positions
    are those of a standalone prompt).
  * Targets copy the prompt: for a present box the answer gives the PRINTED "<t seconds>" strings of
    the first and last temporal pair with a frame showing the box, so the answer is a copy of prompt
    tokens: "The {colour} box is visible from {s} to {e} seconds." / "There is no {colour} box in the
    video.", followed by <|im_end|>.

Logged as it goes: loss, presence accuracy and copy accuracy (teacher-forced: the answer's first
token; all timestamp tokens of a present answer exact), step time; every --eval-every steps the same
on held-out clips plus greedy-decoded mean tIoU, R@0.5/0.7 and absent accuracy, next to the
video-blind baseline (0.12..0.88 of the duration, blind_tiou) and the ceiling of the copy targets
themselves (target_tiou: printed pair times vs the true times).

Resumable: every --save-every steps (and at the end) CKPT_DIR/last.pt holds the model, optimizer,
RNG states, curriculum stage, step and metric history; --resume continues from it bit-for-bit in the
data order. Stage transitions also keep CKPT_DIR/stage<k>.pt.

SMOKE TESTS ONLY: --py-gt CLIPS.json replaces --data by a pure-Python approximation of the pipeline
(vgd.load_py_clip); it exists to test this script without the C exporter and must not be used for
the real model.
"""
import argparse
import json
import math
import os
import random
import re
import signal
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import qwen3vl_tiny  # noqa: E402
import tokenizer as tokmod  # noqa: E402
import vgd  # noqa: E402

COLOURS = ["red", "green", "blue", "yellow", "white"]
TEMPLATES = ["When is the {colour} box visible?", "When does the {colour} box appear?"]
ANSWER_PRESENT = "The {colour} box is visible from {s} to {e} seconds."
ANSWER_ABSENT = "There is no {colour} box in the video."
IGNORE = -100
# Kinds of target tokens, for the metrics.
K_OTHER, K_FIRST, K_TIME = 0, 1, 2


# ---------------------------------------------------------------------------------------------------
# Model configuration
# ---------------------------------------------------------------------------------------------------
# Model sizes (the notes' 745k-parameter model); train.py's size options default to these.
MODEL_DEFAULTS = {"hidden": 128, "layers": 2, "vision_hidden": 64, "vision_depth": 2,
                  "deepstack": 1, "rope_theta": 5e6}


def make_config(tok, a=None):
    """The Hugging Face config.json of the demo model (sizes from `a`, an object with the
    MODEL_DEFAULTS attributes, or the defaults; token ids from tok)."""
    if a is None:
        a = argparse.Namespace(**MODEL_DEFAULTS)
    vocab = (tok.vocab_size + 7) // 8 * 8
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "image_token_id": tok.token_id("<|image_pad|>"),
        "video_token_id": tok.token_id("<|video_pad|>"),
        "vision_start_token_id": tok.token_id("<|vision_start|>"),
        "vision_end_token_id": tok.token_id("<|vision_end|>"),
        "tie_word_embeddings": True,
        "dtype": "float32",
        "text_config": {
            "model_type": "qwen3_vl_text", "vocab_size": vocab, "hidden_size": a.hidden,
            "intermediate_size": 2 * a.hidden, "num_hidden_layers": a.layers,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": a.hidden // 4,
            "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": a.rope_theta,
            "rope_scaling": {"rope_type": "default", "mrope_interleaved": True,
                             "mrope_section": mrope_section(a.hidden // 4)},
            "max_position_embeddings": 32768, "attention_bias": False, "attention_dropout": 0.0,
            "tie_word_embeddings": True, "use_cache": True, "initializer_range": 0.02,
            "bos_token_id": tok.token_id("<|endoftext|>"),
            "eos_token_id": tok.token_id("<|im_end|>"),
        },
        "vision_config": {
            "model_type": "qwen3_vl", "depth": a.vision_depth, "hidden_size": a.vision_hidden,
            "num_heads": 4, "intermediate_size": 2 * a.vision_hidden, "out_hidden_size": a.hidden,
            "hidden_act": "gelu_pytorch_tanh", "in_channels": 3, "patch_size": 16,
            "temporal_patch_size": 2, "spatial_merge_size": 2, "num_position_embeddings": 256,
            "deepstack_visual_indexes": list(range(a.deepstack)), "initializer_range": 0.02,
        },
    }


def mrope_section(head_dim):
    """Qwen3-VL's 24/20/20 split of 64 frequency slots, scaled to head_dim/2 (e.g. 6/5/5 for 16)."""
    half = head_dim // 2
    hw = round(half * 20 / 64)
    return [half - 2 * hw, hw, hw]


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
class Stage:
    """One curriculum stage: clips (paths of .vgd files, or preloaded records for the smoke path),
    their ground truth by clip index, and a deterministic train/val split."""

    def __init__(self, name, items, gt_by_index, sample_params, val_frac):
        self.name = name
        self.gt = gt_by_index
        self.sample_params = sample_params
        n_val = max(1, int(round(len(items) * val_frac))) if len(items) > 1 else 0
        self.val = items[len(items) - n_val:]
        self.train = items[:len(items) - n_val] or items

    @staticmethod
    def _load_gt(path):
        with open(path) as f:
            return {c["index"]: c for c in json.load(f)["clips"]}

    @classmethod
    def from_vgd_dir(cls, d, val_frac):
        """One exported directory, or several joined by '+' (one stage of their union; each keeps
        its own ground truth, and the validation clips are taken from each in proportion)."""
        items, val, gt, sp = [], [], {}, None
        for part in d.split("+"):
            with open(os.path.join(part, "index.json")) as f:
                index = json.load(f)
            by_index = cls._load_gt(index["gt"])
            files = [os.path.join(part, n) for n in sorted(index["files"])]
            for path in files:
                gt[path] = by_index[vgd.read_vgd_header(path)["index"]]
            p_sp = {k: index[k] for k in ("min_pixels", "max_pixels", "fps")}
            if sp is not None and p_sp != sp:
                raise ValueError(f"{part} was exported with {p_sp}, {d.split('+')[0]} with {sp}")
            sp = p_sp
            part_stage = cls(part, files, {}, sp, val_frac)
            items += part_stage.train
            val += part_stage.val
        st = cls(d, items + val, gt, sp, 0.0)
        st.train, st.val = items, val or items
        return st

    def gt_of(self, item, rec):
        """The ground truth of a loaded item."""
        if isinstance(item, str) and item in self.gt:
            return self.gt[item]
        return self.gt[rec["header"]["index"]]

    @classmethod
    def from_py_gt(cls, gt_path, tok, min_pixels, max_pixels, val_frac):
        """SMOKE ONLY (see vgd.load_py_clip)."""
        gt = cls._load_gt(gt_path)
        items = []
        for c in gt.values():
            rec = vgd.load_py_clip(c, os.path.dirname(gt_path), min_pixels, max_pixels)
            h = rec["header"]
            for qa in c["qa"]:
                ids, pos = vgd.build_prompt(tok, h["pair_strings"], h["grid"], qa["question"])
                rec["questions"].append({"question": qa["question"], "ids": ids, "pos": pos})
            items.append(rec)
        sp = {"min_pixels": min_pixels, "max_pixels": max_pixels, "fps": 2.0}
        return cls("py:" + gt_path, items, gt, sp, val_frac)

    def load(self, item):
        return vgd.read_vgd(item) if isinstance(item, str) else item

    def _by_length(self):
        """Training items sorted by prompt length (first question's token count), computed once
        from the headers."""
        if not hasattr(self, "_sorted"):
            def length(item):
                h = vgd.read_vgd_header(item) if isinstance(item, str) else item["header"]
                return h["questions"][0]["n"] if h.get("questions") else h["T"]
            self._sorted = sorted(self.train, key=length)
        return self._sorted

    def draw(self, rng, n, window):
        """n training items of similar length (less padding): a random anchor and n-1 others
        drawn from the `window` items nearest to it in length. window <= n gives plain uniform
        sampling."""
        if window <= n or len(self.train) <= window:
            return [self.train[int(rng.integers(len(self.train)))] for _ in range(n)]
        order = self._by_length()
        k = int(rng.integers(len(order)))
        lo = min(max(0, k - window // 2), len(order) - window)
        return [order[k]] + [order[lo + int(rng.integers(window))] for _ in range(n - 1)]


def pair_shows(header, box):
    """Per temporal pair: does one of its frames show the box?"""
    fi = header["frame_indices"]
    if len(fi) % 2:
        fi = fi + [fi[-1]]
    return [any(box["start_frame"] <= fi[2 * k + j] <= box["end_frame"] for j in (0, 1))
            for k in range(len(fi) // 2)]


def printed_interval(header, box, lo=0, hi=None):
    """(first, last) pair index in [lo, hi) whose frames include one showing the box, or None."""
    shows = pair_shows(header, box)
    hi = len(shows) if hi is None else hi
    ks = [k for k in range(lo, hi) if shows[k]]
    return (ks[0], ks[-1]) if ks else None


def strip_seconds(s):
    """'<12.5 seconds>' -> '12.5'."""
    m = re.fullmatch(r"<(.*) seconds>", s)
    if not m:
        raise ValueError(f"unexpected pair string {s!r}")
    return m.group(1)


def pair_spans(ids, tok, pair_strings):
    """[(start, end)) token span of each pair ("<t seconds><|vision_start|>pads<|vision_end|>") in
    a prompt, or None when the spans are not contiguous as expected."""
    vs = np.nonzero(ids == tok.token_id("<|vision_start|>"))[0]
    ve = np.nonzero(ids == tok.token_id("<|vision_end|>"))[0]
    if len(vs) != len(pair_strings) or len(ve) != len(pair_strings):
        return None
    spans = []
    for k, ps in enumerate(pair_strings):
        ts = tok.encode(ps)
        a = int(vs[k]) - len(ts)
        if a < 0 or list(ids[a:int(vs[k])]) != list(ts) or (spans and spans[-1][1] != a):
            return None
        spans.append((a, int(ve[k]) + 1))
    return spans


def make_sample(rec, gt_clip, tok, rng, flip=False, all_colours=False, crop_prob=0.0):
    """One clip packed for training: the shared video prefix (ids/positions up to the last
    <|vision_end|>, from the exporter) and one block per chosen question (its prompt suffix plus
    the target answer and <|im_end|>, positions continuing as at decode time). Chooses each present
    colour plus as many absent ones (all colours with all_colours), a random template each; flip
    mirrors the frames at random (the answer does not change).

    crop_prob: with this probability keep only a random run of >= 4 consecutive pairs, as a live
    stream's sliding window does (vigild's streams): the kept pairs keep their printed "<t
    seconds>" and positions (a gap after the prompt head, as after vg_seq_remove), the question
    follows the last kept pair, and the answers are those of the kept pairs. The same clip then
    asks for other timestamps each time it is drawn, so they cannot be remembered, only read."""
    h = rec["header"]
    frames = rec["frames"]
    if flip:
        if rng.random() < 0.5:
            frames = frames[:, :, ::-1]
        if rng.random() < 0.5:
            frames = frames[:, ::-1]
    patches, grid = vgd.patchify(np.ascontiguousarray(frames))
    if list(grid) != list(h["grid"]):
        raise ValueError(f"clip {h['index']}: grid {grid} != header {h['grid']}")
    n_pairs = int(grid[0])
    lo, hi = 0, n_pairs
    spans = None
    if crop_prob > 0 and n_pairs > 4 and rng.random() < crop_prob:
        q0 = rec["questions"][0]
        spans = pair_spans(q0["ids"], tok, h["pair_strings"])
        if spans is not None:
            length = int(rng.integers(4, n_pairs + 1))
            lo = int(rng.integers(0, n_pairs - length + 1))
            hi = lo + length
            if (lo, hi) == (0, n_pairs):
                spans = None
    boxes = {b["colour"]: b for b in gt_clip["boxes"]}
    iv = {c: printed_interval(h, boxes[c], lo, hi) for c in COLOURS if c in boxes}
    present = [c for c in COLOURS if iv.get(c)]
    absent = [c for c in COLOURS if not iv.get(c)]
    if all_colours:
        chosen = present + absent
    else:
        k = min(len(absent), max(1, len(present)))
        chosen = present + [str(c) for c in rng.choice(absent, size=k, replace=False)]
    by_text = {q["question"]: q for q in rec["questions"]}
    vend = tok.token_id("<|vision_end|>")
    im_end = tok.token_id("<|im_end|>")
    prefix_ids = prefix_pos = None
    shift = 0
    blocks = []
    for c in chosen:
        q = by_text[TEMPLATES[int(rng.integers(2))].format(colour=c)]
        ids, pos = q["ids"], q["pos"]
        cut = int(np.nonzero(ids == vend)[0][-1]) + 1
        if prefix_ids is None:
            ref_ids = ids[:cut]
            prefix_ids, prefix_pos = ids[:cut], pos[:, :cut]
            if spans is not None:
                keep = np.r_[0:spans[0][0], spans[lo][0]:spans[hi - 1][1]]
                prefix_ids, prefix_pos = prefix_ids[keep], prefix_pos[:, keep]
                # The question follows the last kept pair, as text follows a video (max + 1).
                shift = int(pos[0, cut]) - (int(prefix_pos.max()) + 1)
        elif not np.array_equal(ids[:cut], ref_ids):
            raise ValueError(f"clip {h['index']}: questions do not share the video prefix")
        info = {"colour": c, "present": c in present, "duration": gt_clip["duration"]}
        if c in present:
            k0, k1 = iv[c]
            s_txt, e_txt = strip_seconds(h["pair_strings"][k0]), strip_seconds(h["pair_strings"][k1])
            answer = ANSWER_PRESENT.format(colour=c, s=s_txt, e=e_txt)
            info.update(start=boxes[c]["start"], end=boxes[c]["end"], target=answer)
        else:
            answer = ANSWER_ABSENT.format(colour=c)
        ans = tok.encode(answer) + [im_end]
        kinds = [K_OTHER] * len(ans)
        kinds[0] = K_FIRST
        if c in present:  # mark the timestamp tokens (digits and '.') of the answer
            pre = tok.encode(f"The {c} box is visible from")
            mid_s = tok.encode(f" {s_txt}")
            mid_t = tok.encode(" to")
            mid_e = tok.encode(f" {e_txt}")
            a = len(pre)
            for j in range(a + 1, a + len(mid_s)):
                kinds[j] = K_TIME
            b = a + len(mid_s) + len(mid_t)
            for j in range(b + 1, b + len(mid_e)):
                kinds[j] = K_TIME
        suffix_ids, suffix_pos = ids[cut:], pos[:, cut:] - shift
        last = int(suffix_pos[0, -1])
        ans_pos = np.arange(last + 1, last + 1 + len(ans), dtype=np.int64)
        blocks.append({"ids": np.concatenate([suffix_ids, np.array(ans, dtype=np.int64)]),
                       "pos": np.concatenate([suffix_pos, np.stack([ans_pos] * 3)], axis=1),
                       "n_prompt": len(suffix_ids), "answer": ans, "kinds": kinds, "info": info})
    if spans is not None:
        per = int(grid[1]) * int(grid[2])
        patches = patches[lo * per:hi * per]
        grid = (hi - lo, int(grid[1]), int(grid[2]))
    # Per kept pair and colour (for the --aux-weight loss): a frame of the pair shows it; the
    # pair is the first that does; the previous pair was the last that did (all causal facts).
    nc = len(COLOURS)
    vis = np.zeros((hi - lo, 3 * nc), dtype=np.float32)
    for ci, c in enumerate(COLOURS):
        if iv.get(c):
            k0, k1 = iv[c][0] - lo, iv[c][1] - lo
            vis[k0:k1 + 1, ci] = 1.0
            vis[k0, nc + ci] = 1.0
            if k1 + 1 < hi - lo:
                vis[k1 + 1, 2 * nc + ci] = 1.0
    return types.SimpleNamespace(patches=patches, grid=tuple(grid), header=h,
                                 prefix_ids=prefix_ids, prefix_pos=prefix_pos, blocks=blocks,
                                 pair_vis=vis)


def collate(samples):
    """Packs samples into padded tensors: ids [B,S], pos [3,B,S], mask [B,S,S], labels [B,S]
    (target of the NEXT token at each position), kinds [B,S], plus the vision input."""
    rows = []
    for s in samples:
        n0 = len(s.prefix_ids)
        ids, pos, blk = [s.prefix_ids], [s.prefix_pos], [np.full(n0, -1)]
        lab, kind = [np.full(n0, IGNORE)], [np.zeros(n0, dtype=np.int64)]
        for b, bl in enumerate(s.blocks):
            n, L = bl["n_prompt"], len(bl["ids"])
            ids.append(bl["ids"])
            pos.append(bl["pos"])
            blk.append(np.full(L, b))
            labels = np.full(L, IGNORE)
            kinds = np.zeros(L, dtype=np.int64)
            labels[n - 1:L - 1] = bl["answer"]
            kinds[n - 1:L - 1] = bl["kinds"]
            lab.append(labels)
            kind.append(kinds)
        rows.append((np.concatenate(ids), np.concatenate(pos, axis=1), np.concatenate(blk),
                     np.concatenate(lab), np.concatenate(kind)))
    B, S = len(rows), max(len(r[0]) for r in rows)
    t_ids = torch.zeros(B, S, dtype=torch.long)
    t_pos = torch.zeros(3, B, S, dtype=torch.long)
    t_lab = torch.full((B, S), IGNORE, dtype=torch.long)
    t_kind = torch.zeros(B, S, dtype=torch.long)
    blk_all = torch.full((B, S), -2, dtype=torch.long)
    for i, (ids, pos, blk, lab, kind) in enumerate(rows):
        n = len(ids)
        t_ids[i, :n] = torch.from_numpy(ids)
        t_pos[:, i, :n] = torch.from_numpy(pos)
        t_lab[i, :n] = torch.from_numpy(lab)
        t_kind[i, :n] = torch.from_numpy(kind)
        blk_all[i, :n] = torch.from_numpy(blk)
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    bi, bj = blk_all[:, :, None], blk_all[:, None, :]
    mask = causal[None] & ((bj == -1) | (bj == bi)) & (bi != -2)
    mask |= torch.eye(S, dtype=torch.bool)[None]  # padding rows see themselves (no empty rows)
    pix = torch.from_numpy(np.concatenate([s.patches for s in samples]))
    grids = [s.grid for s in samples]
    return {"ids": t_ids, "pos": t_pos, "mask": mask, "labels": t_lab, "kinds": t_kind,
            "pixels": pix, "grids": grids,
            "pair_vis": torch.from_numpy(np.concatenate([s.pair_vis for s in samples]))}


def batch_metrics(logits, labels, kinds, seg):
    """Teacher-forced presence accuracy (first answer token) and copy accuracy (every timestamp
    token of an answer right). logits/labels/kinds/seg are flat over the target positions; seg
    numbers the answers."""
    pred = logits.argmax(-1)
    ok = pred == labels
    first = kinds == K_FIRST
    pres = (ok[first].float().sum().item(), int(first.sum()))
    copy_ok, copy_n = 0, 0
    t = kinds == K_TIME
    if t.any():
        for a in torch.unique(seg[t]).tolist():
            m = t & (seg == a)
            copy_ok += int(bool(ok[m].all()))
            copy_n += 1
    return pres, (copy_ok, copy_n)


def answer_segments(labels):
    """Numbers consecutive runs of target positions (one run per answer), flat over targets."""
    flat = (labels != IGNORE)
    seg = torch.cumsum((flat & ~torch.cat([torch.zeros(flat.shape[0], 1, dtype=torch.bool),
                                           flat[:, :-1]], dim=1)).long().flatten(), 0)
    return seg.view(flat.shape)[flat]


@torch.no_grad()
def check_packing(model, s):
    """Max |difference| between the answer logits of the packed sequence (shared prefix, block
    mask) and those of each question's standalone causal prompt. Exactness of the trick."""
    b = collate([s])
    lm = b["labels"] != IGNORE
    packed = model(b["ids"], b["pos"], b["pixels"], b["grids"], b["mask"], lm)
    vision = model.model.visual(b["pixels"], b["grids"])
    alone = []
    for bl in s.blocks:
        ids = torch.from_numpy(np.concatenate([s.prefix_ids, bl["ids"]]))[None]
        pos = torch.from_numpy(np.concatenate([s.prefix_pos, bl["pos"]], axis=1))[:, None]
        m = torch.zeros_like(ids, dtype=torch.bool)
        n0 = len(s.prefix_ids) + bl["n_prompt"] - 1
        m[0, n0:n0 + len(bl["answer"])] = True
        alone.append(model(ids, pos, vision=vision, logits_mask=m))
    return float((packed - torch.cat(alone)).abs().max())


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------
def tiou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


TIME_RE = re.compile(r"from (\d+(?:\.\d+)?) to (\d+(?:\.\d+)?) seconds")


@torch.no_grad()
def greedy(model, s, block, vision, max_new=32, im_end=None):
    """Greedy answer for one question of sample s, recomputing the whole (short) sequence each
    step. Returns the generated ids (without <|im_end|>)."""
    n = block["n_prompt"]
    ids = np.concatenate([s.prefix_ids, block["ids"][:n]])
    pos = np.concatenate([s.prefix_pos, block["pos"][:, :n]], axis=1)
    out = []
    for _ in range(max_new):
        t_ids = torch.from_numpy(ids)[None]
        t_pos = torch.from_numpy(pos)[:, None]
        lm = torch.zeros(1, len(ids), dtype=torch.bool)
        lm[0, -1] = True
        nxt = int(model(t_ids, t_pos, vision=vision, logits_mask=lm)[0].argmax())
        if nxt == im_end:
            break
        out.append(nxt)
        ids = np.append(ids, nxt)
        p = pos[0, -1] + 1
        pos = np.concatenate([pos, np.array([[p], [p], [p]])], axis=1)
    return out


@torch.no_grad()
def evaluate(model, stage, tok, seed, max_clips, n_greedy, log, items=None):
    """Held-out metrics for one stage: teacher-forced presence/copy accuracy on up to max_clips val
    clips (or `items`), and greedy tIoU / R@0.5 / R@0.7 / absent accuracy on the first n_greedy of
    them. Every colour is asked once per clip (present and absent), with a seeded template."""
    model.eval()
    items = stage.val if items is None else items
    rng = np.random.default_rng(seed)
    pres, copy = [0, 0], [0, 0]
    ious, blind, oracle, absent = [], [], [], [0, 0]
    im_end = tok.token_id("<|im_end|>")
    for ci, item in enumerate(items[:max_clips]):
        rec = stage.load(item)
        s = make_sample(rec, stage.gt_of(item, rec), tok, rng, all_colours=True)
        b = collate([s])
        logits_mask = b["labels"] != IGNORE
        lg = model(b["ids"], b["pos"], b["pixels"], b["grids"], b["mask"], logits_mask)
        p, c = batch_metrics(lg, b["labels"][logits_mask], b["kinds"][logits_mask],
                             answer_segments(b["labels"]))
        pres[0] += p[0]
        pres[1] += p[1]
        copy[0] += c[0]
        copy[1] += c[1]
        if ci < n_greedy:
            vision = model.model.visual(b["pixels"], b["grids"])
            for bl in s.blocks:
                text = tok.decode(greedy(model, s, bl, vision, im_end=im_end))
                info = bl["info"]
                if info["present"]:
                    m = TIME_RE.search(text)
                    pred = (float(m.group(1)), float(m.group(2))) if m else (0.0, 0.0)
                    ious.append(tiou(pred, (info["start"], info["end"])))
                    m = TIME_RE.search(info["target"])
                    oracle.append(tiou((float(m.group(1)), float(m.group(2))),
                                       (info["start"], info["end"])))
                    d = info["duration"]
                    blind.append(tiou((0.12 * d, 0.88 * d), (info["start"], info["end"])))
                else:
                    absent[0] += int(text.startswith("There is no"))
                    absent[1] += 1
    model.train()
    r = {"presence": pres[0] / max(pres[1], 1), "copy": copy[0] / max(copy[1], 1),
         "n_present": copy[1]}
    if ious:
        r.update(tiou=float(np.mean(ious)), r05=float(np.mean([x >= 0.5 for x in ious])),
                 r07=float(np.mean([x >= 0.7 for x in ious])), blind_tiou=float(np.mean(blind)),
                 target_tiou=float(np.mean(oracle)))
    if absent[1]:
        r["absent_acc"] = absent[0] / absent[1]
    log(f"eval {stage.name}: " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in r.items()))
    return r


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------
class AuxHead(torch.nn.Module):
    """Training-only probe (never exported): from the final hidden states of a pair's video tokens,
    which colours that pair shows, whether it is the first pair showing each, and whether the
    previous pair was the last. Its loss (--aux-weight) gives every pair a target, so the language
    model's states at each pair learn the transitions the answer has to find and copy the
    timestamps of."""

    def __init__(self, hidden, n):
        super().__init__()
        self.proj = torch.nn.Linear(hidden, n)

    def loss(self, h, vmask, grids, merge, pair_vis):
        rows = self.proj(h[vmask])  # [n_visual, colours], samples in batch order
        per = [(gh // merge) * (gw // merge) for (_, gh, gw) in grids]
        pooled, k = [], 0
        for (t, _, _), n in zip(grids, per):
            pooled.append(rows[k:k + t * n].view(t, n, -1).amax(dim=1))
            k += t * n
        logits = torch.cat(pooled)
        return F.binary_cross_entropy_with_logits(logits, pair_vis), \
            ((logits > 0).float() == pair_vis).float().mean().item()


def forward_with_hidden(model, b, logits_mask):
    """model(...) of qwen3vl_tiny, also returning the final hidden states and the video mask."""
    x, vmask, deep = model.embed(b["ids"], b["pixels"], b["grids"])
    h = model.model.language_model(x, b["pos"], b["mask"], vmask, deep)
    return F.linear(h[logits_mask], model.lm_weight()), h, vmask


def learning_rate(a, step):
    """Linear warm-up to --lr, then constant; from --decay-start a cosine decay to --lr-min over
    --decay-steps (the decay is by global step, so a resumed run continues it)."""
    lr = a.lr * min(1.0, (step + 1) / max(1, a.warmup))
    if a.decay_start > 0 and step >= a.decay_start:
        f = min(1.0, (step - a.decay_start) / max(1, a.decay_steps))
        lr = a.lr_min + (a.lr - a.lr_min) * 0.5 * (1.0 + math.cos(math.pi * f))
    return lr


def save_checkpoint(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the demo model (see the module docstring).")
    ap.add_argument("--data", action="append", default=[],
                    help="exported .vgd directory of a curriculum stage (repeat, in order)")
    ap.add_argument("--py-gt", action="append", default=[],
                    help="SMOKE ONLY: a gen_clips.py clips.json decoded in Python (repeatable)")
    ap.add_argument("--tokenizer", required=True,
                    help="the tokenizer.json the data were exported with (tokenizer.py build)")
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--resume", action="store_true", help="continue from CKPT_DIR/last.pt")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop (and save) after this")
    ap.add_argument("--steps", type=int, default=0, help="stop at this global step (0 = no limit)")
    ap.add_argument("--batch", type=int, default=6, help="clips per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--decay-start", type=int, default=0,
                    help="global step where the learning rate starts a cosine decay (0 = never)")
    ap.add_argument("--decay-steps", type=int, default=3000,
                    help="length of that decay; the rate then stays at --lr-min")
    ap.add_argument("--lr-min", type=float, default=5e-5)
    ap.add_argument("--crop-prob", type=float, default=0.0,
                    help="probability of training on a random run of >= 4 pairs of a clip, as a "
                         "live stream's window (make_sample)")
    ap.add_argument("--aux-weight", type=float, default=0.0,
                    help="weight of the per-pair visibility probe's loss (AuxHead; 0 = off)")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--time-weight", type=float, default=1.0,
                    help="loss weight of the answer's timestamp tokens")
    ap.add_argument("--mix-prev", type=float, default=0.2,
                    help="fraction of batches drawn from earlier stages")
    ap.add_argument("--bucket", type=int, default=4,
                    help="draw each batch among the bucket*batch clips nearest in length to a "
                         "random one (less padding); 1 = uniform")
    ap.add_argument("--gate", type=float, default=0.9, help="presence accuracy to leave a stage")
    ap.add_argument("--gate-copy", type=float, default=0.5,
                    help="copy accuracy also required to leave stages >= --gate-copy-from")
    ap.add_argument("--gate-copy-from", type=int, default=3,
                    help="first stage whose exit needs --gate-copy (3 = the first 1x-box stage "
                         "of make_data.sh: learn to copy on short clips before lengthening)")
    ap.add_argument("--force-stage", type=int, default=-1,
                    help="jump to this curriculum stage now (manual override of the gates)")
    ap.add_argument("--no-flip", action="store_true", help="disable flip augmentation")
    ap.add_argument("--val-frac", type=float, default=0.05)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-clips", type=int, default=24)
    ap.add_argument("--eval-greedy", type=int, default=8, help="clips decoded greedily per eval")
    ap.add_argument("--self-test", action="store_true",
                    help="check that the shared-prefix packing equals standalone prompts, exit")
    ap.add_argument("--eval-only", action="store_true",
                    help="evaluate CKPT_DIR/last.pt greedily on every clip of each --data and exit")
    ap.add_argument("--min-pixels", type=int, default=4096, help="(--py-gt only)")
    ap.add_argument("--max-pixels", type=int, default=9216, help="(--py-gt only)")
    # Model size (the notes' sizes by default).
    d = MODEL_DEFAULTS
    ap.add_argument("--hidden", type=int, default=d["hidden"])
    ap.add_argument("--layers", type=int, default=d["layers"])
    ap.add_argument("--vision-hidden", type=int, default=d["vision_hidden"])
    ap.add_argument("--vision-depth", type=int, default=d["vision_depth"])
    ap.add_argument("--deepstack", type=int, default=d["deepstack"],
                    help="DeepStack taps (blocks 0..n-1)")
    ap.add_argument("--rope-theta", type=float, default=d["rope_theta"])
    a = ap.parse_args(argv)

    torch.set_num_threads(a.threads)
    os.makedirs(a.ckpt_dir, exist_ok=True)
    log_path = os.path.join(a.ckpt_dir, "train.log")

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    tok = tokmod.Tokenizer.from_file(a.tokenizer)
    with open(a.tokenizer, encoding="utf-8") as f:
        tok_json = f.read()
    if a.data:
        stages = [Stage.from_vgd_dir(d, a.val_frac) for d in a.data]
    elif a.py_gt:
        log("WARNING: --py-gt is the smoke-test data path; it is not what inference sees")
        stages = [Stage.from_py_gt(g, tok, a.min_pixels, a.max_pixels, a.val_frac)
                  for g in a.py_gt]
    else:
        ap.error("give --data (or --py-gt for a smoke test)")
    sp = stages[-1].sample_params
    for st in stages:
        if st.sample_params != sp:
            ap.error(f"stage {st.name} was exported with {st.sample_params}, the last with {sp}")
        log(f"stage {st.name}: {len(st.train)} train clips, {len(st.val)} val clips")

    ckpt_path = os.path.join(a.ckpt_dir, "last.pt")
    state = None
    if (a.resume or a.eval_only) and os.path.exists(ckpt_path):
        state = torch.load(ckpt_path)
        cfg = state["config"]
        log(f"resuming from {ckpt_path}: step {state['step']}, stage {state['stage']}")
    else:
        if a.resume:
            log(f"no {ckpt_path} yet: starting a new run")
        cfg = make_config(tok, a)
    config = qwen3vl_tiny.Qwen3VLConfig(cfg)
    model = qwen3vl_tiny.Qwen3VL(config)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98),
                            weight_decay=a.weight_decay)
    rng = np.random.default_rng(a.seed)
    step, stage, history = 0, 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, stage, history = state["step"], state["stage"], state["history"]
        rng.bit_generator.state = state["rng_numpy"]
        random.setstate(state["rng_python"])
        torch.set_rng_state(state["rng_torch"])
        if state.get("data") != a.data:
            log(f"note: data directories differ from the checkpoint's {state.get('data')}")
        stage = min(stage, len(stages) - 1)
    else:
        torch.manual_seed(a.seed)
        random.seed(a.seed)
        model.init_weights(std=0.02, seed=a.seed)
    if a.force_stage >= 0:
        stage = min(a.force_stage, len(stages) - 1)
        log(f"stage forced to {stage}")
    log(f"model: {n_params} parameters; text {config.num_hidden_layers}x{config.hidden_size}, "
        f"vision {config.v_depth}x{config.v_hidden}, deepstack {config.deepstack_visual_indexes}, "
        f"vocab {config.vocab_size}")
    if a.self_test:
        st = stages[0]
        rec = st.load(st.train[0])
        smp = make_sample(rec, st.gt_of(st.train[0], rec), tok, np.random.default_rng(0),
                          all_colours=True)
        d = check_packing(model, smp)
        log(f"self-test: packed vs standalone answer logits differ by {d:.2e} "
            f"({len(smp.blocks)} questions)")
        return 0 if d < 1e-4 else 1
    if a.eval_only:
        if state is None:
            ap.error(f"--eval-only needs {ckpt_path}")
        for st in stages:
            items = st.train + st.val if st.val is not st.train else st.train
            evaluate(model, st, tok, a.seed, len(items), len(items), log, items=items)
        return 0
    aux = aux_opt = None
    if a.aux_weight > 0:
        aux = AuxHead(config.hidden_size, 3 * len(COLOURS))
        aux_opt = torch.optim.AdamW(aux.parameters(), lr=a.lr, betas=(0.9, 0.98))
        if state is not None and "aux" in state:
            aux.load_state_dict(state["aux"])
            aux_opt.load_state_dict(state["aux_optimizer"])
    model.train()

    def snapshot():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "stage": stage, "history": history, "config": cfg, "args": vars(a),
                "data": a.data, "sample_params": sp, "tokenizer_json": tok_json,
                "rng_numpy": rng.bit_generator.state, "rng_python": random.getstate(),
                "rng_torch": torch.get_rng_state(),
                **({"aux": aux.state_dict(), "aux_optimizer": aux_opt.state_dict()} if aux else {})}

    t_start = time.time()
    stop = []  # SIGTERM/SIGINT: finish the step, save, exit
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    acc = {"loss": 0.0, "n": 0, "pres": [0, 0], "copy": [0, 0], "time": 0.0}
    while True:
        if a.steps and step >= a.steps:
            break
        if a.max_minutes and time.time() - t_start > a.max_minutes * 60:
            log(f"time limit reached at step {step}")
            break
        if stop:
            log(f"signal {stop[0]}: stopping at step {step}")
            break
        t0 = time.time()
        lr = learning_rate(a, step)
        for g in opt.param_groups:
            g["lr"] = lr
        st = stages[stage]
        if stage > 0 and rng.random() < a.mix_prev:  # a whole batch from an earlier stage
            st = stages[int(rng.integers(stage))]
        samples = []
        for item in st.draw(rng, a.batch, a.bucket * a.batch):
            rec = st.load(item)
            samples.append(make_sample(rec, st.gt_of(item, rec), tok, rng,
                                       flip=not a.no_flip, crop_prob=a.crop_prob))
        b = collate(samples)
        logits_mask = b["labels"] != IGNORE
        if aux is not None:
            logits, hid, vmask = forward_with_hidden(model, b, logits_mask)
        else:
            logits = model(b["ids"], b["pos"], b["pixels"], b["grids"], b["mask"], logits_mask)
        labels, kinds = b["labels"][logits_mask], b["kinds"][logits_mask]
        w = torch.ones(labels.shape[0])
        w[kinds == K_TIME] = a.time_weight
        loss = (F.cross_entropy(logits, labels, reduction="none") * w).sum() / w.sum()
        total = loss
        if aux is not None:
            aux_loss, aux_acc = aux.loss(hid, vmask, b["grids"], config.merge,
                                         b["pair_vis"])
            total = loss + a.aux_weight * aux_loss
            acc["aux"] = acc.get("aux", 0.0) + aux_acc
            aux_opt.zero_grad()
            for g in aux_opt.param_groups:
                g["lr"] = lr
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if aux is not None:
            aux_opt.step()
        step += 1
        with torch.no_grad():
            p, c = batch_metrics(logits, labels, kinds, answer_segments(b["labels"]))
        acc["loss"] += float(loss)
        acc["n"] += 1
        for k, v in (("pres", p), ("copy", c)):
            acc[k][0] += v[0]
            acc[k][1] += v[1]
        acc["time"] += time.time() - t0
        if step % a.log_every == 0:
            log(f"step {step} stage {stage} lr {lr:.2e} loss {acc['loss'] / acc['n']:.4f} "
                f"presence {acc['pres'][0] / max(acc['pres'][1], 1):.3f} "
                f"copy {acc['copy'][0] / max(acc['copy'][1], 1):.3f} "
                f"({acc['copy'][1]} answers) {acc['time'] / acc['n']:.3f} s/step"
                + (f" aux {acc['aux'] / acc['n']:.3f}" if "aux" in acc else ""))
            acc = {"loss": 0.0, "n": 0, "pres": [0, 0], "copy": [0, 0], "time": 0.0}
        if step % a.eval_every == 0:
            r = evaluate(model, stages[stage], tok, a.seed, a.eval_clips, a.eval_greedy, log)
            history.append({"step": step, "stage": stage, **r})
            copy_ok = stage < a.gate_copy_from or a.gate_copy <= 0 or r["copy"] >= a.gate_copy
            if stage + 1 < len(stages) and r["presence"] >= a.gate and copy_ok:
                save_checkpoint(os.path.join(a.ckpt_dir, f"stage{stage}.pt"), snapshot())
                stage += 1
                log(f"gate passed: moving to stage {stage} ({stages[stage].name})")
        if step % a.save_every == 0:
            save_checkpoint(ckpt_path, snapshot())
    save_checkpoint(ckpt_path, snapshot())
    log(f"saved {ckpt_path} at step {step}, stage {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
