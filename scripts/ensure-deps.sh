#!/bin/sh
# Installs (as root) or names (otherwise) the Debian packages qimg needs.
#   scripts/ensure-deps.sh GROUP...   build     compiler and libraries: enough for `make`, `make demo`
#                                     test      build + cmocka, pytest and qemu-utils (`make test`)
#                                     fuzz      test + clang, libFuzzer and sanitizer runtimes,
#                                               AFL++, llvm-cov
#                                     valgrind  test + valgrind
#                                     iotests   test + what fetching QEMU's iotests needs
#                                               (dpkg-source from dpkg-dev, xz, patch)
#   scripts/ensure-deps.sh            same as `test`
# qemu-utils is the test oracle only; qimg never calls it at run time, so `build` leaves it out.
# strace counts a test's syscalls (tests/py/test_file_holes.py).
# openssh-server: tests/py/test_ssh.py starts a private sshd on a loopback port (its own
# config, keys and port; the package's own service is not used).
# The check is one dpkg-query per package; the Makefile keeps a stamp so that repeated builds
# do not ask again. Without dpkg-query (not Debian) nothing can be checked: a note, exit 0.
set -e
BUILD_PKGS="gcc make zlib1g-dev libzstd-dev libsqlite3-dev liburing-dev libjansson-dev libnbd-dev libssh-dev nettle-dev"
TEST_PKGS="$BUILD_PKGS python3 libcmocka-dev python3-pytest qemu-utils strace openssh-server"
[ $# -gt 0 ] || set -- test
PKGS=""
for g in "$@"; do
    case "$g" in
    build) PKGS="$PKGS $BUILD_PKGS" ;;
    test) PKGS="$PKGS $TEST_PKGS" ;;
    fuzz) PKGS="$PKGS $TEST_PKGS clang libclang-rt-14-dev afl++ llvm" ;;
    valgrind) PKGS="$PKGS $TEST_PKGS valgrind" ;;
    iotests) PKGS="$PKGS $TEST_PKGS dpkg-dev xz-utils patch" ;;
    *) echo "ensure-deps: unknown package group '$g' (known: build test fuzz valgrind iotests)" >&2; exit 2 ;;
    esac
done
if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "ensure-deps: no dpkg-query (not Debian?); not checking for:$PKGS" >&2
    exit 0
fi
missing=""
for p in $PKGS; do
    case " $missing " in *" $p "*) continue ;; esac
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
