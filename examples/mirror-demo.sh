#!/usr/bin/env bash
# The main job, on a fresh machine: installs HAProxy (3.4, the current LTS
# line, from Debian's packages into a cache; see .ci/install-haproxy.sh), builds
# spop-mirror, and runs the example set-up of examples/haproxy/mirror.cfg on
# loopback: HAProxy on 127.0.0.1:8080 in front of "production" (8090), with
# every request mirrored by spop-mirror (12345) to the "shadow" server (8091).
# It sends a few requests, shows the mirror's metrics, then runs until Ctrl-C
# (or for DEMO_SECONDS seconds if set).
#   bash examples/mirror-demo.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v curl >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q curl; } >/dev/null
bash .ci/install-haproxy.sh "${DEMO_HAPROXY_LINE:-3.4}" >/dev/null
# shellcheck disable=SC1091
. target/haproxy-paths.env
line=${DEMO_HAPROXY_LINE:-3.4}
key=SPOP_HAPROXY_${line//./}
err=${key}_ERROR
haproxy=${HAPROXY:-${!key:-}}
[ -n "$haproxy" ] || { echo "no HAProxy $line: ${!err:-unknown reason}" >&2; exit 1; }
cargo build --release -q -p spop-mirror
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
./target/release/spop-mirror --listen 127.0.0.1:12345 --target http://127.0.0.1:8091 \
    --metrics 127.0.0.1:9100 --add-header 'X-Mirrored: spop-mirror' & pids+=($!)
"$haproxy" -f examples/haproxy/mirror.cfg -db & pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.1; done
echo "--- requests through HAProxy (answered by production, mirrored to shadow):"
curl -s http://127.0.0.1:8080/hello?x=1
curl -s -X POST -d 'a=1&b=2' http://127.0.0.1:8080/form
curl -s -X PUT --data-binary @README.md http://127.0.0.1:8080/upload
sleep 0.5
echo "--- spop-mirror metrics (http://127.0.0.1:9100/metrics):"
curl -s http://127.0.0.1:9100/metrics | grep -E '^spop_mirror_requests_(received|mirrored)_total|^spop_connections '
echo "--- running; Ctrl-C to stop"
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait; fi
