#!/usr/bin/env bash
# Installs the four HAProxy lines the tests run against, from Debian's
# packages, into a cache, without touching the system's packages:
#
#   line  Debian suite              why
#   2.6   bookworm                  Debian 12's haproxy
#   3.0   trixie                    the last line with the pre-3.1 SPOE engine
#   3.2   sid                       SPOE as a multiplexer (3.1+)
#   3.4   experimental (+ sid libs) the current LTS line
#
#   usage: .ci/install-haproxy.sh [LINE...]       (default: all four)
#
# The line `nginx` (asked for by name only) installs bookworm's nginx the same
# way, for benches/nginx-mirror.sh (nginx's own mirror module, compared
# against); its path is written as SPOP_NGINX.
#
# Each line is fetched with `apt-get download` from a private sources list and
# lists directory, unpacked with `dpkg-deb -x`, and its binary patched with
# patchelf to use the loader and libraries it came with, so that it runs (and
# re-executes itself on a master-worker reload) without a wrapper. The cache is
# $SPOP_HAPROXY_CACHE (default ~/.cache/spop-haproxy); a line already there is
# only checked.
#
# Writes target/haproxy-paths.env ($SPOP_HAPROXY_ENV_FILE if set):
# SPOP_HAPROXY_26=/path/to/haproxy for each
# line it got, SPOP_HAPROXY_26_ERROR='why' for each it could not get (the
# tests for that line then fail with that message). Also installs patchelf
# and wrk (benchmarks) with apt-get when missing. Exits non-zero only when it
# could not get any line at all. $SPOP_DEBIAN_MIRROR overrides the Debian
# mirror taken from apt's sources.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SPOP_HAPROXY_CACHE:-$HOME/.cache/spop-haproxy}
lines=("$@")
[ ${#lines[@]} -gt 0 ] || lines=(2.6 3.0 3.2 3.4)

say() { printf 'install-haproxy: %s\n' "$*" >&2; }

need=()
command -v patchelf >/dev/null 2>&1 || need+=(patchelf)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 && apt-get install -y -q "${need[@]}" >&2 \
        || say "could not install ${need[*]}"
fi

# The Debian mirror apt is configured with (deb822 or one-line sources).
mirror=${SPOP_DEBIAN_MIRROR:-}
[ -n "$mirror" ] || mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | sed -n -e 's/^URIs: *//p' -e 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\).*/\2/p' \
    | tr ' ' '\n' | grep -v -e security -e '^$' | head -n 1)

suite_of() {
    case $1 in
        2.6|nginx) echo bookworm ;; 3.0) echo trixie ;; 3.2) echo sid ;; 3.4) echo experimental ;;
        *) return 1 ;;
    esac
}
# The package, its binary and the version it must print, per line.
package_of() { case $1 in nginx) echo nginx ;; *) echo haproxy ;; esac; }
binary_of() { case $1 in nginx) echo usr/sbin/nginx ;; *) echo usr/sbin/haproxy ;; esac; }
version_ok() { # line "output of -v"
    case $1 in
        nginx) [[ $2 == *"nginx version: nginx/"* ]] ;;
        *) [[ $2 == *"version $1."* ]] ;;
    esac
}
key_of() { case $1 in nginx) echo SPOP_NGINX ;; *) echo "SPOP_HAPROXY_${1//./}" ;; esac; }

# install LINE: prints the binary's path on success; on failure prints the
# reason on stdout and returns 1.
install_line() {
    local line=$1 suite dir bin apt pkgs v pkg
    suite=$(suite_of "$line") || { echo "unknown line $line (2.6, 3.0, 3.2, 3.4 or nginx)"; return 1; }
    pkg=$(package_of "$line")
    dir=$cache/$line
    bin=$dir/root/$(binary_of "$line")
    if [ -x "$bin" ] && v=$("$bin" -v 2>&1) && version_ok "$line" "$v"; then
        echo "$bin"; return 0
    fi
    [ -n "$mirror" ] || { echo "no Debian mirror in apt's sources (/etc/apt/sources.list*)"; return 1; }
    command -v patchelf >/dev/null 2>&1 || { echo "patchelf is missing (apt-get install patchelf)"; return 1; }
    rm -rf "$dir"
    mkdir -p "$dir/apt/lists/partial" "$dir/apt/archives/partial" "$dir/debs" "$dir/root"
    {
        echo "deb $mirror $suite main"
        # experimental holds haproxy alone; its libraries come from sid.
        [ "$suite" != experimental ] || echo "deb $mirror sid main"
    } > "$dir/apt/sources.list"
    apt=(-o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache::Archives=$dir/apt/archives"
         -o "Dir::State::Status=$dir/apt/status" -o Debug::NoLocking=1 -q)
    : > "$dir/apt/status"
    # apt-get update exits 0 on fetch failures: look for the suite's list.
    if ! apt-get "${apt[@]}" update >"$dir/apt-update.log" 2>&1 \
            || ! ls "$dir/apt/lists/"*"_dists_${suite}_"*Packages* >/dev/null 2>&1; then
        echo "cannot read Debian $suite's package lists from $mirror: $(grep -m 2 -A 1 -e '^Err' -e '^E:' "$dir/apt-update.log" | tr -s ' \n' ' ')"
        return 1
    fi
    # The package of that suite (experimental is never the default candidate).
    v=$(apt-cache "${apt[@]}" madison "$pkg" 2>/dev/null \
        | awk -F'|' -v s="$suite" '$3 ~ (" " s "/") {gsub(/ /, "", $2); print $2; exit}')
    [ -n "$v" ] || { echo "Debian $suite has no $pkg package"; return 1; }
    case $line:$v in
        nginx:*|*:"$line".*|*:*:"$line".*) ;;
        *) echo "Debian $suite has haproxy $v, not $line.x"; return 1 ;;
    esac
    # Its library dependencies, resolved by apt against the same lists.
    pkgs=$(apt-cache "${apt[@]}" depends --recurse --no-recommends --no-suggests \
            --no-conflicts --no-breaks --no-replaces --no-enhances --no-pre-depends "$pkg=$v" 2>/dev/null \
        | sed -n 's/^ *Depends: *//p' | tr -d '<>' | grep -E '^lib' | sort -u)
    (
        cd "$dir/debs" || exit 1
        apt-get "${apt[@]}" download "$pkg=$v" >"$dir/download.log" 2>&1 || exit 2
        # Some names are virtual or absent in one suite: skip those.
        for p in $pkgs libc6; do apt-get "${apt[@]}" download "$p" >>"$dir/download.log" 2>&1 || true; done
    )
    case $? in
        0) ;;
        2) echo "cannot download $pkg=$v from Debian $suite: $(tail -n 1 "$dir/download.log")"; return 1 ;;
        *) echo "cannot write to $dir/debs"; return 1 ;;
    esac
    for f in "$dir"/debs/*.deb; do
        dpkg-deb -x "$f" "$dir/root" || { echo "cannot unpack $f"; return 1; }
    done
    local libdir=$dir/root/usr/lib/x86_64-linux-gnu loader
    loader=$(ls "$dir"/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$dir"/root/lib64/ld-linux-x86-64.so.2 2>/dev/null | head -n 1)
    [ -n "$loader" ] || { echo "the unpacked libc6 of $suite has no x86-64 loader (this installer is for x86-64)"; return 1; }
    if ! patchelf --force-rpath --set-interpreter "$loader" \
            --set-rpath "$libdir:$dir/root/lib/x86_64-linux-gnu" "$bin" 2>"$dir/patchelf.log"; then
        echo "patchelf failed on $bin: $(cat "$dir/patchelf.log")"; return 1
    fi
    if ! v=$("$bin" -v 2>&1); then
        echo "the unpacked $pkg does not run: ${v%%$'\n'*}"; return 1
    fi
    version_ok "$line" "$v" || { echo "the unpacked binary says '${v%%$'\n'*}', not $line.x"; return 1; }
    echo "$bin"
}

mkdir -p "$root/target"
env_file=${SPOP_HAPROXY_ENV_FILE:-$root/target/haproxy-paths.env}
mkdir -p "$(dirname "$env_file")"
tmp=$env_file.tmp
# Keep what an earlier run wrote for the lines not asked for this time.
keys=""
for line in "${lines[@]}"; do keys="$keys -e ^$(key_of "$line")[=_]"; done
# shellcheck disable=SC2086
grep -v $keys "$env_file" > "$tmp" 2>/dev/null || : > "$tmp"
got=0
for line in "${lines[@]}"; do
    key=$(key_of "$line")
    if out=$(install_line "$line"); then
        v=$("$out" -v 2>&1)
        say "$line: ${v%%$'\n'*} ($out)"
        printf '%s=%s\n' "$key" "$out" >> "$tmp"
        got=$((got + 1))
    else
        say "$line: NOT INSTALLED: $out"
        printf "%s_ERROR='%s %s (Debian %s): %s'\n" "$key" "$(case $line in nginx) echo nginx ;; *) echo HAProxy ;; esac)" "$line" "$(suite_of "$line" || echo '?')" "${out//\'/}" >> "$tmp"
    fi
done
mv "$tmp" "$env_file"
say "paths written to $env_file"
[ "$got" -gt 0 ]
