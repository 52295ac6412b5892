#!/bin/sh
# End-to-end smoke test of the demo training loop at tiny size: gen_clips.py -> vigil-demo-export ->
# vgd.py check (Python patchify/tokenizer/prompt == the C pipeline's) -> train.py --self-test (the
# shared-prefix packing equals standalone prompts) -> train.py (a few steps, a checkpoint) ->
# train.py --resume (must equal an uninterrupted run) -> export_hf.py (reloads and compares).
# No weights are kept.
# usage: train_smoke.sh SOURCE_DIR PYTHON VIGIL_DEMO_EXPORT
# Exit 77 (skipped) without torch or ffmpeg.
set -eu
src=$1 py=$2 exporter=$3
demo=$src/tools/demo
"$py" -c 'import torch, numpy' 2>/dev/null || { echo "SKIP: $py has no torch/numpy"; exit 77; }
command -v ffmpeg >/dev/null 2>&1 || { echo "SKIP: no ffmpeg"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
export OMP_NUM_THREADS=1

"$py" "$demo/tokenizer.py" build "$tmp/tok.json"
"$py" "$demo/gen_clips.py" --out "$tmp/clips" --count 4 --seed 3 --max-duration 6 --max-size 320 \
    --box-scale 3
"$exporter" --gt "$tmp/clips/clips.json" --tokenizer "$tmp/tok.json" --out "$tmp/data" --patches
"$py" "$demo/vgd.py" check "$tmp/data" "$tmp/tok.json"
common="--data $tmp/data --tokenizer $tmp/tok.json --ckpt-dir $tmp/ck --val-frac 0.25 --batch 2
        --log-every 2 --save-every 2 --eval-every 4 --eval-clips 1 --eval-greedy 1 --warmup 2
        --crop-prob 0.5 --aux-weight 1 --decay-start 3 --decay-steps 2"
# shellcheck disable=SC2086
"$py" "$demo/train.py" $common --self-test
# shellcheck disable=SC2086
"$py" "$demo/train.py" $common --steps 4
# shellcheck disable=SC2086
"$py" "$demo/train.py" $common --steps 6 --resume
# The resumed run must equal an uninterrupted one bit for bit.
# shellcheck disable=SC2086
"$py" "$demo/train.py" $(echo "$common" | sed "s|$tmp/ck|$tmp/ck_straight|") --steps 6
"$py" - "$tmp/ck/last.pt" "$tmp/ck_straight/last.pt" <<'PY'
import sys, torch
a, b = (torch.load(p)["model"] for p in sys.argv[1:3])
d = max(float((a[k] - b[k]).abs().max()) for k in a)
print(f"resumed vs straight: max weight difference {d}")
sys.exit(0 if d == 0 else 1)
PY
"$py" "$demo/export_hf.py" "$tmp/ck/last.pt" --out "$tmp/model"
for f in config.json model.safetensors tokenizer.json generation_config.json \
    video_preprocessor_config.json; do
    [ -s "$tmp/model/$f" ] || { echo "missing $f"; exit 1; }
done
echo "PASS"
