#!/usr/bin/env bash
# `make iotests` / `make iotests-must`: QEMU 7.2's own iotests with build/qimg as qemu-img.
#   tests/iotests/iotests.sh all|must [FMT:TEST ...]
# all   every run of baseline.txt (the 170 that pass with the real qemu-img here); writes
#       reports/iotests.md (pass count per qemu-img subcommand, time, failures)
# must  the runs of must-pass.txt (CI): every one must pass
# The tests are fetched once (Debian's qemu source package matching the installed
# qemu-utils, never committed) into $IOTESTS_HOME (default build/iotests).
set -eu
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
mode=${1:-all}; shift || true
BUILD=${BUILD:-build}
IOTESTS_HOME=${IOTESTS_HOME:-$ROOT/$BUILD/iotests}
QIMG=${QIMG:-$ROOT/$BUILD/qimg}
mkdir -p "$IOTESTS_HOME"
IOTESTS_HOME=$(cd "$IOTESTS_HOME" && pwd)

if [ ! -x "$IOTESTS_HOME/tests/check" ] || [ ! -d "$IOTESTS_HOME/python/qemu/machine" ]; then
    echo "iotests: fetching QEMU's tests/qemu-iotests into $IOTESTS_HOME (once)"
    DEST=$IOTESTS_HOME/tests PYDEST=$IOTESTS_HOME/python SRC=$IOTESTS_HOME/src \
        bash "$HERE/fetch.sh"
    rm -rf "$IOTESTS_HOME/src/tree" "$IOTESTS_HOME/src/dl"
fi

case "$mode" in
    all) LIST=$HERE/baseline.txt ;;
    must) LIST=$HERE/must-pass.txt ;;
    *) echo "usage: $0 all|must [FMT:TEST ...]" >&2; exit 2 ;;
esac
# a copy of the binary: a rebuild during the run must not change what is tested
WORK=$IOTESTS_HOME/run-$mode
rm -rf "$WORK"
mkdir -p "$WORK"
cp "$QIMG" "$WORK/qimg"
set +e
LIST=$LIST QIMG=$WORK/qimg IOTESTS=$IOTESTS_HOME/tests QEMU_PYTHON=$IOTESTS_HOME/python \
    WORKDIR=$WORK/w JOBS=${JOBS:-$(nproc)} bash "$HERE/run.sh" "$@" | tee "$WORK/out.txt"
rc=${PIPESTATUS[0]}
set -e
if [ "$mode" = all ] && [ $# -eq 0 ]; then
    /usr/bin/env python3 "$HERE/report.py" "$WORK/out.txt" "$HERE/test-matrix.tsv" \
        "$HERE/accepted-differences.md" > "$ROOT/reports/iotests.md"
    echo "iotests: wrote reports/iotests.md"
fi
exit "$rc"
