#!/bin/sh
# Runs every libFuzzer harness in tests/fuzz for as long as asked, one after the other, under
# nice -n 19 (issue #13). Usage:
#   scripts/fuzz.sh [SECONDS] [HARNESS...]    default 60 s each, every harness
# Builds build/fuzz with clang (-DVG_FUZZ=ON: fuzzer + ASan + UBSan). Each harness starts from its
# committed seed corpus (tests/fuzz/corpus/NAME, never written) and keeps what it finds in
# build/fuzz/corpus/NAME, so later runs continue where earlier ones stopped. A finding stops the
# script with libFuzzer's report and the crashing input (build/fuzz/findings/). At the end one line
# per harness: executions, coverage (libFuzzer's cov: edges, ft: features) and corpus size.
# Environment: VG_JOBS (build parallelism, default: number of CPUs), VG_FUZZ_JOBS (harnesses run
# at once, default 1).
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
all="fuzz_proto fuzz_config fuzz_journal fuzz_checkpoint fuzz_tokenizer fuzz_answer fuzz_media fuzz_gguf
     fuzz_http_chat"
harnesses=${*:-$all}
jobs=${VG_JOBS:-$(nproc)}

command -v clang >/dev/null 2>&1 || { echo "fuzz.sh: clang is missing (scripts/install-deps.sh)" >&2; exit 1; }
CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVG_FUZZ=ON >/dev/null
cmake --build build/fuzz -j "$jobs" --target vg_fuzzers
mkdir -p build/fuzz/findings build/fuzz/logs
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

summary=""
for h in $harnesses; do
    bin=build/fuzz/tests/fuzz/$h
    [ -x "$bin" ] || { echo "fuzz.sh: no harness $h" >&2; exit 1; }
    mkdir -p "build/fuzz/corpus/$h"
    log=build/fuzz/logs/$h.log
    echo "== $h: $secs s"
    if ! nice -n 19 "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=3072 \
        -print_final_stats=1 -artifact_prefix=build/fuzz/findings/"$h"- \
        "build/fuzz/corpus/$h" "tests/fuzz/corpus/$h" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $h found a problem; the input is in build/fuzz/findings/" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -E '^#[0-9]+' "$log" | grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9a-zA-Z]*' | tail -n 1)
    line="$h: $execs executions in $secs s, $cov"
    echo "$line"
    summary="$summary$line
"
done
echo "== summary"
printf '%s' "$summary"
