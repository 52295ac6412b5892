#!/bin/sh
# Runs `systemd-analyze verify` on systemd/vigild.service with ExecStart pointed at the built vigild
# (verify checks that the binary exists) and fails on any warning. Exit 77 (skipped) when the tool
# is missing. Usage: systemd_verify.sh UNIT VIGILD
set -u
unit=$1
vigild=$2
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "skipped: systemd-analyze is not installed"
    exit 77
fi
[ -x "$vigild" ] || { echo "FAIL: $vigild is not built"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=/usr/local/sbin/vigild|ExecStart=$vigild|" "$unit" > "$tmp/vigild.service"
grep -q "^ExecStart=$vigild" "$tmp/vigild.service" || { echo "FAIL: no ExecStart to rewrite"; exit 1; }
out=$(cd "$tmp" && systemd-analyze verify --man=no "$tmp/vigild.service" 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
    echo "FAIL: systemd-analyze verify (exit $rc):"
    echo "$out"
    exit 1
fi
# The unit must keep the properties the daemon relies on.
for key in Type=notify WatchdogSec= DynamicUser=yes RuntimeDirectory=vigil StateDirectory=vigil \
           ProtectSystem=strict NoNewPrivileges=yes MemoryMax= TasksMax= Restart=on-failure; do
    grep -q "^$key" "$unit" || { echo "FAIL: $key missing from the unit"; exit 1; }
done
echo "systemd-analyze verify: clean"
