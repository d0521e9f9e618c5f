#!/usr/bin/env bash
# What a user would pick instead of spop-mirror: nginx's built-in `mirror`
# module, on the same work, in one run (issue 11's third goal). Every set-up
# proxies each request to an app and, where it mirrors, copies each request
# to a shadow; one worker (nginx `worker_processes 1`, HAProxy `nbthread 1`),
# wrk -t1 -c32, the app and the shadow the same two HAProxy processes for all
# (answering 200 "ok" and 204):
#   N.  nginx proxying to the app;
#   NM. nginx proxying, with `mirror` copying every request to the shadow
#       (`mirror_request_body on`, keep-alive to both);
#   H.  HAProxy proxying to the app;
#   HM. HAProxy proxying, SPOE filter, spop-mirror mirroring every request;
#   HM2 the same with MIRROR_ARGS2 (default "--pipeline 64"), its agent at
#       CPU priority NICE2 (`nice -n`, default 0);
#   HE. HAProxy proxying, SPOE filter, an agent on this crate that only ACKs
#       (the ceiling for any SPOE agent).
# The set-ups run in turn, ROUNDS times (default 3); each round's ratios are
# taken within the round and the median of the rounds is printed.
# Usage: bash benches/nginx-mirror.sh [SECONDS_PER_SETUP] [LINE]
#   LINE: the HAProxy line (2.6, 3.0, 3.2 or 3.4; default 3.4).
# Needs: bash .ci/install-haproxy.sh LINE nginx (Debian's packages, unpacked
# into a cache), and wrk.
set -euo pipefail
secs=${1:-5}
line=${2:-3.4}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/common.sh
. "$root/benches/common.sh"
env_file=$root/target/haproxy-paths.env
haproxy=$(grep -s "^SPOP_HAPROXY_${line//./}=" "$env_file" | cut -d= -f2)
nginx=$(grep -s "^SPOP_NGINX=" "$env_file" | cut -d= -f2)
[ -n "$haproxy" ] || { echo "HAProxy $line is not installed: bash .ci/install-haproxy.sh $line nginx" >&2; exit 1; }
[ -n "$nginx" ] || { echo "nginx is not installed: bash .ci/install-haproxy.sh $line nginx" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: bash .ci/install-haproxy.sh" >&2; exit 1; }
cargo build --release -q -p spop-mirror --manifest-path "$root/Cargo.toml"
cargo build --release -q -p spop-benches --bin ack-agent --manifest-path "$root/Cargo.toml"
mirror=$root/target/release/spop-mirror
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

# Ports: app 18282, shadow 18283; nginx 18280 (N) and 18281 (NM);
# HAProxy 18284 (H), 18285 (HM), 18286 (HM2), 18287 (HE); agents 18290-18292.
{ haproxy_head; cat <<CFG
frontend app
    bind 127.0.0.1:18282
    http-request return status 200 content-type text/plain string "ok"
frontend shadow
    bind 127.0.0.1:18283
    http-request return status 204
CFG
} > "$dir/backends.cfg"
mkdir -p "$dir/nginx/logs" "$dir/nginx/tmp"
cat > "$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/nginx/tmp/body;
    proxy_temp_path $dir/nginx/tmp/proxy;
    fastcgi_temp_path $dir/nginx/tmp/fastcgi;
    uwsgi_temp_path $dir/nginx/tmp/uwsgi;
    scgi_temp_path $dir/nginx/tmp/scgi;
    keepalive_requests 1000000;
    upstream app { server 127.0.0.1:18282; keepalive 64; }
    upstream shadow { server 127.0.0.1:18283; keepalive 64; }
    server {
        listen 127.0.0.1:18280;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }
    }
    server {
        listen 127.0.0.1:18281;
        location / {
            mirror /mirror;
            mirror_request_body on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }
        location = /mirror {
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://shadow\$request_uri;
        }
    }
}
CONF
spoe_conf agents > "$dir/spoe.conf"
spoe_conf agents2 > "$dir/spoe2.conf"
spoe_conf agents_ack > "$dir/spoe-ack.conf"
{
    haproxy_head
    cat <<CFG
backend app
    http-reuse always
    server app 127.0.0.1:18282
frontend plain
    bind 127.0.0.1:18284
    default_backend app
CFG
    # Each SPOE frontend, its SPOE file and its agent's backend.
    for f in "mirrored 18285 spoe.conf agents 18290" "mirrored2 18286 spoe2.conf agents2 18291" \
        "acked 18287 spoe-ack.conf agents_ack 18292"; do
        read -r name port conf be agent <<<"$f"
        printf 'frontend %s\n    bind 127.0.0.1:%s\n    option http-buffer-request\n    filter spoe engine mirror config %s\n    default_backend app\n' \
            "$name" "$port" "$dir/$conf"
        agents_backend "$be" "$agent"
    done
} > "$dir/haproxy.cfg"
"$haproxy" -f "$dir/backends.cfg" -db >"$dir/backends.log" 2>&1 & pids+=($!)
"$haproxy" -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 & pids+=($!)
"$nginx" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" >"$dir/nginx.log" 2>&1 & pids+=($!)
args2=${MIRROR_ARGS2:---pipeline 64}
"$mirror" --threads 1 --listen 127.0.0.1:18290 --target http://127.0.0.1:18283 --metrics 127.0.0.1:18293 --log-level warn & pids+=($!)
# shellcheck disable=SC2086
nice -n "${NICE2:-0}" "$mirror" --threads 1 --listen 127.0.0.1:18291 --target http://127.0.0.1:18283 --metrics 127.0.0.1:18294 --log-level warn $args2 & pids+=($!)
"$root/target/release/ack-agent" 127.0.0.1:18292 & pids+=($!)
sleep 1
echo "$("$haproxy" -v | head -n 1); $("$nginx" -v 2>&1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for p in 18280 18281 18284 18285 18286 18287; do
    curl -sf -o /dev/null "http://127.0.0.1:$p/warm" || { echo "set-up on port $p does not answer" >&2; cat "$dir"/*.log "$dir/nginx/logs/error.log" >&2; exit 1; }
done
run() { # name port
    local rps p99 non2xx
    read -r rps p99 non2xx _ <<<"$(wrk_load "$secs" "$2")"
    printf '  %-44s %10s req/s   p99 %8s   non-2xx %s\n' "$1" "$rps" "$p99" "$non2xx"
    echo "$rps" >> "$dir/$2.rps"
}
rounds=${ROUNDS:-3}
echo "wrk -t1 -c32 -d${secs}s per set-up, $rounds interleaved rounds:"
for r in $(seq "$rounds"); do
    echo "round $r"
    run "N.   nginx proxy" 18280
    run "NM.  nginx proxy + mirror module" 18281
    run "H.   HAProxy proxy" 18284
    run "HM.  HAProxy + spop-mirror" 18285
    run "HM2. HAProxy + spop-mirror $args2" 18286
    run "HE.  HAProxy + ACK-only agent (ceiling)" 18287
done
sleep 1
target='{target="http://127.0.0.1:18283/",class="2xx"}'
echo "mirrored (2xx from the shadow) / received: HM $(metric 18293 "spop_mirror_requests_mirrored_total$target") / $(metric 18293 spop_mirror_requests_received_total), HM2 $(metric 18294 "spop_mirror_requests_mirrored_total$target") / $(metric 18294 spop_mirror_requests_received_total)"
paste "$dir/18280.rps" "$dir/18281.rps" "$dir/18284.rps" "$dir/18285.rps" "$dir/18286.rps" "$dir/18287.rps" | awk "$MEDIAN_AWK"'
    { nm[NR] = $2 / $1; hm[NR] = $4 / $3; x[NR] = $4 / $2; x2[NR] = $5 / $2; e[NR] = $6 / $2; h[NR] = $3 / $1
      printf "round %d: NM/N %.2f; HM/H %.2f; HM/NM %.2fx; HM2/NM %.2fx; HE/NM %.2fx; H/N %.2f\n", NR, nm[NR], hm[NR], x[NR], x2[NR], e[NR], h[NR] }
    END { printf "median: nginx mirroring keeps %.0f%% of plain nginx; HAProxy + spop-mirror keeps %.0f%% of plain HAProxy; HM is %.2fx nginx mirroring, HM2 %.2fx, the ACK-only ceiling %.2fx (plain HAProxy / plain nginx %.2f)\n",
              100 * median(nm, NR), 100 * median(hm, NR), median(x, NR), median(x2, NR), median(e, NR), median(h, NR) }'
