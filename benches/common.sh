# Sourced by the benchmark scripts (mirror-wrk.sh, nginx-mirror.sh): the
# pieces of HAProxy configuration, the load and the arithmetic they share.

# agents_backend NAME PORT: prints an HAProxy backend for one SPOE agent on
# 127.0.0.1:PORT, in `mode spop` on HAProxy 3.1+ and `mode tcp` before. A
# `mode tcp` agents' backend declared before its frontend makes 3.2 and 3.4
# open a new connection (HELLO, NOTIFY, ACK, reset) for every message;
# `mode spop` keeps the connections whatever the order.
agents_backend() {
    printf 'backend %s\n.if version_atleast(3.1)\n    mode spop\n.else\n    mode tcp\n.endif\n    server a1 127.0.0.1:%s\n' "$1" "$2"
}

# spoe_conf BACKEND: prints the SPOE file of the mirroring set-ups: the
# `mirror` message of every request (method, URL, version, headers, body)
# to the agents of BACKEND.
spoe_conf() {
    cat <<SPOE
[mirror]
spoe-agent mirror
    messages mirror
    use-backend $1
    timeout hello 500ms
    timeout idle 30s
    timeout processing 100ms
spoe-message mirror
    args arg_method=method arg_path=url arg_ver=req.ver arg_hdrs=req.hdrs_bin arg_body=req.body
    event on-frontend-http-request
SPOE
}

# haproxy_head: prints the global and defaults sections of every HAProxy the
# benchmarks run (one thread; 16 KiB buffers, HAProxy's default).
haproxy_head() {
    cat <<CFG
global
    nbthread 1
    tune.bufsize 16384
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
CFG
}

# metric PORT SERIES: the value of one series on 127.0.0.1:PORT/metrics.
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v s="$2" '$1==s {print $2}'; }

# wrk_load SECONDS PORT: one wrk run (one thread, 32 connections) against
# 127.0.0.1:PORT; prints "requests/s p99 non-2xx requests" (p99 as wrk
# writes it, e.g. 1.20ms).
wrk_load() {
    wrk -t1 -c32 -d"$1s" --latency "http://127.0.0.1:$2/bench?x=1" 2>&1 |
        awk '/Requests\/sec/ {r = $2} $1 == "99%" {p = $2} /Non-2xx/ {n = $NF} /requests in/ {c = $1}
             END {print r, p, (n == "" ? 0 : n), c}'
}

# An awk function, median(v, n): the median of v[1..n] (v is sorted).
MEDIAN_AWK='
    function median(v, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }'
