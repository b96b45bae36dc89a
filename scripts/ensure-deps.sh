#!/bin/sh
# Installs (as root) or names (otherwise) the Debian packages qimg needs to build and test.
# qemu-utils is the test oracle only; qimg never calls it at run time. strace counts a
# test's syscalls (tests/py/test_file_holes.py).
#   scripts/ensure-deps.sh            build + test packages
#   scripts/ensure-deps.sh GROUP...   also an optional group: fuzz (clang, libFuzzer and
#                                     sanitizer runtimes, AFL++, llvm-cov), valgrind
set -e
PKGS="gcc make python3 zlib1g-dev libzstd-dev libsqlite3-dev libcmocka-dev python3-pytest qemu-utils strace"
for g in "$@"; do
    case "$g" in
    fuzz) PKGS="$PKGS clang libclang-rt-14-dev afl++ llvm" ;;
    valgrind) PKGS="$PKGS valgrind" ;;
    *) echo "ensure-deps: unknown package group '$g' (known: fuzz valgrind)" >&2; exit 2 ;;
    esac
done
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends $missing || { apt-get update && apt-get install -y --no-install-recommends $missing; }
else
    echo "missing packages:$missing" >&2
    echo "run: sudo apt-get install -y$missing" >&2
    exit 1
fi
