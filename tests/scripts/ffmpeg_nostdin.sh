#!/bin/sh
# Every ffmpeg CLI invocation in the project's scripts, tests, tools and benches passes -nostdin
# (issue #13 item 15): without it ffmpeg reads its standard input as interactive keys, so a loop or
# a CI step that feeds scripts/demo.sh from a file or a pipe switched on ffmpeg's debug output.
# A command starts with `ffmpeg -` in shell or C strings, `["ffmpeg",` in Python argument lists, or
# `execlp("ffmpeg"`; -nostdin must be on the same line or the next one. Usage: ffmpeg_nostdin.sh SRC
set -eu
cd "$1"
bad=$(git ls-files 2>/dev/null | grep -E '\.(sh|c|h|py)$|(^|/)(demo|test)\.sh$' | grep -v '^build' |
    while read -r f; do
        [ -f "$f" ] || continue
        awk -v F="$f" '
            { line[NR] = $0 }
            END {
                for (i = 1; i <= NR; i++) {
                    l = line[i]
                    if (l ~ /ffmpeg -version/ || l ~ /^[ \t]*(\*|\/\*|#)/) continue
                    if (l ~ /(^|[ "\x27(&;|])ffmpeg -[a-z]/ || l ~ /[[(]"ffmpeg",/ || l ~ /execl?p?\("ffmpeg"/) {
                        if (l !~ /-nostdin/ && line[i + 1] !~ /-nostdin/)
                            printf "%s:%d: %s\n", F, i, l
                    }
                }
            }' "$f"
    done)
if [ -n "$bad" ]; then
    echo "ffmpeg invocations without -nostdin:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "ffmpeg_nostdin: every ffmpeg invocation passes -nostdin"
