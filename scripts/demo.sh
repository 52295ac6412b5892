#!/bin/sh
# README command 1, the main job: installs what it needs, builds, starts vigild, talks to it with the
# vigil client, and stops the daemon cleanly.
#
# Until the bundled demo model (models/demo/) lands, vigild runs on a random-weight checkpoint that this
# script generates: it shows what the daemon loaded (`vigil info`) and how a video would be planned
# (`vigil plan`), and it does not ask questions, because a random-weight model cannot answer them.
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

if [ -f models/demo/config.json ]; then
    model="$root/models/demo"
else
    echo "== models/demo is not bundled yet: generating a random-weight checkpoint (it cannot answer) =="
    "$bin/tools/vigil-model" random --preset tiny --out "$work/model" >/dev/null
    model="$work/model"
fi

echo "== a sample clip (ffmpeg lavfi, 6 s, 320x240, 25 fps) =="
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=320x240:rate=25" -t 6 -pix_fmt yuv420p \
    -c:v libx264 "$work/sample.mp4"
"$bin/tools/vigil" plan "$work/sample.mp4"

echo "== starting vigild =="
mkdir -p "$work/run" "$work/state"
"$bin/daemon/vigild" --foreground --model "$model" --runtime-dir "$work/run" \
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

echo "== stopping vigild =="
kill -TERM "$pid"
wait "$pid"
pid=""
echo "vigild stopped cleanly."
