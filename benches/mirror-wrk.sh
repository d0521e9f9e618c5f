#!/usr/bin/env bash
# Measures what spop-mirror costs HAProxy, with wrk on loopback, all in one run
# so the ratios hold on a noisy machine:
#   A. HAProxy answering requests itself (http-request return), no filter;
#   B. the same frontend with the SPOE filter and spop-mirror mirroring every
#      request to a fast target (a second HAProxy process answering 204);
#   C. as B with the target down;
#   D. the same frontend with an agent that only ACKs (nbari's spop 0.13);
#   E. the same with an agent on this crate that only ACKs (benches' ack-agent):
#      the SPOE ceiling for any agent on the runtime.
# The five set-ups run in turn, ROUNDS times (default 3), and each round's
# ratios are taken within the round; the median of the rounds is the figure.
# Also printed, from B's rounds: spop-mirror's CPU per mirrored request (its
# /proc ticks over the requests it mirrored) beside wrk's CPU per request
# (wrk's rusage, from bash's `times`), and the share of requests mirrored.
# Two more mirroring set-ups can run in the same rounds, to compare builds or
# options within one run (same HAProxy, same target, same load):
#   B0. another spop-mirror binary (MIRROR_BASE, e.g. the main branch's
#       build) with MIRROR_BASE_ARGS;
#   B2, B3. this build with MIRROR_ARGS2, MIRROR_ARGS3 (e.g. --pipeline 64).
# Each mirroring set-up gets the same summary (median of the rounds, p99 too),
# and a table of where the two cores went in each set-up and in E (HAProxy,
# target, agent, wrk: CPU seconds per second), which tells whether the
# machine or the latency is the limit.
# With COMPARE=1, three more set-ups answer through a backend (production is
# another frontend of the same HAProxy: http-response rules do not run on an
# answer from "http-request return"), as examples/haproxy/compare.cfg does:
#   A2. no filter; M. mirroring all, the compare config in place (unique-id,
#   the http-response rules) but nothing compared (compare 0); K. the same
#   with spop-mirror comparing 10% of the requests (COMPARE_SHARE) with the
#   target as candidate: HAProxy waits for those responses' bodies and sends
#   them in a second message.
# Usage: bash benches/mirror-wrk.sh [SECONDS_PER_SETUP] [LINE|HAPROXY_BINARY]
#   LINE: 2.6, 3.0, 3.2 (default) or 3.4, as installed by .ci/install-haproxy.sh
# Env: ROUNDS, MIRROR_THREADS (--threads of the agents, default 1),
# MIRROR_ARGS (more options for the mirroring agent of B, e.g. --http2),
# MIRROR_BASE + MIRROR_BASE_ARGS (set-up B0), MIRROR_ARGS2, MIRROR_ARGS3 (B2, B3),
# NICE2, NICE3 (the CPU priority of B2's and B3's agent, `nice -n`, default 0),
# COMPARE=1 (set-ups A2, M, K), COMPARE_SHARE (K's percent, default 10).
# Needs wrk and HAProxy (bash .ci/install-haproxy.sh installs both).
set -euo pipefail
secs=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/common.sh
. "$root/benches/common.sh"
haproxy=${2:-3.2}
if [[ $haproxy =~ ^[0-9]\.[0-9]$ ]]; then
    key=SPOP_HAPROXY_${haproxy//./}
    haproxy=$(grep -s "^$key=" "$root/target/haproxy-paths.env" | cut -d= -f2)
    [ -n "$haproxy" ] || { echo "HAProxy ${2:-3.2} is not installed: bash .ci/install-haproxy.sh" >&2; exit 1; }
fi
command -v wrk >/dev/null || { echo "wrk missing: bash .ci/install-haproxy.sh" >&2; exit 1; }
cargo build --release -q -p spop-mirror --manifest-path "$root/Cargo.toml"
mirror="$root/target/release/spop-mirror"
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

# Ports: plain 18180, filtered 18181, target 18182 (down: 18183), agents 18190/18191.
{
    haproxy_head
    cat <<CFG
frontend plain
    bind 127.0.0.1:18180
    http-request return status 200 content-type text/plain string "ok"
CFG
    # Each SPOE frontend (answering "ok" itself), its SPOE file and its
    # agent's backend: "frontend port backend agent-port".
    for s in "mirrored 18181 mirroragents 18190" "mirrored_down 18184 mirroragents_down 18191" \
        "acked_nbari 18185 mirroragents_nbari 18194" "acked_ours 18186 mirroragents_ack 18195" \
        "mirrored_base 18187 mirroragents_base 18196" "mirrored_b2 18188 mirroragents_b2 18198" \
        "mirrored_b3 18189 mirroragents_b3 18200"; do
        read -r fe port be agent <<<"$s"
        spoe_conf "$be" > "$dir/spoe-$fe.conf"
        printf 'frontend %s\n    bind 127.0.0.1:%s\n    option http-buffer-request\n    filter spoe engine mirror config %s\n    http-request return status 200 content-type text/plain string "ok"\n' \
            "$fe" "$port" "$dir/spoe-$fe.conf"
        agents_backend "$be" "$agent"
    done
} > "$dir/haproxy.cfg"
if [ -n "${COMPARE:-}" ]; then
    # Ports: A2 18205, M 18206, K 18202, production 18207; agents M 18208, K 18203.
    cat > "$dir/spoe-cmp.conf" <<'SPOE'
[mirror]
spoe-agent mirror
    messages mirror
    groups compare
    use-backend mirroragents_cmp
    timeout hello 500ms
    timeout idle 30s
    timeout processing 100ms
spoe-message mirror
    args arg_method=method arg_path=url arg_ver=req.ver arg_hdrs=req.hdrs_bin arg_body=req.body id=unique-id
    event on-frontend-http-request
spoe-message compare
    args id=unique-id status=status hdrs=res.hdrs_bin body=res.body body_size=res.body_size
spoe-group compare
    messages compare
SPOE
    sed 's/mirroragents_cmp/mirroragents_m/' "$dir/spoe-cmp.conf" > "$dir/spoe-m.conf"
    for fe in "hop_plain 18205 -" "hop_mirrored 18206 $dir/spoe-m.conf" "compared 18202 $dir/spoe-cmp.conf"; do
        read -r name port spoe <<<"$fe"
        printf 'frontend %s\n    bind 127.0.0.1:%s\n    option http-buffer-request\n' "$name" "$port"
        if [ "$spoe" != - ]; then
            printf '    unique-id-format %%{+X}o%%ci:%%cp_%%fi:%%fp_%%Ts_%%rt:%%pid\n'
            printf '    filter spoe engine mirror config %s\n' "$spoe"
            printf '    http-response wait-for-body time 1s if { var(txn.mirror.compare) -m bool }\n'
            printf '    http-response send-spoe-group mirror compare if { var(txn.mirror.compare) -m bool }\n'
        fi
        printf '    default_backend production\n'
    done >> "$dir/haproxy.cfg"
    cat >> "$dir/haproxy.cfg" <<CFG
backend production
    server p1 127.0.0.1:18207
frontend production_server
    bind 127.0.0.1:18207
    http-request return status 200 content-type text/plain string "ok"
CFG
    agents_backend mirroragents_cmp 18203 >> "$dir/haproxy.cfg"
    agents_backend mirroragents_m 18208 >> "$dir/haproxy.cfg"
    printf 'compare = %s\ncompare_log = "%s"\n[[target]]\nurl = "http://127.0.0.1:18182"\nrole = "candidate"\n' \
        "${COMPARE_SHARE:-10}" "$dir/differences.ndjson" > "$dir/compare.toml"
    sed 's/^compare = .*/compare = 0/' "$dir/compare.toml" > "$dir/compare-0.toml"
fi
hv=$("$haproxy" -v); echo "${hv%%$'\n'*}"
# The shadow target: a second HAProxy process answering 204 (as a shadow
# server elsewhere would, it does not share the production HAProxy's thread).
{ haproxy_head; cat <<CFG
frontend target
    bind 127.0.0.1:18182
    http-request return status 204
CFG
} > "$dir/target.cfg"
"$haproxy" -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 & pids+=($!)
"$haproxy" -f "$dir/target.cfg" -db >"$dir/target.log" 2>&1 & pids+=($!)
threads=${MIRROR_THREADS:-1}
"$mirror" --threads "$threads" --listen 127.0.0.1:18190 --target http://127.0.0.1:18182 --metrics 127.0.0.1:18192 --log-level warn ${MIRROR_ARGS:-} & pids+=($!)
"$mirror" --threads "$threads" --listen 127.0.0.1:18191 --target http://127.0.0.1:18183 --metrics 127.0.0.1:18193 --log-level warn ${MIRROR_ARGS:-} & pids+=($!)
# Optional set-ups B0 and B2: "name frontend-port pid metrics-port" each.
variants=("B 18181 ${pids[2]} 18192")
if [ -n "${MIRROR_BASE:-}" ]; then
    "$MIRROR_BASE" --threads "$threads" --listen 127.0.0.1:18196 --target http://127.0.0.1:18182 --metrics 127.0.0.1:18197 --log-level warn ${MIRROR_BASE_ARGS:-} & pids+=($!)
    variants+=("B0 18187 $! 18197")
fi
if [ -n "${MIRROR_ARGS2:-}" ]; then
    nice -n "${NICE2:-0}" "$mirror" --threads "$threads" --listen 127.0.0.1:18198 --target http://127.0.0.1:18182 --metrics 127.0.0.1:18199 --log-level warn $MIRROR_ARGS2 & pids+=($!)
    variants+=("B2 18188 $! 18199")
fi
if [ -n "${MIRROR_ARGS3:-}" ]; then
    nice -n "${NICE3:-0}" "$mirror" --threads "$threads" --listen 127.0.0.1:18200 --target http://127.0.0.1:18182 --metrics 127.0.0.1:18201 --log-level warn $MIRROR_ARGS3 & pids+=($!)
    variants+=("B3 18189 $! 18201")
fi
if [ -n "${COMPARE:-}" ]; then
    "$mirror" --threads "$threads" --config "$dir/compare-0.toml" --listen 127.0.0.1:18208 --metrics 127.0.0.1:18209 --log-level warn ${MIRROR_ARGS:-} & pids+=($!)
    variants+=("M 18206 $! 18209")
    "$mirror" --threads "$threads" --config "$dir/compare.toml" --listen 127.0.0.1:18203 --metrics 127.0.0.1:18204 --log-level warn ${MIRROR_ARGS:-} & pids+=($!)
    variants+=("K 18202 $! 18204")
fi
# Reference: an agent that only ACKs (nbari's spop 0.13 crate, tokio loop).
cargo build --release -q -p spop-benches --bin nbari-agent --bin ack-agent --manifest-path "$root/Cargo.toml"
"$root/target/release/nbari-agent" 127.0.0.1:18194 & pids+=($!)
"$root/target/release/ack-agent" 127.0.0.1:18195 & pids+=($!)
ack_pid=$!
sleep 1
# CPU seconds used so far by this shell's finished children (wrk, curl):
# `times` must run in this shell (a command substitution would be a new
# process with no children yet), so it writes to a file.
child_cpu() { times > "$dir/times"; awk 'NR == 2 { gsub(/[ms]/, " "); print $1 * 60 + $2 + $3 * 60 + $4 }' "$dir/times"; }
run() { # name port -> prints one line, appends the rate to $dir/<port>.rps
    local rps p99 non2xx count
    read -r rps p99 non2xx count <<<"$(wrk_load "$secs" "$2")"
    echo "$count" >> "$dir/$2.count"
    printf '  %-34s %10s req/s   p99 %8s   non-2xx %s\n' "$1" "$rps" "$p99" "$non2xx"
    echo "$rps" >> "$dir/$2.rps"
    # p99 in microseconds
    awk -v v="$p99" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1e6; else print n }' >> "$dir/$2.p99"
}
# CPU ticks (user + system) of a process, or of one of its threads.
ticks() { if [ "$1" = none ]; then echo 0; else awk '{print $14 + $15}' "/proc/$1/stat"; fi; }
thread() { # pid name -> "pid/task/tid" of the thread with that name
    local f
    f=$(grep -l "^$2\$" /proc/"$1"/task/*/comm | head -n 1)
    f=${f%/comm}
    echo "${f#/proc/}"
}
hz=$(getconf CLK_TCK)
# Nanoseconds a process spent runnable but waiting for a CPU (run queue).
queued() { awk '{print $2}' "/proc/$1/schedstat"; }
agent_thread=$(thread "${pids[2]}" spop-agent)
# With the SPOP side on the mirroring runtime (the default) there is no
# such thread: everything counts as the mirroring thread.
[ -n "$agent_thread" ] || agent_thread=none
# What B costs, summed over its rounds: HAProxy, target, spop-mirror's SPOP
# thread ("spop-agent": reads NOTIFYs, writes ACKs) and its mirroring thread.
cpu_b=(0 0 0 0)
sample() { echo "$(ticks "${pids[0]}") $(ticks "${pids[1]}") $(ticks "$agent_thread") $(($(ticks "${pids[2]}") - $(ticks "$agent_thread")))"; }
for p in 18181 18184 18185 18186 18187 18188 18189 ${COMPARE:+18205 18206 18202}; do curl -s -o /dev/null "http://127.0.0.1:$p/warm"; done
# Interleaved rounds, so that a change in the machine's load (it is shared)
# falls on every set-up alike; the ratios are taken within each round.
rounds=${ROUNDS:-3}
echo "wrk -t1 -c32 -d${secs}s per set-up, $rounds interleaved rounds:"
for r in $(seq "$rounds"); do
    echo "round $r"
    run "A. no filter" 18180
    if [ -n "${COMPARE:-}" ]; then run "A2. no filter, through a backend" 18205; fi
    for v in "${variants[@]}"; do
        read -r name port pid mport <<<"$v"
        if [ "$name" = B ]; then read -r -a before <<<"$(sample)"; fi
        t0=$(ticks "$pid"); h0=$(ticks "${pids[0]}"); g0=$(ticks "${pids[1]}"); q0=$(queued "${pids[0]}")
        m0=$(metric "$mport" 'spop_mirror_requests_mirrored_total{target="http://127.0.0.1:18182/",class="2xx"}')
        child_cpu > "$dir/w0"
        case $name in
            B) run "B. spop-mirror, mirroring all" "$port" ;;
            B0) run "B0. MIRROR_BASE, mirroring all" "$port" ;;
            B2) run "B2. spop-mirror $MIRROR_ARGS2" "$port" ;;
            B3) run "B3. spop-mirror $MIRROR_ARGS3" "$port" ;;
            M) run "M. as A2, mirroring all, compare 0" "$port" ;;
            K) run "K. as M, comparing ${COMPARE_SHARE:-10}%" "$port" ;;
        esac
        child_cpu > "$dir/w1"
        w0=$(cat "$dir/w0"); w1=$(cat "$dir/w1")
        sleep 0.2
        m1=$(metric "$mport" 'spop_mirror_requests_mirrored_total{target="http://127.0.0.1:18182/",class="2xx"}')
        t1=$(ticks "$pid"); h1=$(ticks "${pids[0]}"); g1=$(ticks "${pids[1]}"); q1=$(queued "${pids[0]}")
        # HAProxy, target and agent ticks, wrk seconds, wall seconds, HAProxy's run-queue ns
        echo "$((h1 - h0)) $((g1 - g0)) $((t1 - t0)) $(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}') $secs $((q1 - q0))" >> "$dir/$port.cores"
        if [ "$name" = B ]; then
            read -r -a after <<<"$(sample)"
            for i in 0 1 2 3; do cpu_b[i]=$((cpu_b[i] + after[i] - before[i])); done
        fi
        # agent ticks, wrk seconds, mirrored, wrk requests
        echo "$((t1 - t0)) $(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}') $(awk -v a="${m0:-0}" -v b="${m1:-0}" 'BEGIN {print b - a}') $(tail -n 1 "$dir/$port.count")" >> "$dir/$port.cpu"
    done
    run "C. spop-mirror, target down" 18184
    run "D. ACK-only agent (nbari spop 0.13)" 18185
    e0=$(ticks "$ack_pid"); h0=$(ticks "${pids[0]}"); g0=$(ticks "${pids[1]}"); q0=$(queued "${pids[0]}")
    child_cpu > "$dir/w0"
    run "E. ACK-only agent (this crate)" 18186
    child_cpu > "$dir/w1"
    echo "$(($(ticks "${pids[0]}") - h0)) $(($(ticks "${pids[1]}") - g0)) $(($(ticks "$ack_pid") - e0)) $(awk -v a="$(cat "$dir/w0")" -v b="$(cat "$dir/w1")" 'BEGIN {print b - a}') $secs $(($(queued "${pids[0]}") - q0))" >> "$dir/18186.cores"
    # The ACK-only agent's CPU per request: the floor for any agent on this runtime.
    echo "$(($(ticks "$ack_pid") - e0)) $(tail -n 1 "$dir/18186.count")" >> "$dir/e-cpu"
done
cp "$dir/18181.cpu" "$dir/b-cpu"
paste "$dir/18180.rps" "$dir/18181.rps" "$dir/18184.rps" "$dir/18185.rps" "$dir/18186.rps" "$dir/b-cpu" | awk -v hz="$hz" "$MEDIAN_AWK"'
    { b[NR] = 100*$2/$1; c[NR] = 100*$3/$1; d[NR] = 100*$4/$1; e[NR] = 100*$5/$1; be[NR] = 100*$2/$5
      mus[NR] = $6 / hz / ($8 > 0 ? $8 : 1) * 1e6; wus[NR] = $7 / ($9 > 0 ? $9 : 1) * 1e6; share[NR] = 100 * $8 / ($9 > 0 ? $9 : 1)
      printf "round %d: B keeps %.0f%% of A; C %.0f%%; D %.0f%%; E %.0f%%; B is %.0f%% of the ceiling E; spop-mirror %.1f us CPU per mirrored request vs wrk %.1f us per request (%.2fx); %.1f%% mirrored\n", NR, b[NR], c[NR], d[NR], e[NR], be[NR], mus[NR], wus[NR], mus[NR] / (wus[NR] > 0 ? wus[NR] : 1), share[NR] }
    END {
        for (i = 1; i <= NR; i++) r[i] = mus[i] / (wus[i] > 0 ? wus[i] : 1)
        printf "median of the rounds: B keeps %.0f%% of A; C %.0f%%; D %.0f%%; E %.0f%%; B is %.0f%% of E; spop-mirror %.1f us CPU per mirrored request vs wrk %.1f us (%.2fx); %.1f%% mirrored\n", median(b, NR), median(c, NR), median(d, NR), median(e, NR), median(be, NR), median(mus, NR), median(wus, NR), median(r, NR), median(share, NR) }'
# Where B's CPU went: seconds of CPU per second of B (2.0 would be both cores).
awk -v t="$((secs * rounds))" -v hz="$hz" -v h="${cpu_b[0]}" -v g="${cpu_b[1]}" -v a="${cpu_b[2]}" -v m="${cpu_b[3]}" \
    'BEGIN { printf "B CPU (cores busy): HAProxy %.2f, target %.2f, spop-mirror %.2f (SPOP thread %.2f, mirroring thread %.2f)\n", h/hz/t, g/hz/t, (a+m)/hz/t, a/hz/t, m/hz/t }'
sleep 1
echo "B mirrored (2xx from target): $(metric 18192 'spop_mirror_requests_mirrored_total{target="http://127.0.0.1:18182/",class="2xx"}') of $(metric 18192 spop_mirror_requests_received_total) received"
echo "B not mirrored: $(curl -s http://127.0.0.1:18192/metrics | awk '/^spop_mirror_(target_dropped|dropped|target_errors)_total/ && $2 > 0 {printf "%s %s; ", $1, $2}')"
echo "C dropped (backoff/queue): $(metric 18193 'spop_mirror_target_dropped_total{target="http://127.0.0.1:18183/",reason="target_backoff"}') / $(metric 18193 'spop_mirror_target_dropped_total{target="http://127.0.0.1:18183/",reason="queue_full"}'), connect errors $(metric 18193 'spop_mirror_target_errors_total{target="http://127.0.0.1:18183/",kind="connect"}')"
awk -v hz="$hz" "$MEDIAN_AWK"'{ v[NR] = $1 / hz / ($2 > 0 ? $2 : 1) * 1e6 }
    END { printf "E: the ACK-only agent spent %.1f us CPU per request (median of the rounds)\n", median(v, NR) }' "$dir/e-cpu"
# One summary line per mirroring set-up (median of the rounds), for tables.
echo "summary (median of $rounds rounds; p99 in ms; CPU in us per request):"
printf '  %-4s %8s %8s %10s %10s %9s %9s %9s\n' set-up "%A" "%E" agent-us wrk-us mirrored p99 "E p99"
for v in "${variants[@]}"; do
    read -r name port pid mport <<<"$v"
    paste "$dir/18180.rps" "$dir/$port.rps" "$dir/18186.rps" "$dir/$port.cpu" "$dir/$port.p99" "$dir/18186.p99" | awk -v hz="$hz" -v name="$name" "$MEDIAN_AWK"'
        { a[NR] = 100*$2/$1; e[NR] = 100*$2/$3; mus[NR] = $4 / hz / ($6 > 0 ? $6 : 1) * 1e6; wus[NR] = $5 / ($7 > 0 ? $7 : 1) * 1e6
          share[NR] = 100 * $6 / ($7 > 0 ? $7 : 1); p[NR] = $8 / 1000; pe[NR] = $9 / 1000 }
        END { printf "  %-4s %7.0f%% %7.0f%% %10.1f %10.1f %8.1f%% %9.2f %9.2f\n", name, median(a, NR), median(e, NR), median(mus, NR), median(wus, NR), median(share, NR), median(p, NR), median(pe, NR) }'
done
# Where the two cores went in each set-up (CPU seconds per second of load,
# median of the rounds): is the machine the limit, and who takes it?
echo "cores busy (median of $rounds rounds; 2.00 is the whole machine; HAProxy queued: share of"
echo "the time HAProxy was ready to run but waited for a CPU):"
printf '  %-4s %8s %8s %8s %8s %8s %15s\n' set-up HAProxy target agent wrk total "HAProxy queued"
for v in "${variants[@]}" "E 18186"; do
    read -r name port _ <<<"$v"
    awk -v hz="$hz" -v name="$name" "$MEDIAN_AWK"'
        { h[NR] = $1 / hz / $5; g[NR] = $2 / hz / $5; a[NR] = $3 / hz / $5; w[NR] = $4 / $5; t[NR] = h[NR] + g[NR] + a[NR] + w[NR]; q[NR] = 100 * $6 / 1e9 / $5 }
        END { printf "  %-4s %8.2f %8.2f %8.2f %8.2f %8.2f %14.0f%%\n", name, median(h, NR), median(g, NR), median(a, NR), median(w, NR), median(t, NR), median(q, NR) }' "$dir/$port.cores"
done
for v in "${variants[@]}"; do
    read -r name port pid mport <<<"$v"
    echo "  $name not mirrored (whole run): $(curl -s "http://127.0.0.1:$mport/metrics" | awk '/^spop_mirror_(target_dropped|dropped|target_errors)_total/ && $2 > 0 {printf "%s %s; ", $1, $2}')"
done
if [ -n "${COMPARE:-}" ]; then
    # K and M beside A2 (the same path through a backend), per round, then the median.
    paste "$dir/18205.rps" "$dir/18206.rps" "$dir/18202.rps" | awk "$MEDIAN_AWK"'
        { m[NR] = 100*$2/$1; k[NR] = 100*$3/$1; km[NR] = 100*$3/$2
          printf "round %d: A2 %s req/s; M (mirror only) %s = %.0f%% of A2; K (compare) %s = %.0f%% of A2, %.0f%% of M\n", NR, $1, $2, m[NR], $3, k[NR], km[NR] }
        END { printf "median of the rounds: M keeps %.0f%% of A2, K %.0f%% of A2 and %.0f%% of M\n", median(m, NR), median(k, NR), median(km, NR) }'
    echo "K compared: $(curl -s http://127.0.0.1:18204/metrics | awk '/^spop_mirror_compare_(total|expired_total|unmatched_total|evicted_total)/ && $2 > 0 {printf "%s %s; ", $1, $2}')"
    echo "K received: $(metric 18204 spop_mirror_requests_received_total)"
fi
