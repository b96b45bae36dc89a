"""`make demo` (golden/demo/demo.sh): on a copy of the committed damaged sample it checks,
dry-runs, repairs with a journal, checks again, undoes and proves with cmp that the file is
back; exit 0 only when every step behaves. The sample is what its recipe makes."""

import os
import shutil
import subprocess

import qemu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, 'golden', 'demo')


def run_demo(tmp_path, qimg):
    """The demo run from a copy of golden/demo, as on a clean clone (no qemu-img needed)."""
    d = tmp_path / 'demo'
    shutil.copytree(DEMO, str(d))
    before = (d / 'damaged.qcow2').read_bytes()
    # qemu-img and qemu-io must not be needed: stand-ins that leave a mark if called
    trap = tmp_path / 'no-qemu'
    trap.mkdir()
    for tool in ('qemu-img', 'qemu-io'):
        (trap / tool).write_text('#!/bin/sh\ntouch %s/called\nexit 99\n' % trap)
        (trap / tool).chmod(0o755)
    env = dict(os.environ, QIMG=qimg, TMPDIR=str(tmp_path), PATH='%s:/usr/bin:/bin' % trap)
    # the demo line-buffers qimg through stdbuf, an LD_PRELOAD library, which an ASan build's
    # link-order check refuses (`make asan` runs this test on such a build)
    env['ASAN_OPTIONS'] = ':'.join(filter(None, [os.environ.get('ASAN_OPTIONS'),
                                                  'verify_asan_link_order=0']))
    p = subprocess.run([str(d / 'demo.sh')], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=120)
    assert (d / 'damaged.qcow2').read_bytes() == before, 'the demo wrote its sample'
    assert not (trap / 'called').exists(), 'the demo called qemu-img or qemu-io'
    left = [n for n in os.listdir(str(tmp_path)) if n.startswith('qimg-demo.')]
    assert not left, 'temporary directory left behind: %r' % left
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_demo_runs_clean(tmp_path):
    rc, out, err = run_demo(tmp_path, qemu.QIMG)
    assert rc == 0, out + err
    for want in ('$ qimg check disk.qcow2\n', '$ qimg check --output=json disk.qcow2\n',
                 '"kind": "refcount-zero-but-referenced"',
                 'Repair plan (dry run, nothing was written)',
                 '$ qimg check -r all --journal repair.journal disk.qcow2\n',
                 'Double checking the fixed image now...\nNo errors were found on the image.',
                 'Restored \'disk.qcow2\'', 'identical: the file is back',
                 'demo: every step behaved as expected'):
        assert want in out, want
    assert ', expected ' not in out      # no step with another exit code
    # the other helper's rule: a journal only on a real repair, never with --dry-run
    assert not any('--dry-run' in l and '--journal' in l for l in out.splitlines())


def test_demo_fails_when_undo_does_not_restore(tmp_path):
    """A qimg whose undo claims success but writes nothing: cmp catches it, exit 1."""
    fake = tmp_path / 'fake-qimg'
    fake.write_text('#!/bin/sh\n[ "$1" = undo ] && { echo "Restored (not really)"; exit 0; }\n'
                    'exec %s "$@"\n' % qemu.QIMG)
    fake.chmod(0o755)
    rc, out, err = run_demo(tmp_path, str(fake))
    assert rc == 1, out + err
    assert 'demo: FAILED' in err and 'identical' not in out


def test_demo_fails_on_wrong_exit_code(tmp_path):
    """A qimg whose check finds nothing (exit 0): the demo names the step and exits 1."""
    fake = tmp_path / 'fake-qimg'
    fake.write_text('#!/bin/sh\n[ "$1" = check ] && [ "$#" = 2 ] && exit 0\n'
                    'exec %s "$@"\n' % qemu.QIMG)
    fake.chmod(0o755)
    rc, out, _ = run_demo(tmp_path, str(fake))
    assert rc == 1
    assert '(exit code 0, expected 2)' in out


def test_sample_is_what_its_recipe_makes(tmp_path):
    out = tmp_path / 'damaged.qcow2'
    p = subprocess.run([os.path.join(DEMO, 'make-damaged.sh'), str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == open(os.path.join(DEMO, 'damaged.qcow2'), 'rb').read()
    rq = qemu.check('qemu', 'damaged.qcow2', cwd=str(tmp_path))
    ri = qemu.check('qimg', 'damaged.qcow2', cwd=str(tmp_path))
    assert rq[0] == ri[0] == 2 and rq[1] == ri[1] and rq[2] == ri[2]
