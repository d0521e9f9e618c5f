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
printf '%-6s %-5s %-6s %s\n' agent conns depth result
for cd in "1 1" "10 1" "100 1" "10 16" "100 4"; do
    set -- $cd
    for a in spop:18301 nbari:18302; do
        r=$(taskset -c 1 ./target/release/spop-bench --addr "127.0.0.1:${a#*:}" -c "$1" -d "$2" -t "$secs")
        printf '%-6s %-5s %-6s %s\n' "${a%%:*}" "$1" "$2" "$(sed 's/connections=[0-9]* depth=[0-9]* duration=[0-9]*s //' <<<"$r")"
    done
done
