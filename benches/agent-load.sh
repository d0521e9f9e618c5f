#!/usr/bin/env bash
# ACKs per second and latency of the example agent (examples/set_var.rs, on
# the spop runtime) and of the same agent written with nbari's spop 0.13 crate
# (benches/src/bin/nbari-agent.rs), loaded by spop-bench, all in one run.
# The agents share core 0, spop-bench runs on core 1 (taskset), so that the
# load tool does not steal the agent's CPU.
# Usage: bash benches/agent-load.sh [SECONDS]
set -euo pipefail
secs=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p spop-examples --bin set_var -p spop-benches --bin spop-bench --bin nbari-agent
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
taskset -c 0 ./target/release/set_var 127.0.0.1:18301 >/dev/null 2>&1 & pids+=($!)
taskset -c 0 ./target/release/nbari-agent 127.0.0.1:18302 >/dev/null 2>&1 & pids+=($!)
sleep 1
utime() { awk '{print $14}' "/proc/$1/stat"; }
stime() { awk '{print $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf '%-6s %-5s %-6s %s\n' agent conns depth result
for cd in "1 1" "10 1" "100 1" "1 16" "10 16" "100 4"; do
    set -- $cd
    for a in spop:18301 nbari:18302; do
        pid=${pids[0]}; [ "${a%%:*}" = spop ] || pid=${pids[1]}
        u0=$(utime "$pid"); k0=$(stime "$pid"); w0=$(date +%s%N)
        r=$(taskset -c 1 ./target/release/spop-bench --addr "127.0.0.1:${a#*:}" -c "$1" -d "$2" -t "$secs")
        u1=$(utime "$pid"); k1=$(stime "$pid"); w1=$(date +%s%N)
        # The agent's CPU over the run (user and kernel), and per ACK: where
        # one frame is in flight, every agent pays a read and a write per ACK.
        acks=$(grep -o 'acks=[0-9]*' <<<"$r" | cut -d= -f2)
        cpu=$(awk -v u="$((u1 - u0))" -v k="$((k1 - k0))" -v hz="$hz" -v w="$((w1 - w0))" -v n="${acks:-0}" \
            'BEGIN { printf "agent-cpu=%.0f%% per-ack: user=%.2fus kernel=%.2fus", 100*(u+k)/hz/(w/1e9), (n > 0 ? 1e6*u/hz/n : 0), (n > 0 ? 1e6*k/hz/n : 0) }')
        printf '%-6s %-5s %-6s %s %s\n' "${a%%:*}" "$1" "$2" "$(sed 's/connections=[0-9]* depth=[0-9]* duration=[0-9]*s //' <<<"$r")" "$cpu"
    done
done
