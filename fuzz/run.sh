#!/bin/sh
# Runs fuzz targets for a fixed time each, JOBS at a time, and prints one summary line per
# target (executions, exec/s, coverage, new corpus units, crashes). Exit 1 if any target
# found a crash or a hang; the input is kept under $FUZZ_BUILD/artifacts/<target>/ (copy it
# to corpus/regressions/ once the bug is fixed).
#   usage: fuzz/run.sh SECONDS JOBS TARGET...     (TARGET: header ... read, afl-check, afl-map)
# FUZZ_SEED=N: fixed RNG seed for every fuzzer (make fuzz-smoke: a gate must be reproducible;
#   a slower machine runs a prefix of the same mutation sequence). Unset: random (make fuzz).
# FUZZ_RUNS="target=N ...": stop a libFuzzer target after N inputs (SECONDS stays a cap):
#   with FUZZ_SEED the same inputs on every machine, so a run verified here is the run CI
#   does (or a prefix of it, if CI's machine is slower than the cap allows).
# FUZZ_CORPUS=DIR: where libFuzzer keeps new units (default $FUZZ_BUILD/corpus); fuzz-smoke
#   starts from an empty one so a local run is the run CI does on a clean clone.
set -u
secs=$1; jobs=$2; shift 2
B=${FUZZ_BUILD:-build-fuzz}
case "$B" in /*) ;; *) B="$PWD/$B" ;; esac   # the check/read targets chdir to a scratch dir
R="$PWD"
C=${FUZZ_CORPUS:-$B/corpus}
case "$C" in /*) ;; *) C="$PWD/$C" ;; esac
seed=${FUZZ_SEED:-}
mkdir -p "$B/logs"

run_one() {
    t=$1
    log="$B/logs/$t.log"
    case "$t" in
    afl-*)
        cmd=${t#afl-}
        out="$B/afl-out/$cmd"
        rm -rf "$out"; mkdir -p "$out"
        # map needs a format it can read: the same seeds serve both commands
        AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        AFL_SKIP_CRASHES=1 AFL_QUIET=1 \
            timeout -k 10 $((secs + 60)) afl-fuzz -V "$secs" -m none -t 5000 ${seed:+-s "$seed"} \
            -i corpus/seeds -o "$out" -x fuzz/qcow2.dict -- "$B/afl/qimg" "$cmd" @@ \
            >"$log" 2>&1
        rc=$?
        st="$out/default/fuzzer_stats"
        if [ ! -f "$st" ]; then
            echo "$t: afl-fuzz did not start (rc $rc), see $log"; tail -5 "$log"; return 1
        fi
        get() { sed -n "s/^$1 *: *//p" "$st" | head -1; }
        crashes=$(find "$out/default/crashes" "$out/default/hangs" -type f ! -name README.txt 2>/dev/null | wc -l)
        printf '%-12s %6ss  execs %-9s exec/s %-8s edges %-8s corpus %-6s crashes+hangs %s\n' \
            "$t" "$secs" "$(get execs_done)" "$(get execs_per_sec)" "$(get bitmap_cvg)" \
            "$(get corpus_count)" "$crashes"
        if [ "$crashes" -gt 0 ]; then
            mkdir -p "$B/artifacts/$t"
            cp "$out"/default/crashes/id* "$out"/default/hangs/id* "$B/artifacts/$t/" 2>/dev/null
            echo "$t: crash/hang inputs in $B/artifacts/$t/"; return 1
        fi
        return 0 ;;
    esac
    mkdir -p "$C/$t" "$B/artifacts/$t"
    runs=$(echo " ${FUZZ_RUNS:-} " | sed -n "s/.* $t=\([0-9]*\) .*/\1/p")
    timeout -k 10 $((secs + 120)) "$B/fuzz_$t" -max_total_time="$secs" -timeout=10 ${seed:+-seed="$seed"} ${runs:+-runs="$runs"} \
        -rss_limit_mb=2048 -max_len=65536 -close_fd_mask=3 -print_final_stats=1 \
        -dict="$R/fuzz/qcow2.dict" -artifact_prefix="$B/artifacts/$t/" \
        "$C/$t" "$R/corpus/seeds" "$R/corpus/regressions" >"$log" 2>&1
    rc=$?
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    printf '%-12s %6ss  execs %-9s exec/s %-8s cov %-6s ft %-7s new-units %-5s rc %s\n' \
        "$t" "$secs" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
        "${cov:-?}" "${ft:-?}" "$(stat new_units_added)" "$rc"
    if [ "$rc" -ne 0 ]; then
        echo "$t: FAILED (rc $rc), log $log:"
        grep -m1 -A25 'ERROR: \|==ERROR\|runtime error\|fuzz invariant\|deadly signal\|timeout' "$log"
        ls "$B/artifacts/$t/"
        return 1
    fi
    return 0
}

fail=0
# a simple job pool: at most $jobs targets at once
status_dir=$(mktemp -d)
running=""
for t in "$@"; do
    while :; do
        alive=""
        for p in $running; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        running=$alive
        [ "$(echo $running | wc -w)" -lt "$jobs" ] && break
        sleep 1
    done
    ( run_one "$t" > "$status_dir/$t.out" 2>&1; echo $? > "$status_dir/$t.rc" ) &
    running="$running $!"
done
wait
for t in "$@"; do
    cat "$status_dir/$t.out"
    [ "$(cat "$status_dir/$t.rc" 2>/dev/null || echo 1)" = 0 ] || fail=1
done
rm -rf "$status_dir"
[ $fail = 0 ] && echo "fuzz: all $# targets ran ${secs}s without a crash" || echo "fuzz: FAILURES"
exit $fail
