#!/bin/sh
# Runs the pytest suite as one shard per core (PYTEST_SHARD=i/n, see tests/py/conftest.py),
# each with its own temp dir; prints each shard's log and fails if any shard failed.
set -u
PY=${PYTHON:-python3}
N=${PYTEST_JOBS:-$(nproc)}
[ "$N" -ge 1 ] || N=1
dir=$(mktemp -d)
i=0
while [ $i -lt "$N" ]; do
    PYTEST_SHARD="$i/$N" "$PY" -m pytest -q -p no:cacheprovider --basetemp="$dir/t$i" "$@" \
        > "$dir/log$i" 2>&1 &
    eval "pid$i=\$!"
    i=$((i + 1))
done
rc=0
i=0
while [ $i -lt "$N" ]; do
    src=0
    eval "wait \$pid$i" || src=1
    echo "== pytest shard $i/$N"
    if [ $src -eq 0 ]; then tail -n 3 "$dir/log$i"; else cat "$dir/log$i"; rc=1; fi
    i=$((i + 1))
done
rm -rf "$dir"
exit $rc
