#!/usr/bin/env bash
# What killing the agent costs production: wrk through HAProxy with the
# example set-up (examples/haproxy/mirror.cfg and mirror-spoe.conf, ports
# moved), spop-mirror (release build) mirroring every request to the
# example's shadow frontend; spop-mirror is killed with SIGKILL under load and
# started again on the same port. Three wrk runs back to back per set-up:
#   before   PHASE seconds with the agent up;
#   dead     PHASE seconds, the agent SIGKILLed 0.2 s after wrk starts;
#   after    PHASE seconds from the restart;
# each gives requests/s and p99; "resumed" is the time from the restart to the
# first request spop-mirror mirrors again (its metrics, polled every 50 ms).
# Three set-ups per HAProxy: "old" (as before: check inter 2s, no retries 0,
# the SPOE event sent whether an agent is UP or not), "srv" (the shipped
# server settings, the old SPOE event) and "new" (the example files as
# shipped). HAProxy logs at "notice" here: its per-request lines would cost
# more than what is measured. No pinning (taskset): on a 2-core machine
# shared with other work, pinning made the tails worse, not steadier. wrk
# saturates (closed loop), so its p99 also measures CPU contention; the
# rates and the "old" stall are the robust figures, spop-mirror/tests/
# failover.rs counts the requests that waited for the agent.
# Loopback only; stops by itself (about 6 x 3 x PHASE seconds plus start-up).
# Usage: bash benches/agent-kill.sh [HAPROXY_BINARY...]   (default: 2.6 and 3.4)
# Env: PHASE (seconds, default 4), CONNS (wrk -c, 16), WRK_THREADS (wrk -t, 1),
# SETUPS (default "old srv new").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
phase=${PHASE:-4}
conns=${CONNS:-16}
wrk_threads=${WRK_THREADS:-1}
command -v wrk >/dev/null || { echo "wrk missing: bash .ci/install-haproxy.sh" >&2; exit 1; }
if [ $# -eq 0 ]; then
    # shellcheck disable=SC1091
    . target/haproxy-paths.env
    set -- "$SPOP_HAPROXY_26" "$SPOP_HAPROXY_34"
fi
cargo build --release -q -p spop-mirror
mirror="$root/target/release/spop-mirror"
dir=$(mktemp -d)
pids=()
agent=
cleanup() {
    for p in "${pids[@]}" $agent; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# Ports: www 28080, production 28090, shadow 28091, agent 28345, metrics 28346.
sed -e 's/127\.0\.0\.1:8080/127.0.0.1:28080/; s/127\.0\.0\.1:8090/127.0.0.1:28090/' \
    -e 's/127\.0\.0\.1:8091/127.0.0.1:28091/; s/127\.0\.0\.1:12345/127.0.0.1:28345/' \
    -e "s#examples/haproxy/mirror-spoe.conf#$dir/new-spoe.conf#" \
    -e 's/^    log stderr format raw local0 info$/    log stderr format raw local0 notice/' \
    examples/haproxy/mirror.cfg > "$dir/new.cfg"
grep -q 'observe layer4' "$dir/new.cfg"
cp examples/haproxy/mirror-spoe.conf "$dir/new-spoe.conf"
sed 's/^\(    event on-frontend-http-request\) if .*/\1/' "$dir/new-spoe.conf" > "$dir/old-spoe.conf"
grep -q '^    event on-frontend-http-request$' "$dir/old-spoe.conf"
sed "s#$dir/new-spoe.conf#$dir/old-spoe.conf#" "$dir/new.cfg" > "$dir/srv.cfg"
sed -e 's/^\(    server agent1 [^ ]*\) check .*/\1 check inter 2s/' -e '/^    retries 0$/d' \
    "$dir/srv.cfg" > "$dir/old.cfg"
grep -q 'server agent1 127.0.0.1:28345 check inter 2s$' "$dir/old.cfg"
grep -q "$dir/old-spoe.conf" "$dir/old.cfg"

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}
start_agent() {
    "$mirror" --listen 127.0.0.1:28345 --target http://127.0.0.1:28091 \
        --metrics 127.0.0.1:28346 --log-level error >/dev/null 2>&1 &
    agent=$!
    wait_port 28345
}
# "rate p99" of a wrk run.
wrk_run() {
    wrk -t"$wrk_threads" -c"$conns" -d"${1}s" --latency http://127.0.0.1:28080/ >"$dir/wrk.out" 2>&1 || true
    awk '/^Requests\/sec:/ {r=$2} /^ +99%/ {p=$2} END {printf "%.0f %s", r, p}' "$dir/wrk.out"
}
mirrored() {
    curl -s http://127.0.0.1:28346/metrics 2>/dev/null |
        awk '/^spop_mirror_requests_mirrored_total/ {s+=$2} END {print s+0}'
}

printf '%-8s %-4s %-22s %-22s %-22s %s\n' haproxy cfg "before (req/s p99)" \
    "dead (req/s p99)" "after (req/s p99)" resumed
for haproxy in "$@"; do
    line=$("$haproxy" -v | awk 'NR==1 {print $3}' | cut -d- -f1)
    for setup in ${SETUPS:-old srv new}; do
        start_agent
        "$haproxy" -f "$dir/$setup.cfg" -db >"$dir/haproxy.log" 2>&1 &
        hap=$!
        pids+=("$hap")
        wait_port 28080
        wrk -t1 -c"$conns" -d1s http://127.0.0.1:28080/ >/dev/null 2>&1 || true   # warm-up
        before=$(wrk_run "$phase")
        wrk_run "$phase" >"$dir/dead" &
        w=$!
        sleep 0.2
        kill -9 "$agent"
        wait "$agent" 2>/dev/null || true
        wait "$w"
        dead=$(cat "$dir/dead")
        start_agent
        t0=$(date +%s%N)
        (
            while [ "$(mirrored)" = 0 ]; do
                [ $(($(date +%s%N) - t0)) -gt $((phase * 1000000000)) ] && { echo never; exit; }
                sleep 0.05
            done
            echo "$(( ($(date +%s%N) - t0) / 1000000 ))ms"
        ) >"$dir/resumed" &
        r=$!
        after=$(wrk_run "$phase")
        wait "$r"
        printf '%-8s %-4s %-22s %-22s %-22s %s\n' "$line" "$setup" "$before" "$dead" "$after" "$(cat "$dir/resumed")"
        kill -9 "$agent" "$hap" 2>/dev/null || true
        wait "$agent" "$hap" 2>/dev/null || true
        agent=
        pids=()
        sleep 0.5
    done
done
