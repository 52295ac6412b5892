#!/bin/sh
# The whole test suite, as a new user or CI runs it (README command 2):
#  1. installs the Debian packages it needs;
#  2. checks the formatting of every C file;
#  3. builds RelWithDebInfo with warnings as errors and runs every test; then the unit and model
#     tests again with the engine's kernels forced to each lower instruction-set level the CPU has
#     (VG_ISA=avx2, VG_ISA=scalar: docs/weights.md), about a minute each;
#  4. builds with AddressSanitizer + UndefinedBehaviorSanitizer (warnings as errors) and runs every test
#     not labelled `slow`; then builds the libFuzzer harnesses with clang (build/fuzz) and runs each
#     for VG_FUZZ_SECONDS (default 30; two at a time, about 2 minutes in all).
# Environment: VG_JOBS (build parallelism, default: number of CPUs), VG_SKIP_ASAN=1 to skip step 4,
# VG_FUZZ_SECONDS (seconds per fuzz harness; 0 skips the fuzzing).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
sh scripts/check-format.sh

jobs=${VG_JOBS:-$(nproc)}
export CTEST_OUTPUT_ON_FAILURE=1

echo "== RelWithDebInfo build =="
cmake -S . -B build/rel -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVG_WERROR=ON >/dev/null
cmake --build build/rel -j "$jobs"
echo "== RelWithDebInfo tests (all) =="
(cd build/rel && ctest --timeout 900)
for isa in avx2 scalar; do
    echo "== RelWithDebInfo unit and model tests, kernels forced to VG_ISA=$isa =="
    (cd build/rel && VG_ISA=$isa ctest --timeout 900 -L "unit|model" -j "$jobs")
done

if [ "${VG_SKIP_ASAN:-0}" != "1" ]; then
    echo "== ASan+UBSan build =="
    cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVG_SANITIZE=ON -DVG_WERROR=ON >/dev/null
    cmake --build build/asan -j "$jobs"
    echo "== ASan+UBSan tests (all but slow) =="
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    (cd build/asan && ctest --timeout 900 -LE slow)
    if [ "${VG_FUZZ_SECONDS:-30}" != "0" ]; then
        echo "== libFuzzer harnesses (clang, ASan+UBSan), ${VG_FUZZ_SECONDS:-30} s each =="
        CC=clang cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVG_FUZZ=ON \
            -DVG_WERROR=ON -DVG_FUZZ_SECONDS="${VG_FUZZ_SECONDS:-30}" >/dev/null
        cmake --build build/fuzz -j "$jobs" --target vg_fuzzers
        (cd build/fuzz && ctest -L fuzz -j 2)
    fi
fi
