#!/bin/sh
# Decode and prefill on GGUF files, vigil beside llama.cpp, in one run on this machine (issue #14).
# For each TYPE: `vigil-model quantize MODEL_DIR --type TYPE` writes the pair (once, into WORK),
# then at each thread count vigil (`vigil-model bench DIR --quick --no-vision`: prefill of 1,024
# tokens, decode after 1,024) and llama.cpp (`llama-bench -p 1024 -n 0`, then `-p 0 -n 32 -d 1024`:
# decode at the same context, on the same text file)
# run one after the other. A peer that fails prints its exit status instead of a number.
#
# Usage: sh bench/peers/gguf_bench.sh MODEL_DIR [BUILD_DIR] [TYPE...]
#   (default types q8_0 q4_k_m; THREADS default "1 2"; LLAMA_BIN default
#   /work/cache/llama.cpp/build/bin; WORK default /tmp/vigil-gguf-bench).
#   For the 2B shape: vigil-model random --preset 2b --out DIR, then this script on DIR.
#   VG_GGUF_BLOCKS=0 in the environment benchmarks vigil with the K-quants requantized to Q8_0.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODEL=${1:?usage: gguf_bench.sh MODEL_DIR [BUILD_DIR] [TYPE...]}
BUILD=${2:-$ROOT/build/rel}
[ $# -ge 2 ] && shift 2 || shift $#
TYPES=${*:-q8_0 q4_k_m}
THREADS=${THREADS:-1 2}
LLAMA_BIN=${LLAMA_BIN:-/work/cache/llama.cpp/build/bin}
WORK=${WORK:-/tmp/vigil-gguf-bench}
name=$(basename "$MODEL")
# the avg_ts column of llama-bench's CSV (found by its header), first data row
avg_ts() {
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /avg_ts/) c = i; next }
             c && NR == 2 { gsub(/"/, "", $c); print $c }'
}
mkdir -p "$WORK"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cpus; $(date -u)"
echo "| file | threads | vigil prefill tok/s | llama.cpp prefill tok/s | vigil decode tok/s | llama.cpp decode tok/s | vigil weights GiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for t in $TYPES; do
    dir="$WORK/$name-$t"
    T=$(echo "$t" | tr a-z A-Z)
    [ -f "$dir/$name-$T.gguf" ] || "$BUILD/tools/vigil-model" quantize "$MODEL" --type "$t" --out "$dir" >/dev/null
    for n in $THREADS; do
        v=$("$BUILD/tools/vigil-model" bench "$dir" --quick --no-vision --threads "$n" 2>/dev/null || true)
        vp=$(echo "$v" | sed -n 's/^ *prefill 1024 tokens, tok\/s *\([0-9.]*\).*/\1/p' | head -1)
        vd=$(echo "$v" | sed -n 's/^ *decode after 1024, tok\/s (in memory) *\([0-9.]*\).*/\1/p' | head -1)
        vm=$(echo "$v" | sed -n "s/^model .*parameters, \([0-9.]*\) GiB of .*/\1/p" | head -1)
        # prefill of 1,024 tokens; decode of 32 tokens after a 1,024-token context (-d), as vigil's
        l=$("$LLAMA_BIN/llama-bench" -m "$dir/$name-$T.gguf" -p 1024 -n 0 -t "$n" -r 2 -o csv 2>/dev/null) &&
            l2=$("$LLAMA_BIN/llama-bench" -m "$dir/$name-$T.gguf" -p 0 -n 32 -d 1024 -t "$n" -r 2 -o csv 2>/dev/null) &&
            rc=0 || rc=$?
        if [ $rc -eq 0 ]; then
            lp=$(echo "$l" | avg_ts)
            ld=$(echo "$l2" | avg_ts)
        else
            lp="exit $rc"
            ld="exit $rc"
        fi
        echo "| $name $T | $n | ${vp:-?} | ${lp:-?} | ${vd:-?} | ${ld:-?} | ${vm:-?} |"
    done
done
