#!/usr/bin/env python3
"""Golden regression suite runner (`make golden`, part of `make test`).

For every folder in golden/cases/: unpack the *.gz files into a scratch directory, run each
line of `cmd` there in order with `qemu-img` meaning qimg (a symlink named qemu-img, so
messages carry qemu-img's prefix), and compare stdout, stderr and the exit code with
N.out, N.err, N.rc (golden_cmp: JSON output may carry extra keys).

Environment: QIMG (default build/qimg); QIMG_WRAP, a command prefix such as
"valgrind -q --error-exitcode=99" (the valgrind run; its exit code 99 fails the step).
Arguments: case names to run (default all); -v prints the diff of a failing step;
--steps=1,3 runs only those step numbers (steps 1-2 never write, step 3 is the repair
where there is one, so any subset of 1,2,3 is self-contained; CI's valgrind run uses it).
"""
import difflib
import gzip
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from golden_cmp import same_step  # noqa: E402

CASES = os.path.join(HERE, 'cases')


def filt(text):
    return ''.join(l for l in text.splitlines(True)
                   if not l.startswith('disk size:') and '"actual-size":' not in l)


def read(p):
    with open(p) as f:
        return f.read()


def main(argv):
    verbose = '-v' in argv
    only = None
    for a in argv:
        if a.startswith('--steps='):
            only = {int(x) for x in a[len('--steps='):].split(',')}
    names = [a for a in argv[1:] if not a.startswith('-')] or sorted(os.listdir(CASES))
    qimg = os.path.abspath(os.environ.get('QIMG', os.path.join(HERE, '..', 'build', 'qimg')))
    wrap = shlex.split(os.environ.get('QIMG_WRAP', ''))
    bindir = tempfile.mkdtemp(prefix='qimg-golden-')
    alias = os.path.join(bindir, 'qemu-img')
    os.symlink(qimg, alias)
    failed, steps = [], 0
    timeout = 600 if wrap else 60
    try:
        for name in names:
            case = os.path.join(CASES, name)
            work = os.path.join(bindir, 'w-' + name)
            os.makedirs(work)
            for f in os.listdir(case):
                if f.endswith('.gz'):
                    with gzip.open(os.path.join(case, f)) as i, \
                            open(os.path.join(work, f[:-3]), 'wb') as o:
                        shutil.copyfileobj(i, o)
            for n, line in enumerate(read(os.path.join(case, 'cmd')).splitlines(), 1):
                if only is not None and n not in only:
                    continue
                argv_ = shlex.split(line)
                steps += 1
                try:
                    p = subprocess.run(wrap + [alias] + argv_[1:], cwd=work,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL, timeout=timeout,
                                       env=dict(os.environ, LC_ALL='C'))
                    act = (filt(p.stdout.decode('utf-8', 'replace')),
                           filt(p.stderr.decode('utf-8', 'replace')), p.returncode)
                except subprocess.TimeoutExpired:
                    act = ('', 'TIMEOUT\n', -1)
                exp = (read(os.path.join(case, '%d.out' % n)),
                       read(os.path.join(case, '%d.err' % n)),
                       int(read(os.path.join(case, '%d.rc' % n))))
                if not same_step(line, exp, act):
                    failed.append('%s step %d: %s (exit %d, expected %d)'
                                  % (name, n, line, act[2], exp[2]))
                    if verbose:
                        for label, e, a in (('stdout', exp[0], act[0]), ('stderr', exp[1], act[1])):
                            sys.stdout.writelines(difflib.unified_diff(
                                e.splitlines(True), a.splitlines(True),
                                '%s/%d.%s expected' % (name, n, label), 'qimg'))
            shutil.rmtree(work, True)
    finally:
        shutil.rmtree(bindir, True)
    for f in failed:
        print('golden FAIL:', f)
    print('golden: %d cases, %d steps, %d failed%s' % (len(names), steps, len(failed),
                                                       ' (under %s)' % wrap[0] if wrap else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
