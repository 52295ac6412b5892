#!/bin/sh
# bench/peers/setup.sh: everything the peer benchmark needs, made once and reused.
#
#   1. llama.cpp built from a given source tree (CPU only, Release, -march=native, OpenMP):
#      llama-bench, llama-batched-bench, llama-quantize and llama-mtmd-cli. An existing build with them
#      is reused as it is.
#   2. a random Qwen3-VL-2B checkpoint (`vigil-model random --preset 2b`, BF16 safetensors with the
#      Qwen tokenizer from ../shared/golden/tiny1), unless MODEL_DIR already holds one;
#   3. the same checkpoint as GGUF through llama.cpp's own convert_hf_to_gguf.py (run unmodified by
#      run_convert.py): the LLM in f16 and in q8_0, and the vision tower (mmproj) in f16;
#   4. a 448x448 test image for llama-mtmd-cli (ffmpeg's testsrc2).
#
# Getting llama.cpp: it is not a Debian package. The benchmark was written against upstream commit
# f53577432541bb9edc1588c4ef45c66bf07e4468 (the GitHub mirror CrazyForks/llama.cpp holds it). Give
# either an extracted tree (LLAMA_SRC) or a git directory (LLAMA_GIT_DIR, exported at LLAMA_COMMIT
# into LLAMA_SRC; blobs a partial snapshot lacks are skipped, the build needs none of them):
#   git clone https://github.com/ggml-org/llama.cpp && git -C llama.cpp checkout f5357743
#
# Environment (defaults in brackets):
#   PEERS_DIR     where checkpoints, GGUFs and the image go [$HOME/.cache/vigil/peers]
#   VIGIL_BUILD   vigil's build directory with tools/vigil-model [build/rel]
#   MODEL_DIR     the random 2B checkpoint [$PEERS_DIR/qwen3vl-2b-random]
#   LLAMA_SRC     llama.cpp source tree (required unless LLAMA_BIN has the binaries)
#   LLAMA_BUILD   its build directory [$LLAMA_SRC/build]; LLAMA_BIN [$LLAMA_BUILD/bin]
#   LLAMA_GIT_DIR, LLAMA_COMMIT [f53577432541bb9edc1588c4ef45c66bf07e4468]
#   SHARED_DIR    the project's shared folder, for the tokenizer [../shared next to the repo]
#   INSTALL_APT=1 install the Debian packages the converter needs (scripts/install-deps.sh --peers)
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/vigil/peers}
VIGIL_BUILD=${VIGIL_BUILD:-$REPO/build/rel}
MODEL_DIR=${MODEL_DIR:-$PEERS_DIR/qwen3vl-2b-random}
LLAMA_COMMIT=${LLAMA_COMMIT:-f53577432541bb9edc1588c4ef45c66bf07e4468}
SHARED_DIR=${SHARED_DIR:-$REPO/../shared}
PY=${PY:-/usr/bin/python3}
GGUF=$PEERS_DIR/gguf
mkdir -p "$PEERS_DIR" "$GGUF"
log() { echo "setup: $*" >&2; }

if [ "${INSTALL_APT:-0}" = 1 ]; then
    sh "$REPO/scripts/install-deps.sh" --peers
fi

# -- 1. llama.cpp ------------------------------------------------------------------------------
if [ -n "${LLAMA_GIT_DIR:-}" ] && [ -n "${LLAMA_SRC:-}" ] && [ ! -f "$LLAMA_SRC/CMakeLists.txt" ]; then
    log "exporting llama.cpp $LLAMA_COMMIT from $LLAMA_GIT_DIR into $LLAMA_SRC"
    mkdir -p "$LLAMA_SRC"
    git --git-dir="$LLAMA_GIT_DIR" ls-tree -r "$LLAMA_COMMIT" | while read -r mode type obj path; do
        [ "$type" = blob ] || continue
        git --git-dir="$LLAMA_GIT_DIR" cat-file -e "$obj" 2>/dev/null || continue
        mkdir -p "$LLAMA_SRC/$(dirname "$path")"
        git --git-dir="$LLAMA_GIT_DIR" cat-file blob "$obj" >"$LLAMA_SRC/$path"
        if [ "$mode" = 100755 ]; then chmod +x "$LLAMA_SRC/$path"; fi
    done
fi
LLAMA_BUILD=${LLAMA_BUILD:-${LLAMA_SRC:+$LLAMA_SRC/build}}
LLAMA_BIN=${LLAMA_BIN:-${LLAMA_BUILD:+$LLAMA_BUILD/bin}}
have_llama() {
    [ -n "${LLAMA_BIN:-}" ] && [ -x "$LLAMA_BIN/llama-bench" ] && [ -x "$LLAMA_BIN/llama-batched-bench" ] &&
        [ -x "$LLAMA_BIN/llama-mtmd-cli" ] && [ -x "$LLAMA_BIN/llama-quantize" ]
}
if have_llama; then
    log "llama.cpp binaries found in $LLAMA_BIN (reused)"
else
    [ -n "${LLAMA_SRC:-}" ] && [ -f "$LLAMA_SRC/CMakeLists.txt" ] || {
        echo "setup: set LLAMA_SRC to a llama.cpp source tree (or LLAMA_BIN to its built bin/)" >&2
        exit 2
    }
    log "building llama.cpp in $LLAMA_BUILD (about 7 min on 2 cores)"
    # On a CPU with AMX, -march=native switches on ggml's AMX matrix product, which crashes for
    # q8_0 batches above one token (ggml-org/llama.cpp#20824, seen at f5357743): the peer is built
    # without AMX, i.e. on its AVX-512 (VNNI, BF16) kernels with repacked weights -- the path it
    # takes on Zen 4/5 -- and run.sh then measures q8_0 like f16 (llama-bench, cache filled at once).
    noamx=""
    if grep -qw amx_int8 /proc/cpuinfo; then
        noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    fi
    cmake -S "$LLAMA_SRC" -B "$LLAMA_BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" \
        -DGGML_OPENMP=ON -DGGML_BLAS=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >"$PEERS_DIR/llama-cmake.log" 2>&1
    nice -n 5 cmake --build "$LLAMA_BUILD" -j"$(nproc)" \
        --target llama-bench llama-batched-bench llama-quantize llama-mtmd-cli >"$PEERS_DIR/llama-build.log" 2>&1 || {
        echo "setup: llama.cpp build failed, see $PEERS_DIR/llama-build.log" >&2
        exit 1
    }
    have_llama || { echo "setup: the build did not produce the binaries in $LLAMA_BIN" >&2; exit 1; }
fi

# -- 2. the checkpoint -------------------------------------------------------------------------
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
    log "writing a random 2B checkpoint to $MODEL_DIR"
    "$VIGIL_BUILD/tools/vigil-model" random --preset 2b --out "$MODEL_DIR" \
        --tokenizer "$SHARED_DIR/golden/tiny1/tokenizer.json"
fi

# -- 3. GGUF through llama.cpp's converter ------------------------------------------------------
# Its input folder: the checkpoint's files plus preprocessor_config.json, which the mmproj
# conversion reads (image_mean/std); the checkpoint ships the video processor's file only.
HF_IN=$PEERS_DIR/hf-in
mkdir -p "$HF_IN"
for f in config.json model.safetensors tokenizer.json generation_config.json \
    video_preprocessor_config.json; do
    [ -e "$MODEL_DIR/$f" ] && ln -sf "$MODEL_DIR/$f" "$HF_IN/$f"
done
"$PY" - "$HF_IN" <<'EOF'
import json, os, sys
d = sys.argv[1]
v = json.load(open(os.path.join(d, "video_preprocessor_config.json")))
p = {k: v[k] for k in ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std")}
p.update({"size": {"longest_edge": 16777216, "shortest_edge": 65536},
          "processor_class": "Qwen3VLProcessor", "image_processor_type": "Qwen2VLImageProcessor"})
json.dump(p, open(os.path.join(d, "preprocessor_config.json"), "w"), indent=2)
EOF
convert() { # OUT_NAME converter-args...
    out=$1
    shift
    if [ ! -s "$GGUF/$out" ]; then
        [ -n "${LLAMA_SRC:-}" ] && [ -f "$LLAMA_SRC/convert_hf_to_gguf.py" ] || {
            echo "setup: LLAMA_SRC (with convert_hf_to_gguf.py) is needed to convert" >&2
            exit 2
        }
        log "converting $out"
        nice -n 5 "$PY" "$REPO/bench/peers/run_convert.py" "$LLAMA_SRC" "$REPO" -- "$HF_IN" "$@" \
            --outfile "$GGUF/$out.tmp" >"$PEERS_DIR/convert-$out.log" 2>&1 || {
            echo "setup: conversion failed, see $PEERS_DIR/convert-$out.log" >&2
            exit 1
        }
        grep "tokenizer.ggml.pre" "$PEERS_DIR/convert-$out.log" >&2 || true
        mv "$GGUF/$out.tmp" "$GGUF/$out"
    fi
}
convert qwen3vl2b-f16.gguf --outtype f16
convert qwen3vl2b-q8_0.gguf --outtype q8_0
convert mmproj-qwen3vl2b-f16.gguf --mmproj --outtype f16

# -- 4. the test image ---------------------------------------------------------------------------
[ -s "$PEERS_DIR/img448.png" ] ||
    ffmpeg -nostdin -loglevel error -f lavfi -i testsrc2=size=448x448 -frames:v 1 -y \
        "$PEERS_DIR/img448.png"

cat >"$PEERS_DIR/setup.env" <<EOF
MODEL_DIR=$MODEL_DIR
LLAMA_BIN=$LLAMA_BIN
GGUF=$GGUF
IMG=$PEERS_DIR/img448.png
EOF
log "ready: $PEERS_DIR/setup.env"
