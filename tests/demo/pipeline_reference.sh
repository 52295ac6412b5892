#!/bin/sh
# The demo's training data must be what the reference pipeline gives: generated clips exported by
# vigil-demo-export (vigil's decode, sampling, resize) are compared with the ffmpeg CLI's decode of
# the same frames resized by torch's antialiased bicubic (vgd.py check ... N_DECODE), plus the box
# visibility of every sampled frame against the ground truth. The seed gives widths 188, 284, 148
# and 196: 148 (h264) is a width whose RGB rows swscale's SIMD tail overruns when the destination
# stride is only FFALIGN(width*3, 64).
# usage: pipeline_reference.sh SOURCE_DIR PYTHON VIGIL_DEMO_EXPORT
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
"$exporter" --gt "$tmp/clips/clips.json" --tokenizer "$tmp/tok.json" --out "$tmp/data"
"$py" "$demo/vgd.py" check "$tmp/data" "$tmp/tok.json" 4
