# Sourced by the benchmark scripts.
#
# agents_backend NAME PORT: prints an HAProxy backend for one SPOE agent on
# 127.0.0.1:PORT, in `mode spop` on HAProxy 3.1+ and `mode tcp` before. A
# `mode tcp` agents' backend declared before its frontend makes 3.2 and 3.4
# open a new connection (HELLO, NOTIFY, ACK, reset) for every message;
# `mode spop` keeps the connections whatever the order.
agents_backend() {
    printf 'backend %s\n.if version_atleast(3.1)\n    mode spop\n.else\n    mode tcp\n.endif\n    server a1 127.0.0.1:%s\n' "$1" "$2"
}
