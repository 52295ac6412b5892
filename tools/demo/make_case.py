#!/usr/bin/python3
"""Writes a parity case for the C engine from the PyTorch model, in the layout of
../shared/golden/tiny1 (manifest.json + raw little-endian .bin files + the checkpoint files), so
`vigil-model golden CASE_DIR` compares model/ with tools/demo/qwen3vl_tiny.py on real demo inputs
(issue 6: "the C engine and the PyTorch model give the same logits, relative error <= 1e-4").

Inputs come from one .vgd clip written by vigil-demo-export (frames, plan, prompt ids and
positions made by vigil's own pipeline and tokenizer); the model from a Hugging Face-layout
directory (export_hf.py's output, e.g. models/demo).

Usage: make_case.py --model models/demo --vgd DATA/00000.vgd --out CASE_DIR
                    [--question 0] [--gen 8]
"""
import argparse
import hashlib
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import qwen3vl_tiny  # noqa: E402
import vgd  # noqa: E402

CHECKPOINT_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "generation_config.json", "video_preprocessor_config.json"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--vgd", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--question", type=int, default=0, help="index into the clip's questions")
    ap.add_argument("--gen", type=int, default=8, help="greedy steps (no stop token)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)

    model = qwen3vl_tiny.load_pretrained(a.model).eval()
    rec = vgd.read_vgd(a.vgd)
    h, q = rec["header"], rec["questions"][a.question]
    pix_np, grid = vgd.patchify(np.ascontiguousarray(rec["frames"]))
    ids = torch.from_numpy(q["ids"])[None]
    pos = torch.from_numpy(q["pos"])[:, None]
    pix = torch.from_numpy(pix_np)
    traced = {}

    def trace(name, t):
        traced.setdefault(name, []).append(t.detach().float().numpy().copy())

    with torch.no_grad():
        logits = model(ids, pos, pix, [grid], trace=trace)[0]
        vision = model.model.visual(pix, [grid])
        seq, p = ids.clone(), pos.clone()
        delta = int(q["rope_delta"])
        gen_ids, gen_pos, gen_logits = [], [], [logits[-1]]
        for j in range(a.gen):
            nxt = int(gen_logits[-1].argmax())
            gen_ids.append(nxt)
            pj = seq.shape[1] + delta
            gen_pos.append(pj)
            if j + 1 < a.gen:
                seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
                p = torch.cat([p, torch.full((3, 1, 1), pj, dtype=torch.long)], dim=2)
                gen_logits.append(model(seq, p, vision=vision)[0, -1])
    logits = logits.numpy()
    gl = torch.stack(gen_logits).numpy()

    os.makedirs(a.out, exist_ok=True)
    for f in CHECKPOINT_FILES:
        src = os.path.join(a.model, f)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(a.out, f))
    files = []

    def put(name, arr, dtype, meaning):
        arr = np.ascontiguousarray(np.asarray(arr).astype(dtype))
        path = os.path.join(a.out, name + ".bin")
        arr.astype(np.dtype(dtype).newbyteorder("<")).tofile(path)
        with open(path, "rb") as fh:
            sha = hashlib.sha256(fh.read()).hexdigest()
        files.append({"name": name, "file": name + ".bin", "dtype": dtype,
                      "shape": list(arr.shape), "meaning": meaning, "sha256": sha})

    S, V = logits.shape
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :20]
    gtop = np.argsort(-gl, axis=-1, kind="stable")[:, :20]
    lse = torch.logsumexp(torch.from_numpy(logits).double(), -1).numpy()
    glse = torch.logsumexp(torch.from_numpy(gl).double(), -1).numpy()
    subset = np.arange(V)  # the demo vocabulary is small: the subset is all of it
    put("frames_u8", rec["frames"], "uint8", "resized frames from vigil's pipeline, [T,H,W,3]")
    put("frame_indices", h["frame_indices"], "int64", "sampled frame indices")
    put("timestamps", h["pair_times"], "float32", "seconds per temporal pair")
    put("input_ids", q["ids"][None], "int64", "[1,S] prompt ids (vigil pipeline + tokenizer)")
    put("pixel_values_videos", pix_np, "float32", "[N,1536] patchify(frames_u8)")
    put("video_grid_thw", np.array([grid]), "int64", "[1,3] grid (t,h,w)")
    put("position_ids", q["pos"][:, None], "int64", "[3,1,S] MRoPE positions")
    put("rope_deltas", np.array([[delta]]), "int64", "[1,1] rope delta")
    put("vision_patch_embed", traced["vision_patch_embed"][0], "float32", "patch embedding")
    put("vision_pos_embed", traced["vision_pos_embed"][0], "float32", "interpolated pos-embed")
    put("vision_rope_freqs", traced["vision_rope_freqs"][0], "float32", "vision RoPE angles")
    put("vision_block_out", np.stack(traced["vision_block_out"]), "float32", "vision blocks")
    put("video_embeds", traced["video_embeds"][0], "float32", "merger output")
    put("deepstack_embeds", traced["deepstack_embeds"][0], "float32", "DeepStack features")
    put("text_rope_cos", traced["text_rope_cos"][0], "float32", "[S,head_dim] MRoPE cos")
    put("text_rope_sin", traced["text_rope_sin"][0], "float32", "[S,head_dim] MRoPE sin")
    put("text_hidden_in", np.stack(traced["text_hidden_in"]), "float32", "[L+1,S,H] layer inputs")
    put("text_layer_out", np.stack(traced["text_layer_out"]), "float32", "[L,S,H] layer outputs")
    put("final_hidden", traced["final_hidden"][0], "float32", "[S,H] after the final norm")
    put("logits_last", logits[-1], "float32", "[V] logits at the last prompt position")
    put("logits_subset_ids", subset, "int64", "ids of logits_subset (the whole vocabulary)")
    put("logits_subset", logits[:, subset], "float32", "[S,V] logits at every position")
    put("logits_topk_ids", top, "int64", "[S,20] top-20 ids")
    put("logits_topk_vals", np.take_along_axis(logits, top, -1), "float32", "[S,20] their logits")
    put("logits_logsumexp", lse, "float32", "[S] logsumexp")
    put("gen_ids", gen_ids, "int64", "greedy ids (argmax, no stop token)")
    put("gen_step_logits_subset", gl[:, subset], "float32", "[N,V] logits per step")
    put("gen_step_topk_ids", gtop, "int64", "[N,20] top-20 ids per step")
    put("gen_step_topk_vals", np.take_along_axis(gl, gtop, -1), "float32", "[N,20] their logits")
    put("gen_step_logsumexp", glse, "float32", "[N] logsumexp per step")
    put("gen_position_ids", np.stack([gen_pos] * 3), "int64", "[3,N] decode positions")
    manifest = {
        "case": os.path.basename(os.path.normpath(a.out)),
        "description": "Parity case written by tools/demo/make_case.py from the PyTorch model "
                       "(tools/demo/qwen3vl_tiny.py, float32) on inputs made by vigil's pipeline.",
        "producer": {"script": "tools/demo/make_case.py", "torch": torch.__version__,
                     "vgd": os.path.basename(a.vgd), "clip": h["clip"]},
        "video": {"frame_indices": h["frame_indices"], "timestamps": h["pair_times"],
                  "timestamp_strings": h["pair_strings"]},
        "messages": [{"role": "user", "content": [{"type": "video"},
                                                  {"type": "text", "text": q["question"]}]}],
        "seq_len": int(S), "num_video_tokens": int(vision[0].shape[0]),
        "suggested_tolerances": {
            "pixel_values_videos": "exact up to 1e-6",
            "vision_and_hidden_states": "max abs diff <= 1e-4",
            "logits": "max abs diff <= 1e-4 (relative to max(1, max|ref|): issue 6's bar)"},
        "files": files,
    }
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"{a.out}: S={S}, {manifest['num_video_tokens']} video tokens, gen {gen_ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
