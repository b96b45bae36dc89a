#!/bin/sh
# `make fuzz-cov`: runs the coverage build of each target over corpus/seeds,
# corpus/regressions and the corpus its fuzz runs saved ($FUZZ_BUILD/corpus/<target>), merges
# the profiles and prints llvm-cov's per-directory line/branch coverage of the code the
# targets exercise. Per-file detail: $FUZZ_BUILD/cov/report.txt.
set -eu
B=${FUZZ_BUILD:-build-fuzz}
case "$B" in /*) ;; *) B="$PWD/$B" ;; esac
R=$PWD
PROFDATA=$(command -v llvm-profdata-14 || command -v llvm-profdata)
COV=$(command -v llvm-cov-14 || command -v llvm-cov)
C="$B/cov"
rm -f "$C"/*.profraw "$C"/*.profdata
objs=""
for t in "$@"; do
    dirs="$R/corpus/seeds $R/corpus/regressions"
    [ -d "$B/corpus/$t" ] && dirs="$dirs $B/corpus/$t"
    # shellcheck disable=SC2086
    find $dirs -type f ! -name '*.md' | sort > "$C/$t.list"
    # chunks of 500 files per process (argument length)
    split -l 500 "$C/$t.list" "$C/$t.chunk."
    i=0
    for chunk in "$C/$t.chunk."*; do
        (cd /tmp && FUZZ_REPAIR_STRICT=0 LLVM_PROFILE_FILE="$C/$t.$i.profraw" xargs "$C/fuzz_$t" < "$chunk" \
            >/dev/null 2>&1) || echo "coverage: fuzz_$t failed on $chunk" >&2
        i=$((i + 1))
    done
    rm -f "$C/$t.chunk."*
    "$PROFDATA" merge -sparse "$C/$t".*.profraw -o "$C/$t.profdata"
    n=$(wc -l < "$C/$t.list")
    printf '%-10s %6s inputs  ' "$t" "$n"
    "$COV" report "$C/fuzz_$t" -instr-profile="$C/$t.profdata" src/format src/block checker repair \
        2>/dev/null | tail -1 | awk '{printf "regions %s  functions %s  lines %s  branches %s (of the project code linked into the target)\n", $4, $7, $10, $13}'
    objs="$objs -object $C/fuzz_$t"
done
"$PROFDATA" merge -sparse "$C"/*.profraw -o "$C/all.profdata"
first=$(echo $objs | awk '{print $2}')
rest=$(echo $objs | cut -d' ' -f3-)
# shellcheck disable=SC2086
"$COV" report "$first" $rest -instr-profile="$C/all.profdata" src/format src/block checker repair \
    > "$C/report.txt" 2>/dev/null
echo "all targets together, per file (lines): $C/report.txt"
awk 'NR>2 && $1 ~ /\// {split($1,a,"/"); d=a[1]"/"a[2]; if (a[1]!="src") d=a[1]; L[d]+=$8; M[d]+=$9} END {for (d in L) printf "  %-12s lines %6d  missed %6d  covered %.1f%%\n", d, L[d], M[d], 100*(L[d]-M[d])/L[d]}' "$C/report.txt" | sort
tail -1 "$C/report.txt" | awk '{print "  TOTAL        regions " $4 "  functions " $7 "  lines " $10 "  branches " $13}'
