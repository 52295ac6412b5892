#!/bin/sh
# bench/peers/run.sh [short|full]: vigil (f32, bf16, q8_0) beside PyTorch bf16 and llama.cpp (f16,
# q8_0) on the Qwen3-VL-2B shape, on this machine, in one run, and one table with the ceilings and
# the acceptance ratios of issue #11 (bench/peers/summarize.py). See docs/benchmarks.md, "Peers".
#
#   short  one pass, 1 and 2 threads, one repetition per measurement (about 20 min on 2 cores)
#   full   two passes in opposite orders (medians), 3 repetitions, vigil's full bench (vision x3,
#          prefill 1k and 4k, decode after 1k and 8k) (about 60 min on 2 cores)
#
# Run it on a quiet machine: every step logs the 1-minute load average before and after, and the
# table prints their range. Within a thread count the engines alternate (vigil q8_0, llama.cpp
# q8_0, vigil bf16, llama.cpp f16, PyTorch, llama.cpp vision, vigil f32), so slow drift of the host
# hits them alike. One large process at a time (vigil f32 peaks at about 8.6 GiB).
#
# Environment: everything setup.sh takes (PEERS_DIR, VIGIL_BUILD, LLAMA_SRC or LLAMA_BIN, ...),
# plus THREADS ["1 2"], VIGIL_TYPES ["q8_0 bf16 f32"], OUT [$PEERS_DIR/run-DATE-MODE].
set -eu

MODE=${1:-short}
case "$MODE" in short | full) ;; *)
    echo "usage: bench/peers/run.sh [short|full]" >&2
    exit 2
    ;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/vigil/peers}
VIGIL_BUILD=${VIGIL_BUILD:-$REPO/build/rel}
THREADS=${THREADS:-"1 2"}
VIGIL_TYPES=${VIGIL_TYPES:-"q8_0 bf16 f32"}
PY=${PY:-/usr/bin/python3}
export PEERS_DIR VIGIL_BUILD PY

sh "$HERE/setup.sh"
# shellcheck disable=SC1091
. "$PEERS_DIR/setup.env"
OUT=${OUT:-$PEERS_DIR/run-$(date -u +%Y%m%dT%H%M%SZ)-$MODE}
mkdir -p "$OUT"
{
    echo "mode=$MODE"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "family_model=$(grep -m1 '^cpu family' /proc/cpuinfo | sed 's/.*: //')/$(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | sed 's/.*: //')"
    echo "cpus=$(nproc)"
    echo "flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|avx512_vnni|avx_vnni|amx_bf16|amx_int8)$' | tr '\n' ' ')"
    echo "mem=$(free -g | awk '/^Mem:/ {print $2}') GiB"
    echo "vigil=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "torch=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
} >"$OUT/machine.txt"

if [ "$MODE" = short ]; then
    REPS=1 QUICK=--quick IMAGES=3
else
    REPS=3 QUICK= IMAGES=5
fi
MALLOC="MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824"

# step NAME THREADS command...: stdout/stderr to NAME.out/NAME.err, /usr/bin/time -v to NAME.time,
# the 1-minute load average before and after to NAME.load
step() {
    name=$1 t=$2
    shift 2
    echo "$(date -u +%H:%M:%S) $name" >&2
    printf '%s ' "$(cut -d' ' -f1 /proc/loadavg)" >"$OUT/$name.load"
    env OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" MKL_NUM_THREADS="$t" \
        /usr/bin/time -v -o "$OUT/$name.time" "$@" </dev/null >"$OUT/$name.out" 2>"$OUT/$name.err" ||
        echo "  $name failed (rc $?), see $OUT/$name.err" >&2
    cut -d' ' -f1 /proc/loadavg >>"$OUT/$name.load"
}
vigil() { # TYPE T PASS
    step "vigil-$1-t$2-p$3" "$2" "$VIGIL_BUILD/tools/vigil-model" bench "$MODEL_DIR" --threads "$2" \
        --weights "$1" $QUICK
}
# Whether this llama.cpp build runs ggml's AMX q8_0 path (see below): the CPU has AMX and the build
# was not made with -mno-amx-int8 (setup.sh makes it without on such a CPU).
llama_amx() {
    grep -qw amx_int8 /proc/cpuinfo || return 1
    cache="$(dirname "$LLAMA_BIN")/CMakeCache.txt"
    ! grep -q -- "-mno-amx-int8" "$cache" 2>/dev/null
}
llama() { # QUANT T PASS: prefill of 1024 tokens; 32 decode steps after 1024 (weights read in)
    if [ "$1" = f16 ] || ! llama_amx; then
        step "llama-$1-pp-t$2-p$3" "$2" "$LLAMA_BIN/llama-bench" -m "$GGUF/qwen3vl2b-$1.gguf" \
            -t "$2" -p 1024 -n 0 -r "$REPS" -o json
        step "llama-$1-tg-t$2-p$3" "$2" "$LLAMA_BIN/llama-bench" -m "$GGUF/qwen3vl2b-$1.gguf" \
            -t "$2" -p 0 -n 32 -d 1024 -r "$REPS" -mmp 0 -o json
        return
    fi
    # q8_0: on a CPU with AMX llama.cpp puts q8_0 weights in its AMX buffer, and its AMX matrix
    # product crashes for any batch above one token (upstream issue ggml-org/llama.cpp#20824, seen
    # at f5357743 on a Sapphire-Rapids-class host). Decode (one token at a time) runs on that
    # default path, but its KV cache can then only be filled one token per step: with 2 threads
    # on a busy machine that took over 20 minutes for 1024 tokens, so the default path is
    # measured at depth 0 (favouring llama.cpp by the few per cent a 1k-token f16 cache costs;
    # LLAMA_Q8_DEPTH=1024 fills it token by token instead). Prefill, and decode after the
    # 1024-token prompt, also run with weight repacking off (-nr: neither the AMX nor the
    # repacked layouts) in llama-batched-bench.
    depth=${LLAMA_Q8_DEPTH:-0}
    step "llama-q8_0-tg-t$2-p$3" "$2" "$LLAMA_BIN/llama-bench" -m "$GGUF/qwen3vl2b-q8_0.gguf" \
        -t "$2" -p 0 -n 32 -d "$depth" -ub 1 -r "$REPS" -mmp 0 -o json
    npp=1024
    i=1
    while [ $i -lt "$REPS" ]; do
        npp="$npp,1024"
        i=$((i + 1))
    done
    step "llama-q8_0-ppnr-t$2-p$3" "$2" "$LLAMA_BIN/llama-batched-bench" \
        -m "$GGUF/qwen3vl2b-q8_0.gguf" -nr -npp "$npp" -ntg 32 -npl 1 -c 1100 -t "$2" \
        --output-format jsonl
}
torch() { # T PASS
    # shellcheck disable=SC2086
    step "torch-t$1-p$2" "$1" env $MALLOC VIGIL_DEMO_DIR="$REPO/tools/demo" \
        "$PY" "$HERE/bench_torch.py" "$MODEL_DIR" --threads "$1" $QUICK --out "$OUT/torch-t$1-p$2.json"
}
mtmd() { # T PASS: IMAGES copies of one 448x448 image; the first is the warm-up
    imgs=""
    i=0
    while [ $i -lt $IMAGES ]; do
        imgs="$imgs --image $IMG"
        i=$((i + 1))
    done
    # shellcheck disable=SC2086
    # the f16 LLM takes the image tokens (the q8_0 one would hit the AMX crash above)
    step "mtmd-t$1-p$2" "$1" "$LLAMA_BIN/llama-mtmd-cli" -m "$GGUF/qwen3vl2b-f16.gguf" \
        --mmproj "$GGUF/mmproj-qwen3vl2b-f16.gguf" --chat-template chatml $imgs \
        -p "Describe the images." -n 2 -t "$1" -c 4096 --temp 0
}
has_type() { case " $VIGIL_TYPES " in *" $1 "*) return 0 ;; esac; return 1; }

pass() { # PASS ORDER(forward|reverse)
    p=$1
    if [ "$2" = forward ]; then list="$THREADS"; else list=$(echo "$THREADS" | tr ' ' '\n' | sort -rn | tr '\n' ' '); fi
    for t in $list; do
        if [ "$2" = forward ]; then
            has_type q8_0 && vigil q8_0 "$t" "$p"
            llama q8_0 "$t" "$p"
            has_type bf16 && vigil bf16 "$t" "$p"
            llama f16 "$t" "$p"
            torch "$t" "$p"
            mtmd "$t" "$p"
            has_type f32 && vigil f32 "$t" "$p"
        else
            has_type f32 && vigil f32 "$t" "$p"
            mtmd "$t" "$p"
            torch "$t" "$p"
            llama f16 "$t" "$p"
            has_type bf16 && vigil bf16 "$t" "$p"
            llama q8_0 "$t" "$p"
            has_type q8_0 && vigil q8_0 "$t" "$p"
        fi
    done
}

pass 1 forward
[ "$MODE" = full ] && pass 2 reverse
"$PY" "$HERE/summarize.py" "$OUT" | tee "$OUT/table.md"
echo "logs and table: $OUT" >&2
