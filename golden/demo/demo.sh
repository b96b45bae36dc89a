#!/bin/sh
# `make demo`: qimg's main job on a damaged sample image (golden/demo/damaged.qcow2, made by
# golden/demo/make-damaged.sh): check it (human and JSON), show the repair plan (dry run),
# repair it with a journal (qemu's double check follows), check again, undo the repair from
# the journal, and prove with cmp that the file is byte for byte what it was. Works on a
# copy in a temporary directory; the sample is never written. Exit 0 when every step gives
# the exit code it should, else 1 naming the step.
#   usage: QIMG=build/qimg golden/demo/demo.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
qimg=${QIMG:-$here/../../build/qimg}
case $qimg in /*) ;; *) qimg=$PWD/$qimg ;; esac
sample=$here/damaged.qcow2
[ -x "$qimg" ] || { echo "demo: no qimg at $qimg (run make)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qimg-demo.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
cp "$sample" "$tmp/disk.qcow2" || exit 1
cd "$tmp" || exit 1

# diagnostics (stderr) and reports (stdout) in the order qimg writes them, also through a pipe
linebuf=
command -v stdbuf >/dev/null 2>&1 && linebuf="stdbuf -oL -eL"

failed=0
# step EXPECTED_RC ARGS...: prints the command, runs it, prints its exit code
step() {
    want=$1
    shift
    printf '\n$ qimg %s\n' "$*"
    $linebuf "$qimg" "$@" 2>&1
    rc=$?
    if [ "$rc" = "$want" ]; then
        echo "(exit code $rc)"
    else
        echo "(exit code $rc, expected $want)"
        failed=1
    fi
}
# say LINE...: a comment block
say() {
    echo
    for l in "$@"; do echo "# $l"; done
}

say "disk.qcow2 is a copy of golden/demo/damaged.qcow2: a refcount of a guest data cluster" \
    "was zeroed and a cluster leaked (see golden/demo/make-damaged.sh)."
step 0 info disk.qcow2
say "check: qemu-img's report and exit code (2: corruptions found)"
step 2 check disk.qcow2
say "the same as JSON: qemu's fields plus one object per finding"
step 2 check --output=json disk.qcow2
say "--dry-run: every write the repair would make, and what check would say after it;" \
    "nothing is written"
step 2 check -r all --dry-run disk.qcow2
cmp -s disk.qcow2 "$sample" || { echo "demo: the dry run changed the file" >&2; failed=1; }
say "repair, recording the old bytes of every write in a journal first; the repair then" \
    "checks the image again ('Double checking the fixed image now...')"
step 0 check -r all --journal repair.journal disk.qcow2
step 0 check disk.qcow2
say "undo: put back every byte the repair changed, from the journal"
step 0 undo repair.journal disk.qcow2
printf '\n$ cmp disk.qcow2 golden/demo/damaged.qcow2\n'
if cmp disk.qcow2 "$sample"; then
    echo "identical: the file is back as it was before the repair"
else
    failed=1
fi
if [ "$failed" != 0 ]; then
    echo "demo: FAILED (see the steps above)" >&2
    exit 1
fi
echo
echo "demo: every step behaved as expected"
