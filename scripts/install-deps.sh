#!/bin/sh
# Installs every Debian 12 package that vigil's build, tests and tools need. Idempotent: quiet and
# quick when everything is present. Run as root (or through sudo). Usage:
#   scripts/install-deps.sh            build + test dependencies (python3-torch runs the PyTorch
#                                      reference checks of the demo model in the test suite)
#   scripts/install-deps.sh --tools    also torchvision (regenerating the resize parity fixture)
#   scripts/install-deps.sh --peers    also what llama.cpp's GGUF converter imports (bench/peers)
# GStreamer's RTSP server, its Python bindings and the elements it streams with are the real RTSP server
# of test_streams_rtsp.
set -eu

PKGS="build-essential cmake pkg-config git clang clang-format ffmpeg
libavformat-dev libavcodec-dev libswscale-dev libavutil-dev
libuv1-dev libnanomsg-dev nanomsg-utils libopenblas-dev libcjson-dev libpcre2-dev
libutf8proc-dev libcmocka-dev libdnnl-dev systemd ca-certificates python3 python3-numpy python3-torch
python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good
gstreamer1.0-plugins-ugly
libwebsockets-dev libwebsockets-evlib-uv prometheus curl chromium chromium-driver
libmosquitto-dev mosquitto mosquitto-clients python3-paho-mqtt
libnats-dev nats-server python3-yaml"
if [ "${1:-}" = "--tools" ]; then
    PKGS="$PKGS python3-torchvision"
fi
if [ "${1:-}" = "--peers" ]; then
    PKGS="$PKGS python3-sentencepiece python3-tqdm"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# The tokenizer parity test runs the reference JavaScript tokenizer: Node.js and npm, from Debian
# unless a node is already on PATH.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing="$missing nodejs npm"
fi

if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
            echo "install-deps: missing packages:$missing (run as root)" >&2
            exit 1
        fi
    else
        SUDO=""
    fi
    echo "install-deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
