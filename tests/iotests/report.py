#!/usr/bin/env python3
"""reports/iotests.md from one `make iotests` run: pass count per qemu-img subcommand (a
test counts under every subcommand it calls, from test-matrix.tsv), time, each failure and
the accepted differences (the "## NNN ..." sections of accepted-differences.md)."""
import re
import sys

out, matrix, accepted = sys.argv[1:4]
res = {}
time_s = None
for line in open(out):
    m = re.match(r'(PASS|FAIL) (\S+) (\S+) \[(\d+)s\](.*)', line)
    if m:
        res[(m.group(2), m.group(3))] = (m.group(1), m.group(5).strip())
    m = re.search(r'time: (\d+)s', line)
    if m:
        time_s = int(m.group(1))
subs = {}
for line in open(matrix):
    f = line.rstrip('\n').split('\t')
    if f[0] == 'fmt' or len(f) < 5:
        continue
    subs[(f[0], f[1])] = [c.split(':')[0] for c in f[4].split() if ':' in c]
areas = {}
for key, (st, _) in res.items():
    for s in subs.get(key, ['-']) or ['-']:
        a = areas.setdefault(s, [0, 0])
        a[0 if st == 'PASS' else 1] += 1
npass = sum(1 for s, _ in res.values() if s == 'PASS')
print('# QEMU iotests with qimg as qemu-img\n')
print('Written by `make iotests` (tests/iotests/): the runs of tests/iotests/baseline.txt, '
      'which pass with the real qemu-img 7.2 here, run with build/qimg alone as qemu-img '
      '(the real qemu-io and qemu-nbd read and write the images).\n')
print(f'**{npass} passed, {len(res) - npass} failed** of {len(res)} runs'
      + (f', {time_s} s' if time_s is not None else '') + '.\n')
print('| qemu-img subcommand called | runs passed | runs failed |')
print('| --- | --- | --- |')
for s in sorted(areas, key=lambda s: -sum(areas[s])):
    print(f'| {s} | {areas[s][0]} | {areas[s][1]} |')
print('\n## Failing runs\n')
fails = sorted(k for k, v in res.items() if v[0] == 'FAIL')
if not fails:
    print('None.')
for k in fails:
    why = re.sub(r'; diff: \S+\)$', ')', res[k][1].strip())
    if why.startswith('(') and why.endswith(')'):
        why = why[1:-1]  # only the outer parentheses: the reason may hold its own
    print(f'- {k[0]} {k[1]} (calls {" ".join(subs.get(k, []))}): {why}')
print('\n## Accepted differences\n')
acc = [l[3:].strip() for l in open(accepted) if re.match(r'## \d', l)]
print('Deliberate, documented qimg improvements; the exact diffs and reasons are in '
      'tests/iotests/accepted-differences.md:\n')
print('\n'.join(f'- {a}' for a in acc) if acc else 'None.')
