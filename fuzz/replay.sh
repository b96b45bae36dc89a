#!/bin/sh
# `make replay` (part of `make test`): every fuzz target, built with the normal toolchain,
# over corpus/seeds and corpus/regressions; then `qimg check`, `check --output=json`,
# `info` and `map` on every regression file. Passes when nothing dies of a signal, nothing
# hangs (30 s each) and every exit code is one qimg documents (check: 0 1 2 3 63; info, map:
# 0 1).
set -u
B=${BUILD:-build}
R=$(pwd)
fail=0
files=$(find corpus/seeds corpus/regressions -type f ! -name '*.md' ! -name '.*' | sort)
n=$(echo "$files" | grep -c .)
for t in "$@"; do
    # shellcheck disable=SC2086
    if ! (cd /tmp && timeout 300 "$R/$B/fuzz-replay/fuzz_$t" $(echo "$files" | sed "s|^|$R/|")) >/dev/null 2>"$B/fuzz-replay/$t.err"; then
        echo "replay: fuzz_$t failed on the corpus (see $B/fuzz-replay/$t.err)"; fail=1
    fi
done
runs=0
for f in $(find corpus/regressions -type f ! -name '*.md' ! -name '.*' | sort); do
    for cmd in "check" "check --output=json" "info" "map" "map --output=json"; do
        # shellcheck disable=SC2086
        timeout 30 "$B/qimg" $cmd "$f" >/dev/null 2>&1
        rc=$?
        runs=$((runs + 1))
        case "$cmd:$rc" in
        check*:0|check*:1|check*:2|check*:3|check*:63|info:0|info:1|map*:0|map*:1) ;;
        *) echo "replay: qimg $cmd $f: exit $rc (signal or undocumented code)"; fail=1 ;;
        esac
    done
done
[ $fail = 0 ] && echo "replay: $# fuzz targets over $n inputs, $runs qimg runs on regressions: ok"
exit $fail
