#!/bin/sh
# README command 1, the main job: installs what it needs, builds, starts vigild, talks to it with the
# vigil client, and stops the daemon cleanly.
#
# With the bundled demo model (models/demo/, or VIGIL_DEMO_MODEL=DIR) it generates a few synthetic
# surveillance clips (tools/demo/gen_clips.py, real ffmpeg encodes), asks the demo questions through
# `vigil ask` (streamed answer, then the localized events) and prints the ground truth beside them.
# Without a demo model, vigild runs on a random-weight checkpoint that this script generates: it shows
# what the daemon loaded (`vigil info`) and how a video would be planned (`vigil plan`), and it asks
# nothing, because a random-weight model cannot answer.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
sh scripts/install-deps.sh
cmake -S . -B build/rel -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/rel -j "$(nproc)" --target vigild vigil vigil-model >/dev/null

bin="$root/build/rel"
work=$(mktemp -d /tmp/vigil-demo.XXXXXX)
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

demo=""
if [ -n "${VIGIL_DEMO_MODEL:-}" ]; then
    model=$(cd "$VIGIL_DEMO_MODEL" && pwd)
    demo=1
elif [ -f models/demo/config.json ]; then
    model="$root/models/demo"
    demo=1
else
    echo "== models/demo is not bundled yet: generating a random-weight checkpoint (it cannot answer) =="
    "$bin/tools/vigil-model" random --preset tiny --out "$work/model" >/dev/null
    model="$work/model"
fi

echo "== a sample clip (ffmpeg lavfi, 6 s, 320x240, 25 fps) =="
ffmpeg -nostdin -loglevel error -f lavfi -i "testsrc2=size=320x240:rate=25" -t 6 -pix_fmt yuv420p \
    -c:v libx264 "$work/sample.mp4"
"$bin/tools/vigil" plan --model "$model" "$work/sample.mp4"

echo "== starting vigild =="
mkdir -p "$work/run" "$work/state"
"$bin/daemon/vigild" --foreground --log-level notice --model "$model" --runtime-dir "$work/run" \
    --state-dir "$work/state" --set "media_roots=$work" &
pid=$!
export VIGIL_RUNTIME_DIR="$work/run"
i=0
until "$bin/tools/vigil" info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 100 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "demo: vigild did not come up" >&2
        exit 1
    fi
    sleep 0.1
done
"$bin/tools/vigil" info

if [ -n "$demo" ]; then
    echo "== three synthetic clips (tools/demo/gen_clips.py, seed 4242) =="
    /usr/bin/python3 tools/demo/gen_clips.py --out "$work/clips" --seed 4242 --count 3 \
        --max-duration 20 >/dev/null
    # One question about a colour that is there and one about a colour that is not, per clip.
    /usr/bin/python3 - "$work/clips/clips.json" >"$work/questions.txt" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
for c in meta["clips"]:
    qs = [q for q in c["qa"] if q["present"]][:1] + [q for q in c["qa"] if not q["present"]][:1]
    for q in qs:
        truth = (f"visible from {q['start']:.1f} to {q['end']:.1f} s" if q["present"]
                 else "not in the video")
        print(f"{c['path']}\t{q['question']}\t{truth}\t{c['duration']:.1f}")
PY
    while IFS="$(printf '\t')" read -r clip question truth duration; do
        echo
        echo "== $clip (${duration} s): $question   [truth: $truth] =="
        "$bin/tools/vigil" ask "$work/clips/$clip" "$question" </dev/null
    done <"$work/questions.txt"
fi

echo "== stopping vigild =="
kill -TERM "$pid"
wait "$pid"
pid=""
echo "vigild stopped cleanly."
echo
echo "With a real Qwen3-VL checkpoint (Hugging Face layout, e.g. Qwen3-VL-2B-Instruct):"
echo "  $bin/daemon/vigild --model /path/to/Qwen3-VL-2B-Instruct --runtime-dir /tmp/vigil/run \\"
echo "      --state-dir /tmp/vigil/state --set media_roots=\$HOME/videos"
echo "  VIGIL_RUNTIME_DIR=/tmp/vigil/run $bin/tools/vigil ask ~/videos/lot.mp4 \"When does the red car enter the lot?\""
