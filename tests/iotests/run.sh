#!/usr/bin/env bash
# Run QEMU's own iotests (QEMU 7.2, extracted outside any repo; see README.md)
# against a qemu-img-compatible binary.  Only the tests listed in
# baseline-pass.txt are run: those pass with the real Debian qemu-img 7.2 on a
# machine that has qemu-img/qemu-io/qemu-nbd (qemu-utils) but no qemu-system.
#
# Usage:
#   QIMG=/abs/path/to/build/qimg IOTESTS=/tmp/iotests bash run.sh [FMT:TEST[:FLAGS] ...]
#
# Environment:
#   QIMG          binary under test (required; QIMG=/usr/bin/qemu-img gives
#                 the baseline run)
#   IOTESTS       extracted tests/qemu-iotests dir (default /tmp/iotests)
#   QEMU_PYTHON   QEMU's python/ dir (package 'qemu', needed by the python
#                 tests); default: first of $IOTESTS/../qemu-python,
#                 /tmp/qemu-python, $IOTESTS/../../python that exists
#   LIST          test list: lines "FMT TEST [FLAGS]", '#' comments;
#                 default: baseline-pass.txt next to this script
#   FMTS          run only these formats of the list, e.g. FMTS=qcow2
#   ONLY          run only some list entries: ONLY=ref (differential ones),
#                 ONLY=out (all but differential), ONLY=shm
#   JOBS          tests run in parallel (default: nproc)
#   TEST_TIMEOUT  seconds per test run (default 180; slowest baseline test
#                 takes ~60 s on 2 busy cores)
#   RETRIES       a failing test is run again up to this many times (default
#                 1; real qemu-img itself is flaky on a few luks tests here,
#                 see README); a pass on retry is marked "(passed on retry)"
#   REF_QIMG      the real qemu-img for "ref" tests (default /usr/bin/qemu-img)
#   QEMU_IO_BIN, QEMU_NBD_BIN   real helpers (default /usr/bin/qemu-io,
#                 /usr/bin/qemu-nbd; they are NOT replaced by QIMG)
#   SHM_DIR       tmpfs for "shm" tests (default /dev/shm)
#   WORKDIR       scratch dirs, logs and diffs (default: mktemp -d)
#   VERBOSE=1     print the diff of each failing test
#
# FLAGS (third column, comma separated):
#   (none)  strict: the test's output must equal QEMU's reference .out file
#           (this is plain "./check -FMT TEST").
#   ref     differential: the test also calls qemu-system (stubbed here), so
#           it cannot match .out; its whole output with QIMG must equal its
#           output with the real qemu-img (REF_QIMG) in the same stubbed
#           environment.  Only the qemu-img/qemu-io parts really differ.
#   shm     scratch dir on tmpfs (the test needs sparse files > 16 TiB,
#           which ext4 cannot hold).
#
# Output: one line per test, "PASS fmt test [secs]" or
# "FAIL fmt test [secs] (reason)", then '#' summary lines and, last,
# "N passed, M failed".
# Exit status 0 iff nothing failed.

set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ -z "${QIMG:-}" ]; then
    echo "run.sh: set QIMG=/path/to/qemu-img-compatible-binary" >&2
    exit 2
fi
QIMG=$(readlink -f "$QIMG")
if [ ! -f "$QIMG" ] || [ ! -x "$QIMG" ]; then
    echo "run.sh: QIMG=$QIMG is not an executable file" >&2
    exit 2
fi

IOTESTS=$(readlink -f "${IOTESTS:-/tmp/iotests}")
if [ ! -x "$IOTESTS/check" ] || [ ! -f "$IOTESTS/common.rc" ]; then
    echo "run.sh: IOTESTS=$IOTESTS does not look like QEMU's" \
         "tests/qemu-iotests (see README.md for how to get it)" >&2
    exit 2
fi

if [ -z "${QEMU_PYTHON:-}" ]; then
    for d in "$IOTESTS/../qemu-python" /tmp/qemu-python "$IOTESTS/../../python"; do
        if [ -d "$d/qemu/machine" ]; then QEMU_PYTHON=$(readlink -f "$d"); break; fi
    done
fi
QEMU_PYTHON=${QEMU_PYTHON:-}
if [ -z "$QEMU_PYTHON" ]; then
    echo "run.sh: warning: QEMU's python/ package not found (QEMU_PYTHON);" \
         "python-based tests will fail" >&2
fi

LIST=${LIST:-$HERE/baseline-pass.txt}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
TEST_TIMEOUT=${TEST_TIMEOUT:-180}
RETRIES=${RETRIES:-1}
REF_QIMG=${REF_QIMG:-/usr/bin/qemu-img}
QEMU_IO_BIN=${QEMU_IO_BIN:-/usr/bin/qemu-io}
QEMU_NBD_BIN=${QEMU_NBD_BIN:-/usr/bin/qemu-nbd}
SHM_DIR=${SHM_DIR:-/dev/shm}
FMTS=${FMTS:-}
ONLY=${ONLY:-}
VERBOSE=${VERBOSE:-0}

for b in "$QEMU_IO_BIN" "$QEMU_NBD_BIN"; do
    if [ ! -x "$b" ]; then
        echo "run.sh: $b missing (apt-get install qemu-utils)" >&2
        exit 2
    fi
done
if ! command -v python3 >/dev/null; then
    echo "run.sh: python3 (>= 3.6) is required by ./check" >&2
    exit 2
fi

# No '.' in the default: tests 197 and 215 refuse to run ("Suspicious
# TEST_DIR") unless the scratch path is made of [-_a-zA-Z0-9/] only.
case "${WORKDIR:-}$SHM_DIR" in
    *[^-_a-zA-Z0-9/]*)
        echo "run.sh: WORKDIR/SHM_DIR may only contain [-_a-zA-Z0-9/]" \
             "(tests 197 and 215 skip otherwise): ${WORKDIR:-} $SHM_DIR" >&2
        exit 2 ;;
esac
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/iotests-run-XXXXXX)}
mkdir -p "$WORKDIR/bin" "$WORKDIR/refbin" "$WORKDIR/results"
WORKDIR=$(readlink -f "$WORKDIR")

# The binaries are reached through symlinks named "qemu-img": qemu-img
# prefixes its messages with basename(argv[0]) and the reference outputs
# expect "qemu-img: ...".
ln -sfn "$QIMG" "$WORKDIR/bin/qemu-img"
if [ -x "$REF_QIMG" ]; then
    ln -sfn "$(readlink -f "$REF_QIMG")" "$WORKDIR/refbin/qemu-img"
fi

# ./check refuses to start without an executable QEMU_PROG (qemu-system-*)
# and QSD_PROG (qemu-storage-daemon), and runs "$QEMU_PROG -machine help".
# The stub answers that with nothing, "-drive format=help" with the block
# driver list of the Debian qemu 7.2 build (as in its "qemu-img --help") and
# "-device help" with virtio-blk/virtio-scsi, so that _require_drivers,
# supported_formats() and iotests.py's virtio-blk check do not skip
# qemu-img-only tests; it fails for everything else (tests that need a VM
# then fail or skip).
cat > "$WORKDIR/bin/qemu-system-x86_64" <<'EOF'
#!/bin/sh
case "$*" in
    *"-machine help"*|*"-M help"*) exit 0 ;;
    *"format=help"*)
        f="blkdebug blklogwrites blkverify bochs cloop compress copy-before-write copy-on-read dmg file ftp ftps gluster host_cdrom host_device http https iscsi iser luks nbd nfs null-aio null-co nvme parallels preallocate qcow qcow2 qed quorum raw rbd replication snapshot-access ssh throttle vdi vhdx vmdk vpc vvfat"
        echo "Supported formats: $f"
        echo "Supported formats (read-only): $f"
        exit 0 ;;
    *"-device help"*)
        # iotests.py refuses to run any python test unless virtio-blk is
        # listed; the python tests that need no VM then run normally.
        echo 'Storage devices:'
        echo 'name "virtio-blk-pci", bus PCI, alias "virtio-blk"'
        echo 'name "virtio-scsi-pci", bus PCI, alias "virtio-scsi"'
        exit 0 ;;
esac
echo "qemu-system stub: no qemu-system on this machine" >&2
exit 1
EOF
cat > "$WORKDIR/bin/qemu-storage-daemon" <<'EOF'
#!/bin/sh
echo "qemu-storage-daemon stub: not available" >&2
exit 1
EOF
chmod +x "$WORKDIR/bin/qemu-system-x86_64" "$WORKDIR/bin/qemu-storage-daemon"

# Job list: "fmt test flags" per line.
JOBLIST=$WORKDIR/jobs.txt
: > "$JOBLIST"
if [ $# -gt 0 ]; then
    for a in "$@"; do
        IFS=: read -r fmt t flags <<< "$a"
        echo "$fmt $t ${flags:--}" >> "$JOBLIST"
    done
else
    if [ ! -f "$LIST" ]; then
        echo "run.sh: no list $LIST" >&2
        exit 2
    fi
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$LIST" |
    while read -r fmt t flags _; do
        flags=${flags:--}
        if [ -n "$FMTS" ] && ! [[ ",$FMTS," == *",$fmt,"* ]]; then
            continue
        fi
        case "$ONLY" in
            "") ;;
            out) [[ ",$flags," == *",ref,"* ]] && continue ;;
            *) [[ ",$flags," == *",$ONLY,"* ]] || continue ;;
        esac
        echo "$fmt $t $flags"
    done >> "$JOBLIST"
fi

export QIMG IOTESTS QEMU_PYTHON TEST_TIMEOUT RETRIES REF_QIMG QEMU_IO_BIN \
       QEMU_NBD_BIN SHM_DIR WORKDIR VERBOSE

# reap_leftovers SCRATCH SOCKDIR: a test that fails half-way can leave the qemu-nbd
# daemons it forked; end those (by pid) whose command line names this test's dirs.
reap_leftovers() {
    local p cmd
    for p in /proc/[0-9]*; do
        cmd=$( { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null) || continue
        case "$cmd" in
            *qemu-nbd*"$1"*|*qemu-nbd*"$2"*) kill "${p#/proc/}" 2>/dev/null ;;
        esac
    done
}

# exec_check BINDIR DIR FMT NAME: run one test with $BINDIR/qemu-img as
# QEMU_IMG_PROG, scratch in DIR; prints one of pass fail skip timeout noreport
exec_check() {
    local bindir=$1 dir=$2 fmt=$3 name=$4
    mkdir -p "$dir/scratch"
    local sock
    sock=$(mktemp -d /tmp/iots.XXXXXX)   # short: unix socket paths <= 107
    local pp=$IOTESTS
    [ -n "$QEMU_PYTHON" ] && pp=$pp:$QEMU_PYTHON
    # Tests run with the iotests dir as cwd and some create files there
    # (e.g. 162's socket "42"), so each run gets its own hard-linked copy
    # (a plain copy where hard links are impossible).  It must not be a
    # symlink: ./check would then cd back to the original.
    local cwd=$dir/iotests
    rm -rf "$cwd"
    cp -al "$IOTESTS" "$cwd" 2>/dev/null || { rm -rf "$cwd"; cp -r "$IOTESTS" "$cwd"; }
    rm -rf "$cwd/.last-elapsed-cache" "$cwd/scratch"
    (
        cd "$cwd" &&
        env -u QEMU_IMG_OPTIONS -u QEMU_IO_OPTIONS -u QEMU_NBD_OPTIONS \
            -u IMGOPTS -u IMGPROTO -u IMGFMT -u IMGOPTSSYNTAX \
            -u CACHEMODE -u AIOMODE -u VALGRIND_QEMU -u GDB_OPTIONS \
            QEMU_IMG_PROG="$bindir/qemu-img" \
            QEMU_IO_PROG="$QEMU_IO_BIN" \
            QEMU_NBD_PROG="$QEMU_NBD_BIN" \
            QEMU_PROG="$WORKDIR/bin/qemu-system-x86_64" \
            QSD_PROG="$WORKDIR/bin/qemu-storage-daemon" \
            PYTHONPATH="$pp" \
            TEST_DIR="$dir/scratch" SOCK_DIR="$sock" \
            timeout -k 10 "$TEST_TIMEOUT" \
            python3 ./check -tap "-$fmt" "$name" < /dev/null
    ) > "$dir/log" 2>&1
    local rc=$?
    reap_leftovers "$dir/scratch" "$sock"; sleep 1; reap_leftovers "$dir/scratch" "$sock"
    rm -rf "$sock" "$cwd"
    if grep -qx "ok $fmt $name" "$dir/log"; then
        echo pass
    elif grep -qx "ok $fmt $name # SKIP" "$dir/log"; then
        echo skip
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo timeout
    elif grep -qx "not ok $fmt $name" "$dir/log"; then
        echo fail
    else
        echo noreport
    fi
}

# output_of DIR NAME: the test's output file (check deletes .out.bad when
# the output equals the reference .out)
output_of() {   # output_of DIR FMT NAME
    if [ -f "$1/scratch/$3.out.bad" ]; then
        echo "$1/scratch/$3.out.bad"
    else
        reference_of "$2" "$3"
    fi
}

reference_of() {   # reference_of FMT NAME (as ./check's find_reference)
    local b
    for b in "$IOTESTS/$2" "$IOTESTS/tests/$2"; do
        if [ -f "$b.out.$1" ]; then echo "$b.out.$1"; return; fi
        if [ -f "$b.out" ]; then echo "$b.out"; return; fi
    done
    echo "$IOTESTS/$2.out"
}

explain() {   # explain STATUS DIR NAME
    case "$1" in
        skip) echo "skipped: $(head -c 200 "$2/scratch/$3.notrun" 2>/dev/null | tr '\n' ' ')" ;;
        timeout) echo "timeout after ${TEST_TIMEOUT}s" ;;
        fail) echo "output mismatch or non-zero exit" ;;
        noreport) echo "check did not report, see $2/log" ;;
        *) echo "$1" ;;
    esac
}

# attempt FMT NAME FLAGS D: one try; sets $status and $reason
attempt() {
    local fmt=$1 name=$2 flags=$3 d=$4
    rm -rf "$d"
    mkdir -p "$d"
    sd=$d
    if [[ ",$flags," == *",shm,"* ]] && [ -d "$SHM_DIR" ] && [ -w "$SHM_DIR" ]; then
        sd=$(mktemp -d "$SHM_DIR/iotests-XXXXXX")
        ln -s "$sd" "$d/shm"
    fi
    status="" reason=""
    local st
    if [[ ",$flags," == *",ref,"* ]]; then
        if [ ! -x "$WORKDIR/refbin/qemu-img" ]; then
            status=FAIL reason="differential test needs REF_QIMG=$REF_QIMG"
            return
        fi
        local rst
        rst=$(exec_check "$WORKDIR/refbin" "$sd/ref" "$fmt" "$name")
        st=$(exec_check "$WORKDIR/bin" "$sd" "$fmt" "$name")
        if [ "$rst" = skip ] || [ "$rst" = timeout ] || [ "$rst" = noreport ]; then
            status=FAIL reason="reference run with $REF_QIMG: $(explain "$rst" "$sd/ref" "$name")"
        elif [ "$st" = skip ] || [ "$st" = timeout ] || [ "$st" = noreport ]; then
            status=FAIL reason="$(explain "$st" "$sd" "$name")"
        else
            # normalise the two runs' scratch paths before comparing
            sed "s#$sd/ref/scratch#TEST_DIR#g" "$(output_of "$sd/ref" "$fmt" "$name")" > "$d/expected.out"
            sed "s#$sd/scratch#TEST_DIR#g" "$(output_of "$sd" "$fmt" "$name")" > "$d/actual.out"
            if cmp -s "$d/expected.out" "$d/actual.out"; then
                status=PASS
                rm -f "$d/expected.out" "$d/actual.out"
            else
                status=FAIL reason="output differs from real qemu-img's (differential)"
                diff -u "$d/expected.out" "$d/actual.out" > "$d/diff" 2>&1
                reason="$reason; diff: $d/diff"
            fi
        fi
    else
        st=$(exec_check "$WORKDIR/bin" "$sd" "$fmt" "$name")
        if [ "$st" = pass ]; then
            status=PASS
        else
            status=FAIL reason=$(explain "$st" "$sd" "$name")
            if [ "$st" = fail ] && [ -f "$sd/scratch/$name.out.bad" ]; then
                diff -u "$(reference_of "$fmt" "$name")" "$sd/scratch/$name.out.bad" > "$d/diff" 2>&1
                reason="$reason; diff: $d/diff"
            fi
        fi
    fi
}

run_one() {
    local fmt=$1 t=$2 flags=${3:--}
    local name=${t##*/}
    local d=$WORKDIR/results/$fmt-$name
    local sd status reason try=0 note="" t0=$SECONDS
    while :; do
        attempt "$fmt" "$name" "$flags" "$d"
        if [ "$status" = PASS ] || [ "$try" -ge "$RETRIES" ]; then
            break
        fi
        case "$reason" in timeout*) break ;; esac   # a hang is no flake
        try=$((try + 1))
        note=" (passed on retry $try; first try: ${reason%%;*})"
        mv "$d" "$d.try$try" 2>/dev/null
    done
    local took="[$((SECONDS - t0))s]"
    if [ "$status" = PASS ]; then
        echo "PASS $fmt $name $took${note}"
        rm -rf "$sd/scratch" "$sd/ref/scratch"
        if [ "$sd" != "$d" ]; then rm -rf "$sd" "$d/shm"; sd=$d; fi
    else
        echo "FAIL $fmt $name $took ($reason)"
        if [ "$VERBOSE" = 1 ] && [ -f "$d/diff" ]; then
            sed 's/^/    /' "$d/diff" | head -200
        fi
    fi
    if [ "$sd" != "$d" ]; then   # tmpfs: keep only logs and outputs
        find "$sd" -type f ! -name '*.out.bad' ! -name log ! -name '*.notrun' -delete 2>/dev/null
    fi
}
export -f reap_leftovers exec_check output_of reference_of explain attempt run_one

start=$(date +%s)
RESULTS=$WORKDIR/results.txt
xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1" "$2"' < "$JOBLIST" | tee "$RESULTS"
end=$(date +%s)

pass=$(grep -c '^PASS ' "$RESULTS")
fail=$(grep -c '^FAIL ' "$RESULTS")
total=$(wc -l < "$JOBLIST")
if [ $((pass + fail)) -lt "$total" ]; then
    fail=$((total - pass))
fi
echo "# binary: $QIMG"
echo "# iotests: $IOTESTS  workdir: $WORKDIR  jobs: $JOBS  time: $((end - start))s"
if [ "$fail" -gt 0 ]; then
    echo "# failing:" $(grep '^FAIL ' "$RESULTS" | awk '{print $2":"$3}' | sort)
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
