#!/bin/sh
# bench/pipeline.sh [BUILD_DIR]: decode + sample + resize throughput of vigil's media pipeline next
# to the ffmpeg CLI doing the same sampling and scaling, on a 10-minute 1080p30 H.264 clip generated
# once (testsrc2, x264 ultrafast: no B-frames) and cached, plus a 1-minute clip with B-frames (x264
# veryfast). Prints a markdown table (see docs/benchmarks.md, "Media pipeline"). Environment: VG_BENCH_CACHE (default /tmp/vigil-bench), VG_BENCH_REPEAT
# (runs per tool, alternating, best kept; default 2).
set -eu
BUILD=${1:-build}
CACHE=${VG_BENCH_CACHE:-/tmp/vigil-bench}
REPEAT=${VG_BENCH_REPEAT:-2}
CLIP=$CACHE/clip-1080p30-600s.mp4
BCLIP=$CACHE/clip-bframes-60s.mp4 # x264 veryfast: B-frames, most of them non-reference
BIN=$BUILD/bench/bench_pipeline

if [ ! -x "$BIN" ]; then
    echo "build it first: cmake --build $BUILD --target bench_pipeline" >&2
    exit 1
fi
mkdir -p "$CACHE"
if [ ! -s "$CLIP" ]; then
    echo "generating $CLIP (once; a few minutes)" >&2
    nice ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=600 \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -y "$CLIP.partial.mp4"
    mv "$CLIP.partial.mp4" "$CLIP"
fi

if [ ! -s "$BCLIP" ]; then
    echo "generating $BCLIP (once)" >&2
    nice ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=60 \
        -c:v libx264 -preset veryfast -pix_fmt yuv420p -y "$BCLIP.partial.mp4"
    mv "$BCLIP.partial.mp4" "$BCLIP"
fi

echo "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(ffmpeg -version | head -n 1)"
echo "ffmpeg: -i clip -filter_script:v (select='eq(n,i0)+...',scale=W:H:flags=bicubic)" \
     "-vsync passthrough -f rawvideo -pix_fmt rgb24 -y /dev/null"
echo
"$BIN" --clip "$CLIP" --repeat "$REPEAT" --header
"$BIN" --clip "$CLIP" --repeat "$REPEAT" --resized-height 448 --resized-width 448
"$BIN" --clip "$BCLIP" --repeat "$REPEAT"
