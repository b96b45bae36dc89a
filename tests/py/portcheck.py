"""Shared steps of the tests of commands that change an image in place through the write
port (amend, bitmap, commit, rebase, resize, snapshot): the same command run by the real
qemu-img and by qimg on copies of one directory, a cut after every write
(QIMG_FAULT_AFTER_WRITES=n: qimg exits 86 right after its n-th write), --dry-run leaving
every byte alone, --journal followed by `qimg undo` putting every byte back.

Each helper asserts only what every caller asserted the same way; what a command checks
beyond that stays in its test."""

import filecmp
import os
import shutil

import qemu

FAULT_EXIT = 86   # the exit status of a run cut by QIMG_FAULT_AFTER_WRITES


def build_orig(tmp_path, build, name='orig'):
    """A directory tmp_path/name with build's images in it (its path as a string)."""
    orig = tmp_path / name
    orig.mkdir()
    build(str(orig))
    return str(orig)


def read_all(d):
    """Every file of directory d: {name: bytes}."""
    return {n: open(os.path.join(d, n), 'rb').read() for n in sorted(os.listdir(d))}


def same_files(a, b):
    """Directories a (qemu-img's result) and b hold the same files, byte for byte."""
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for n in names:
        pa, pb = os.path.join(a, n), os.path.join(b, n)
        assert os.path.getsize(pa) == os.path.getsize(pb), n
        assert filecmp.cmp(pa, pb, shallow=False), '%s differs from qemu-img\'s' % n


def run_pair(tmp_path, build, cmd, args, env=None):
    """build into tmp_path/orig; then `qemu-img CMD ARGS` on a copy tmp_path/qemu and qimg
    (under the name qemu-img, so messages compare) on a copy tmp_path/qimg. Returns
    (orig, a, b, ra, rb): the directories and the (rc, out, err) of each run."""
    orig = build_orig(tmp_path, build)
    a = qemu.copy_dir(orig, str(tmp_path / 'qemu'))
    b = qemu.copy_dir(orig, str(tmp_path / 'qimg'))
    ra = qemu.run(qemu.tool_path('qemu'), cmd, *args, cwd=a)
    rb = qemu.run(qemu.tool_path('qimg'), cmd, *args, cwd=b, env=env)
    return orig, a, b, ra, rb


def cut_dirs(tmp_path, orig, cmd, args, limit=2000):
    """Runs `qimg CMD ARGS` cut after write 1, 2, ... on fresh copies tmp_path/cutN of orig
    and yields (n, directory) for each cut run (the directory is removed when the caller
    moves on). Stops when a run is not cut; that run must succeed, and at least one run
    must have been cut. n must stay below limit. The last n (the run that completed) is the
    generator's return value."""
    n = 1
    while True:
        d = qemu.copy_dir(orig, str(tmp_path / ('cut%d' % n)))
        rc, out, err = qemu.run(qemu.QIMG, cmd, *args, cwd=d,
                                env={'QIMG_FAULT_AFTER_WRITES': str(n)})
        if rc != FAULT_EXIT:
            assert rc == 0, err
            shutil.rmtree(d)
            assert n > 1
            return n
        yield n, d
        shutil.rmtree(d)
        n += 1
        assert n < limit


def cut_at_every_write(tmp_path, orig, cmd, args, on_cut, limit=2000):
    """cut_dirs with on_cut(n, directory) called on every cut run; returns the n of the run
    that completed (so n - 1 cuts were tested)."""
    gen = cut_dirs(tmp_path, orig, cmd, args, limit=limit)
    while True:
        try:
            n, d = next(gen)
        except StopIteration as stop:
            return stop.value
        on_cut(n, d)


def no_corruption(img):
    """An on_cut check: the real qemu-img check finds no corruption and no check error in
    img (leaks allowed: a cut between an allocation and its use leaks, as a crash of qemu
    does)."""
    def check(n, d):
        rc, j, out, err = qemu.check_json('qemu', img, cwd=d)
        assert j is not None and not j.get('corruptions') and not j.get('check-errors'), \
            'cut after write %d: %s %s' % (n, out, err)
    return check


def journal_cut_then_undo(tmp_path, orig, cmd, args, img='img', limit=2000):
    """`qimg CMD --journal J ARGS` cut after every write (a fresh journal tmp_path/jN for
    each run): `qimg undo J IMG` succeeds and leaves every file of the copy as in orig.
    Returns the n of the run that completed."""
    before = read_all(orig)
    n = 1
    while True:
        d = qemu.copy_dir(orig, str(tmp_path / ('cut%d' % n)))
        jr = os.path.join(str(tmp_path), 'j%d' % n)
        rc, out, err = qemu.run(qemu.QIMG, cmd, '--journal', jr, *args, cwd=d,
                                env={'QIMG_FAULT_AFTER_WRITES': str(n)})
        if rc != FAULT_EXIT:
            assert rc == 0, err
            return n
        rc, out, err = qemu.qimg('undo', jr, img, cwd=d)
        assert rc == 0, 'cut after write %d: %s%s' % (n, out, err)
        assert read_all(d) == before, 'cut after write %d' % n
        shutil.rmtree(d)
        n += 1
        assert n < limit


def dry_run(tmp_path, orig, cmd, args, tool=None):
    """`qimg CMD --dry-run ARGS` on a copy tmp_path/dry of orig (tool: the binary, qimg by
    default): asserts that no byte of any file changed and returns (rc, out, err)."""
    d = qemu.copy_dir(orig, str(tmp_path / 'dry'))
    before = read_all(d)
    r = qemu.run(tool or qemu.QIMG, cmd, '--dry-run', *args, cwd=d)
    assert read_all(d) == before
    return r


def real_run_changes(tmp_path, orig, cmd, args, check=True):
    """The real `qemu-img CMD ARGS` on a copy tmp_path/ref of orig: (rc, out, err) and
    whether it changed any byte (a dry run's plan lists writes exactly then)."""
    ref = qemu.copy_dir(orig, str(tmp_path / 'ref'))
    r = qemu.run(qemu.QEMU_IMG, cmd, *args, cwd=ref, check=check)
    return r, read_all(ref) != read_all(orig)


def journal_pair(tmp_path, orig, cmd, args, journal):
    """The real `qemu-img CMD ARGS` on a copy tmp_path/ref and `qimg CMD --journal
    tmp_path/JOURNAL ARGS` (as qemu-img) on a copy tmp_path/j. Returns (d, ref, before, jr,
    ra, rb): qimg's directory, qemu-img's, the files before, the journal, both results."""
    d = qemu.copy_dir(orig, str(tmp_path / 'j'))
    ref = qemu.copy_dir(orig, str(tmp_path / 'ref'))
    before = read_all(d)
    jr = str(tmp_path / journal)
    ra = qemu.run(qemu.QEMU_IMG, cmd, *args, cwd=ref)
    rb = qemu.run(qemu.tool_path('qimg'), cmd, '--journal', jr, *args, cwd=d)
    return d, ref, before, jr, ra, rb


def undo_restores(jr, img, d, before):
    """`qimg undo JR IMG` in d succeeds and every file is as before."""
    rc, out, err = qemu.qimg('undo', jr, img, cwd=d)
    assert rc == 0, out + err
    assert read_all(d) == before
