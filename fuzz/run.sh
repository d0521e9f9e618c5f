#!/usr/bin/env bash
# Seeds the corpora and runs every fuzz target for SECONDS (default 30) each,
# printing the executions per target. Needs the nightly toolchain and
# cargo-fuzz (installed here from crates.io if missing).
#   bash fuzz/run.sh 60
set -euo pipefail
secs=${1:-30}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
bash seed.sh
targets=(decode_frame codec_stream varint hdrs_bin reassembly roundtrip conn answers)
cargo +nightly fuzz build 2>&1 | tail -n 2
for t in "${targets[@]}"; do
    log=$(mktemp)
    if ! cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $t FAILED"
        exit 1
    fi
    execs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || echo "?")
    echo "fuzz: $t ok, $execs executions in ${secs}s"
    rm -f "$log"
done
