#!/usr/bin/python3
"""Checks tools/demo/qwen3vl_tiny.py against a golden case produced by Hugging Face transformers'
own Qwen3-VL classes (../shared/golden/<case>/, described by its manifest.json).

Loads the case's config.json and model.safetensors, feeds its input_ids, pixel_values_videos,
video_grid_thw and position_ids, and compares every intermediate the manifest lists (patch
embedding, position embedding, vision RoPE angles, vision block outputs, merged video embeddings,
DeepStack features, text RoPE cos/sin, text layer inputs/outputs, final hidden state, logits) plus
the greedy continuation (re-run without a KV cache at the manifest's decode positions).

Usage: check_golden.py [CASE_DIR ...]   (default: ../shared/golden/tiny1 beside the checkout)
Exit status: 0 pass, 1 a mismatch, 77 skipped (no torch or no golden directory; ctest SKIP code).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import numpy as np
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    print("SKIP: numpy/torch not importable by", sys.executable)
    sys.exit(77)

import qwen3vl_tiny  # noqa: E402

# Relative error = max|a-b| / max|b| per tensor. float32 vs float32 with different summation order.
REL_TOL = 1e-4


def load_bin(case, manifest, name):
    for f in manifest["files"]:
        if f["name"] == name:
            a = np.fromfile(os.path.join(case, f["file"]), dtype=np.dtype(f["dtype"]).newbyteorder("<"))
            return a.reshape(f["shape"])
    return None


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf"), f"shape {a.shape} != {b.shape}"
    den = max(np.abs(b).max(), 1e-30)
    return float(np.abs(a - b).max() / den), ""


def check_case(case):
    torch.set_num_threads(1)
    with open(os.path.join(case, "manifest.json")) as f:
        manifest = json.load(f)
    model = qwen3vl_tiny.load_pretrained(case).eval()
    ids = torch.from_numpy(load_bin(case, manifest, "input_ids").astype(np.int64))
    pix = torch.from_numpy(load_bin(case, manifest, "pixel_values_videos").astype(np.float32))
    grid = [tuple(g) for g in load_bin(case, manifest, "video_grid_thw").tolist()]
    pos = torch.from_numpy(load_bin(case, manifest, "position_ids").astype(np.int64))

    traced = {}

    def trace(name, t):
        traced.setdefault(name, []).append(t.detach().float().numpy().copy())

    with torch.no_grad():
        logits = model(ids, pos, pix, grid, trace=trace)[0].numpy()

    got = {
        "vision_patch_embed": traced["vision_patch_embed"][0],
        "vision_pos_embed": traced["vision_pos_embed"][0],
        "vision_rope_freqs": traced["vision_rope_freqs"][0],
        "vision_block_out": np.stack(traced["vision_block_out"]),
        "video_embeds": traced["video_embeds"][0],
        "deepstack_embeds": traced["deepstack_embeds"][0],
        "text_rope_cos": traced["text_rope_cos"][0],
        "text_rope_sin": traced["text_rope_sin"][0],
        "text_hidden_in": np.stack(traced["text_hidden_in"]),
        "text_layer_out": np.stack(traced["text_layer_out"]),
        "final_hidden": traced["final_hidden"][0],
        "logits_last": logits[-1],
    }
    subset = load_bin(case, manifest, "logits_subset_ids")
    if subset is not None:
        got["logits_subset"] = logits[:, subset]
    lse = torch.logsumexp(torch.from_numpy(logits).double(), dim=-1).numpy()
    got["logits_logsumexp"] = lse

    worst, failed = 0.0, []
    for name, a in got.items():
        ref = load_bin(case, manifest, name)
        if ref is None:
            continue
        e, why = rel_err(a, ref)
        worst = max(worst, e)
        status = "ok" if e <= REL_TOL else "FAIL"
        print(f"  {name:22s} rel {e:.2e} {status} {why}")
        if e > REL_TOL:
            failed.append(name)

    # Top-1 agreement at every prompt position.
    top = load_bin(case, manifest, "logits_topk_ids")
    if top is not None:
        agree = float((logits.argmax(-1) == top[:, 0]).mean())
        print(f"  {'top1 agreement':22s} {agree:.3f}")
        if agree < 1.0:
            failed.append("top1")

    # Greedy continuation without a KV cache: decode token j sits at S+j+rope_delta on all axes.
    gen = load_bin(case, manifest, "gen_ids")
    gpos = load_bin(case, manifest, "gen_position_ids")
    if gen is not None and gpos is not None:
        seq, p = ids.clone(), pos.clone()
        out = []
        with torch.no_grad():
            vision = model.model.visual(pix, grid)
            for j in range(len(gen)):
                lg = model(seq, p, vision=vision)[0, -1]
                nxt = int(lg.argmax())
                out.append(nxt)
                seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
                pj = torch.from_numpy(gpos[:, j].astype(np.int64)).view(3, 1, 1)
                p = torch.cat([p, pj], dim=2)
        same = out == [int(g) for g in gen]
        print(f"  {'greedy gen_ids':22s} {'ok' if same else 'FAIL'} {out}")
        if not same:
            failed.append("gen_ids")
    print(f"  worst relative error {worst:.2e} (tolerance {REL_TOL:.0e})")
    return not failed


def main(argv):
    cases = argv[1:] or [os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "golden",
                                                       "tiny1"))]
    ok = True
    for case in cases:
        if not os.path.isfile(os.path.join(case, "manifest.json")):
            print(f"SKIP: no golden case at {case}")
            return 77
        print(f"golden case {case}")
        ok = check_case(case) and ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
