#!/bin/sh
# Generates the demo model's curriculum data with fixed seeds and exports it through vigil's own
# pipeline (tools/demo/README.md). Resumable: a stage whose clips.json / index.json exists is not
# redone, and gen_clips.py --skip-existing keeps clips already encoded.
#
# usage: tools/demo/make_data.sh WORK_DIR [JOBS]
#   WORK_DIR/tokenizer.json        the demo tokenizer (tokenizer.py build)
#   WORK_DIR/clips/<stage>/        encoded clips + clips.json + eval.jsonl (gen_clips.py)
#   WORK_DIR/data/<stage>/         .vgd files + index.json (vigil-demo-export)
# Environment: VIGIL_DEMO_EXPORT (default build/tools/demo/vigil-demo-export), PYTHON
# (default /usr/bin/python3, Debian's python with numpy).
set -eu
work=${1:?usage: make_data.sh WORK_DIR [JOBS]}
jobs=${2:-1}
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-/usr/bin/python3}
exporter=${VIGIL_DEMO_EXPORT:-build/tools/demo/vigil-demo-export}
[ -x "$exporter" ] || { echo "make_data.sh: $exporter not built (set VIGIL_DEMO_EXPORT)" >&2; exit 1; }

# The frame budget of the demo model (per frame, smart_resize factor 32): 160x120 -> 64x96,
# 1280x720 -> 64x128, portrait 720x1280 -> 128x64. export_hf.py copies it into
# video_preprocessor_config.json from the checkpoint.
MIN_PIXELS=4096
MAX_PIXELS=9216

mkdir -p "$work/clips" "$work/data"
tok=$work/tokenizer.json
[ -f "$tok" ] || "$py" "$here/tokenizer.py" build "$tok"

stage() {
    name=$1 seed=$2 count=$3
    shift 3
    if [ ! -f "$work/clips/$name/clips.json" ]; then
        nice -n 19 "$py" "$here/gen_clips.py" --out "$work/clips/$name" --seed "$seed" \
            --count "$count" --jobs "$jobs" --skip-existing "$@"
    fi
    if [ ! -f "$work/data/$name/index.json" ]; then
        nice -n 19 "$exporter" --gt "$work/clips/$name/clips.json" --tokenizer "$tok" \
            --out "$work/data/$name" --min-pixels "$MIN_PIXELS" --max-pixels "$MAX_PIXELS"
        # Guard: prompts == Python's, box visibility == truth, 20 frames == the reference decode.
        if ! nice -n 19 "$py" "$here/vgd.py" check "$work/data/$name" "$tok" 20; then
            mv "$work/data/$name/index.json" "$work/data/$name/index.json.failed-check"
            echo "make_data.sh: $name failed vgd.py check (see above); fix the pipeline first" >&2
            exit 1
        fi
    fi
    echo "stage $name ready"
}

# Curriculum (train.py takes the data directories in this order): salience first (boxes 3x, then
# 2x, 1.4x, 1x their real size on short clips), then longer clips, then the full distribution.
stage s0_box3x   101  600 --max-duration 10 --box-scale 3.0 --max-size 640
stage s1_box2x   102  600 --max-duration 10 --box-scale 2.0 --max-size 640
stage s2_box1.4x 103  600 --max-duration 10 --box-scale 1.4 --max-size 640
stage s3_box1x   104  800 --max-duration 10 --box-scale 1.0
stage s4_20s     105  800 --max-duration 20 --box-scale 1.0
stage s5_full    106  700
# More clips of the full distribution at up to 640 px (a quarter of the encoding time; the model
# sees about 96x64 anyway): trained together with s5_full (train.py --data s5_full+s6_640), since
# the first runs over-fitted 700 full-size clips (teacher-forced copy 0.6 on them, 0.05 held out).
stage s6_640     107 1500 --max-size 640
# Held out (another seed, the full distribution): never trained on; for train.py --eval-only and
# `vigil eval WORK_DIR/clips/heldout/eval.jsonl`.
stage heldout   9001  100
