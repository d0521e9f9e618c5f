#!/usr/bin/env bash
# Captures (or re-captures) the SPOP vectors of one HAProxy line, in one command:
#   bash spop/tests/vectors/capture.sh 3.4        (2.6, 3.0, 3.2 or 3.4)
#   bash spop/tests/vectors/capture.sh /path/to/haproxy
# Installs the line with .ci/install-haproxy.sh if needed, then runs
# capture/capture.py, which writes spop/tests/vectors/haproxy-<version>/.
# A new version also goes into the VERSIONS list of spop/tests/vectors.rs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
case ${1:-} in
    "") echo "usage: $0 LINE|HAPROXY_BINARY" >&2; exit 2 ;;
    */*) bin=$1 ;;
    *)
        bash "$root/.ci/install-haproxy.sh" "$1"
        key=SPOP_HAPROXY_${1//./}
        bin=$(sed -n "s/^$key=//p" "$root/target/haproxy-paths.env")
        [ -n "$bin" ] || { grep "^${key}_ERROR" "$root/target/haproxy-paths.env" >&2; exit 1; }
        ;;
esac
exec python3 "$here/capture/capture.py" "$bin"
