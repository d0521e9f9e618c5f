#!/usr/bin/env bash
# Installs what the tests and benchmarks need, idempotently, without touching
# anything but Debian's packages: HAProxy 2.6 and wrk from apt, HAProxy 3.2
# from Debian sid unpacked into ~/.cache/haproxy-sid (../shared/tools/haproxy-sid.sh).
# Writes the two binary paths to target/haproxy-paths.env for the tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
need=()
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${need[@]}"
fi
# The packaged service is not wanted: tests run their own instances.
if command -v systemctl >/dev/null 2>&1; then systemctl stop haproxy >/dev/null 2>&1 || true; fi
h26=$(command -v haproxy)
h32=$(sh "$root/../shared/tools/haproxy-sid.sh")
# Capture first, then look: with pipefail, `haproxy -v | head -n 1` dies of
# SIGPIPE (exit 141) whenever head exits before haproxy has written its last line.
v26=$("$h26" -v)
v32=$("$h32" -v)
printf '%s\n%s\n' "${v26%%$'\n'*}" "${v32%%$'\n'*}"
case "$v26" in *"version 2."*) ;; *) echo "expected HAProxy 2.x at $h26" >&2; exit 1 ;; esac
case "$v32" in *"version 3."*) ;; *) echo "expected HAProxy 3.x at $h32" >&2; exit 1 ;; esac
mkdir -p "$root/target"
printf 'SPOP_HAPROXY_26=%s\nSPOP_HAPROXY_32=%s\n' "$h26" "$h32" > "$root/target/haproxy-paths.env"
echo "HAProxy paths written to target/haproxy-paths.env"
