#!/bin/sh
# Parity of the C engine (model/) with the PyTorch model (tools/demo/qwen3vl_tiny.py) on inputs made
# by vigil's own pipeline: one generated clip -> vigil-demo-export -> make_case.py (PyTorch reference
# outputs in the golden layout) -> vigil-model golden (every intermediate, logits <= 1e-4).
# Uses models/demo when it holds weights, else an untrained model of the same shape.
# usage: parity.sh SOURCE_DIR PYTHON VIGIL_DEMO_EXPORT VIGIL_MODEL
# Exit 77 (skipped) without torch or ffmpeg.
set -eu
src=$1 py=$2 exporter=$3 engine=$4
demo=$src/tools/demo
"$py" -c 'import torch, numpy' 2>/dev/null || { echo "SKIP: $py has no torch/numpy"; exit 77; }
command -v ffmpeg >/dev/null 2>&1 || { echo "SKIP: no ffmpeg"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
export OMP_NUM_THREADS=1

model=$src/models/demo
if [ ! -f "$model/model.safetensors" ]; then
    "$py" "$demo/export_hf.py" --random 1 --out "$tmp/model"
    model=$tmp/model
fi
"$py" "$demo/gen_clips.py" --out "$tmp/clips" --count 1 --seed 7 --max-duration 6 --max-size 320
"$exporter" --gt "$tmp/clips/clips.json" --tokenizer "$model/tokenizer.json" --out "$tmp/data" \
    --min-pixels "$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['min_pixels'])" \
        "$model/video_preprocessor_config.json")" \
    --max-pixels "$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['max_pixels'])" \
        "$model/video_preprocessor_config.json")"
"$py" "$demo/make_case.py" --model "$model" --vgd "$tmp/data/00000.vgd" --out "$tmp/case"
"$engine" golden "$tmp/case"
