"""scripts/ensure-deps.sh and the Makefile's use of it: `make` and `make demo` check the
build packages (not the test oracle) before compiling, as `make test` checks its own; as a
non-root user a missing package gives the apt-get line and stops the build. dpkg-query and
id are stand-ins here, so nothing is installed."""

import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shims(tmp_path, missing=(), name='shim'):
    d = tmp_path / name
    d.mkdir()
    cases = ''.join('%s) echo "deinstall ok config-files"; exit 0;; ' % p for p in missing)
    (d / 'dpkg-query').write_text('#!/bin/sh\necho "$3" >> %s/queried\n'
                                  'case "$3" in %s*) echo "install ok installed";; esac\n'
                                  % (d, cases))
    (d / 'id').write_text('#!/bin/sh\necho 1000\n')          # not root: never installs
    for f in ('dpkg-query', 'id'):
        (d / f).chmod(0o755)
    return d


def run(cmd, shim, cwd=ROOT):
    env = dict(os.environ, PATH='%s:%s' % (shim, os.environ['PATH']))
    # a clean make, as on a fresh clone: nothing of the make running this test (`make asan`
    # passes BUILD=build-asan, OPT, SANFLAGS through the environment)
    for v in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES', 'BUILD', 'OPT', 'SANFLAGS',
              'CFLAGS', 'LDFLAGS', 'CC'):
        env.pop(v, None)
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=300)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def queried(shim):
    f = shim / 'queried'
    return f.read_text().split() if f.exists() else []


def test_groups(tmp_path):
    shim = shims(tmp_path)
    rc, _, err = run(['scripts/ensure-deps.sh', 'build'], shim)
    assert rc == 0, err
    build = queried(shim)
    assert 'libzstd-dev' in build and 'qemu-utils' not in build and 'libcmocka-dev' not in build
    (shim / 'queried').unlink()
    assert run(['scripts/ensure-deps.sh'], shim)[0] == 0
    test = queried(shim)
    assert set(build) < set(test) and 'qemu-utils' in test and 'python3-pytest' in test
    rc, _, err = run(['scripts/ensure-deps.sh', 'nonsense'], shim)
    assert rc == 2 and "unknown package group 'nonsense'" in err


def test_missing_as_user_names_apt_line(tmp_path):
    shim = shims(tmp_path, missing=['libzstd-dev', 'qemu-utils'])
    rc, _, err = run(['scripts/ensure-deps.sh', 'build'], shim)
    assert rc == 1
    assert err.splitlines() == ['missing packages: libzstd-dev',
                                'run: sudo apt-get install -y libzstd-dev']


def test_make_demo_stops_before_compiling(tmp_path):
    """A fresh clone without libzstd-dev: make demo names the package and compiles nothing;
    once it is there the stamp makes the next make ask no more."""
    src = tmp_path / 'src'     # the sources as a clone has them, without any build
    shutil.copytree(ROOT, str(src), ignore=shutil.ignore_patterns(
        'build*', '.git', 'corpus', 'reports', '__pycache__', '.pytest_cache'))
    shim = shims(tmp_path, missing=['libzstd-dev'])
    rc, out, err = run(['make', 'demo'], shim, cwd=str(src))
    assert rc != 0
    assert 'run: sudo apt-get install -y libzstd-dev' in err
    assert not (src / 'build' / 'obj').exists() and 'cc ' not in out
    ok = shims(tmp_path, name='all-there')
    rc, out, err = run(['make', '-j2', 'build/obj/src/util/size.o'], ok, cwd=str(src))
    assert rc == 0, err
    assert (src / 'build' / '.deps-build').exists()
    assert queried(ok)
    (ok / 'queried').unlink()
    rc, out, err = run(['make', 'build/obj/src/util/xalloc.o'], ok, cwd=str(src))
    assert rc == 0, err
    assert queried(ok) == []          # the stamp: no second query
