#!/bin/sh
# Regenerates the GGUF fixtures with llama.cpp's own converter and quantizer (unmodified source at
# $LLAMA_CPP, default /work/cache/llama.cpp, with llama-quantize built in $LLAMA_CPP/build/bin):
#
# (through tests/gguf/pystub/convert_hf_to_gguf_wrapper.py, which only adds the qwen2 pre-tokenizer
# answer for small Qwen2-style test vocabularies the converter cannot fingerprint):
#
#   tests/gguf/fixtures/demo/  (committed): models/demo as the qwen3vl text GGUF in f32, f16, bf16,
#       q8_0 (convert_hf_to_gguf.py --outtype) and q4_0, q4_k_m, q5_k_m, q6_k (llama-quantize from
#       the f32 file), its mmproj in f32 and f16, and per file the FNV-1a 64 hash of gguf-py's
#       reference dequantization (float32) of every tensor (NAME.deq, read by test_gguf_model);
#   $TINY_OUT (default BUILD_DIR/gguf-tiny1, not committed: its 151936-token embedding makes 27-86 MB
#       files): ../shared/golden/tiny1 the same way, for `vigil-model golden` runs (docs/gguf.md).
#
# Needs Debian's python3-numpy and python3-torch, and vigil-model built (the stand-in
# `transformers` of tests/gguf/pystub runs vigil's tokenizer through it; Debian has no
# transformers). Usage: sh tests/gguf/make_fixtures.sh [BUILD_DIR]   (default build/rel)
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build/rel}
LLAMA_CPP=${LLAMA_CPP:-/work/cache/llama.cpp}
SHARED=${VG_SHARED_DIR:-$ROOT/../shared}
TINY_OUT=${TINY_OUT:-$BUILD/gguf-tiny1}
PY=/usr/bin/python3
export PYTHONPATH="$ROOT/tests/gguf/pystub"
export VIGIL_MODEL="$BUILD/tools/vigil-model"
QUANT="$LLAMA_CPP/build/bin/llama-quantize"
CONVERT="$ROOT/tests/gguf/pystub/convert_hf_to_gguf_wrapper.py"
[ -x "$VIGIL_MODEL" ] || { echo "build vigil-model first ($VIGIL_MODEL)" >&2; exit 1; }
[ -x "$QUANT" ] || { echo "llama-quantize not built ($QUANT)" >&2; exit 1; }

# make NAME SRC_DIR OUT_DIR
make() {
    name=$1 src=$2 out=$3
    mkdir -p "$out"
    # The mmproj converter reads image_mean/std from preprocessor_config.json, which released
    # Qwen3-VL checkpoints have and models/demo does not: a copy of the checkpoint gets one made
    # from its video_preprocessor_config.json (the same normalization).
    if [ ! -f "$src/preprocessor_config.json" ]; then
        tmp=$(mktemp -d)/$(basename "$src") # the converter names the model after the directory
        mkdir -p "$tmp"
        cp "$src"/* "$tmp/"
        cp "$src/video_preprocessor_config.json" "$tmp/preprocessor_config.json"
        src=$tmp
    fi
    for t in f32 f16 bf16 q8_0; do
        $PY "$CONVERT" "$src" --outtype $t --outfile "$out/$name-$t.gguf" >"$out/convert.log" 2>&1
    done
    for t in f32 f16; do
        $PY "$CONVERT" "$src" --mmproj --outtype $t --outfile "$out/mmproj-$name-$t.gguf" \
            >>"$out/convert.log" 2>&1
    done
    for t in q4_0 q4_k_m q5_k_m q6_k; do
        "$QUANT" "$out/$name-f32.gguf" "$out/$name-$t.gguf" "$(echo $t | tr a-z A-Z)" \
            >"$out/quantize-$t.log" 2>&1
    done
    rm -f "$out"/*.log
}

make demo "$ROOT/models/demo" "$ROOT/tests/gguf/fixtures/demo"
$PY "$ROOT/tests/gguf/deq_hashes.py" "$ROOT/tests/gguf/fixtures/demo"/*.gguf
if [ -d "$SHARED/golden/tiny1" ]; then
    make tiny1 "$SHARED/golden/tiny1" "$TINY_OUT"
fi
ls -l "$ROOT/tests/gguf/fixtures/demo"
