#!/usr/bin/python3
"""Exports a train.py checkpoint to a Hugging Face-layout model directory (models/demo/ by default):

  config.json                     Qwen3VLForConditionalGeneration / qwen3_vl, text_config and
                                  vision_config, token ids of the demo tokenizer
  model.safetensors               F32 (default) or BF16 (--bf16), tied embeddings (no lm_head.weight)
  tokenizer.json                  the byte-level BPE the model was trained with (from the checkpoint)
  tokenizer_config.json           eos/pad tokens, for Hugging Face loaders
  generation_config.json          greedy (do_sample false), eos <|im_end|> (then <|endoftext|>)
  video_preprocessor_config.json  the frame budget the training data were exported with: per-frame
                                  min_pixels / max_pixels (also as size.shortest_edge/longest_edge,
                                  which vigil reads the same way), fps 2, min/max frames, mean/std 0.5

After writing, the directory is reloaded with qwen3vl_tiny.load_pretrained and its logits on a
random input compared with the checkpoint's (a lossless round trip for F32).

With --random SEED instead of a checkpoint it writes an untrained model of the demo's shape
(train.py's default sizes, the tokenizer from tokenizer.py, frame budget --min-pixels/--max-pixels):
useful for engine and daemon tests before a trained model exists.

Usage: export_hf.py CKPT.pt [--out models/demo] [--bf16]
       export_hf.py --random SEED [--out DIR] [--min-pixels 4096] [--max-pixels 9216]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import qwen3vl_tiny  # noqa: E402
import safetensors_io  # noqa: E402
import tokenizer as tokmod  # noqa: E402


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("--random", type=int, metavar="SEED", help="untrained model, no checkpoint")
    ap.add_argument("--min-pixels", type=int, default=4096, help="(--random only)")
    ap.add_argument("--max-pixels", type=int, default=9216, help="(--random only)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "models", "demo"))
    ap.add_argument("--bf16", action="store_true", help="store the weights as bfloat16")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)

    if a.random is not None:
        import train
        tj = tokmod.build()
        model = qwen3vl_tiny.Qwen3VL(qwen3vl_tiny.Qwen3VLConfig(
            train.make_config(tokmod.Tokenizer(tj))))
        model.init_weights(std=0.02, seed=a.random)
        state = {"config": model.config.raw, "model": model.state_dict(), "step": 0,
                 "stage": -1,
                 "tokenizer_json": json.dumps(tj, ensure_ascii=False, indent=1) + "\n",
                 "sample_params": {"min_pixels": a.min_pixels, "max_pixels": a.max_pixels,
                                   "fps": 2.0}}
    elif a.checkpoint:
        state = torch.load(a.checkpoint)
    else:
        ap.error("give a checkpoint or --random SEED")
    cfg = dict(state["config"])
    cfg["dtype"] = "bfloat16" if a.bf16 else "float32"
    cfg["transformers_version"] = "4.57.0"
    model = qwen3vl_tiny.Qwen3VL(qwen3vl_tiny.Qwen3VLConfig(cfg))
    model.load_state_dict(state["model"])
    model.eval()
    tok = tokmod.Tokenizer(json.loads(state["tokenizer_json"]))
    sp = state["sample_params"]
    im_end, eot = tok.token_id("<|im_end|>"), tok.token_id("<|endoftext|>")

    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "config.json"), cfg)
    tensors = model.hf_state_dict()
    safetensors_io.save(tensors, os.path.join(a.out, "model.safetensors"),
                        dtype="BF16" if a.bf16 else "F32", metadata={"format": "pt"})
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(state["tokenizer_json"])
    write_json(os.path.join(a.out, "tokenizer_config.json"), {
        "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 32768,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
        "add_bos_token": False, "clean_up_tokenization_spaces": False, "errors": "replace",
        "split_special_tokens": False})
    write_json(os.path.join(a.out, "generation_config.json"), {
        "bos_token_id": eot, "eos_token_id": [im_end, eot], "pad_token_id": eot,
        "do_sample": False, "max_new_tokens": 32, "transformers_version": "4.57.0"})
    minp, maxp = int(sp["min_pixels"]), int(sp["max_pixels"])
    write_json(os.path.join(a.out, "video_preprocessor_config.json"), {
        "fps": float(sp["fps"]), "min_frames": 4, "max_frames": 768, "do_sample_frames": True,
        "min_pixels": minp, "max_pixels": maxp,
        "size": {"shortest_edge": minp, "longest_edge": maxp},
        "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_resize": True, "resample": 3,
        "processor_class": "Qwen3VLProcessor", "video_processor_type": "Qwen3VLVideoProcessor"})

    # Round trip: reload the directory and compare logits on a random clip-shaped input.
    back = qwen3vl_tiny.load_pretrained(a.out).eval()
    g = torch.Generator().manual_seed(0)
    grid = [(2, 4, 6)]
    pix = torch.randn(2 * 4 * 6, 1536, generator=g)
    vp, vs, ve = cfg["video_token_id"], cfg["vision_start_token_id"], cfg["vision_end_token_id"]
    ids = [tok.token_id("<|im_start|>")] + [vs] + [vp] * 6 + [ve] + [vs] + [vp] * 6 + [ve] + [im_end]
    ids_t = torch.tensor([ids])
    pos = torch.arange(len(ids)).view(1, 1, -1).expand(3, 1, -1)
    with torch.no_grad():
        l0 = model(ids_t, pos, pix, grid)
        l1 = back(ids_t, pos, pix, grid)
    rel = float((l0 - l1).abs().max() / l0.abs().max())
    n = sum(t.numel() for t in tensors.values())
    size = os.path.getsize(os.path.join(a.out, "model.safetensors"))
    print(f"exported step {state['step']} (stage {state['stage']}) to {a.out}: {n} parameters, "
          f"model.safetensors {size} bytes; reload rel. error {rel:.2e}")
    return 0 if rel < (1e-2 if a.bf16 else 1e-6) else 1


if __name__ == "__main__":
    sys.exit(main())
