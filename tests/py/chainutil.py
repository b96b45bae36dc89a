"""Backing chains for the rebase and commit tests: built with the real qemu-img/qemu-io
in a directory, then run through qemu-img and qimg on copies (see test_rebase.py)."""

import filecmp
import os
import shutil

import qemu

KIB, MIB = 1 << 10, 1 << 20


def layer(name, size='1M', fmt='qcow2', backing=None, backing_fmt=None, data=(), **opts):
    """One image: (name, size, fmt, backing, backing_fmt, data, opts); data holds
    qemu-io commands."""
    return (name, size, fmt, backing, backing_fmt, data, opts)


def build_chain(*layers):
    def build(d):
        for name, size, fmt, backing, bfmt, data, opts in layers:
            p = os.path.join(d, name)
            if fmt == 'raw':
                qemu.make_image(p, size=size, fmt='raw')
            else:
                qemu.make_image(p, size=size, fmt=fmt, backing=backing,
                                backing_fmt=bfmt or ('qcow2' if backing else None), **opts)
            if data:
                qemu.io(p, *data, fmt=fmt, cwd=d)
    return build


def run_pair(tmp_path, build, cmd, args, env=None):
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    a = qemu.copy_dir(str(orig), str(tmp_path / 'qemu'))
    b = qemu.copy_dir(str(orig), str(tmp_path / 'qimg'))
    ra = qemu.run(qemu.tool_path('qemu'), cmd, *args, cwd=a)
    rb = qemu.run(qemu.tool_path('qimg'), cmd, *args, cwd=b, env=env)
    return str(orig), a, b, ra, rb


def same_files(a, b):
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for n in names:
        pa, pb = os.path.join(a, n), os.path.join(b, n)
        assert os.path.getsize(pa) == os.path.getsize(pb), n
        assert filecmp.cmp(pa, pb, shallow=False), '%s differs from qemu-img\'s' % n


def fmt_of(d, name):
    rc, out, _ = qemu.qemu_img('info', '--output=json', '-U', name, cwd=d)
    return qemu.parse_json(out)['format'] if rc == 0 else None


def images(d):
    return sorted(n for n in os.listdir(d) if fmt_of(d, n) in ('qcow2', 'qed'))


def read_all(d):
    return {n: open(os.path.join(d, n), 'rb').read() for n in sorted(os.listdir(d))}


def cut_dirs(tmp_path, orig, cmd, args):
    """Runs qimg CMD ARGS cut after write 1, 2, ... on fresh copies of orig; yields each
    cut directory; returns when a run completes."""
    n = 1
    while True:
        d = qemu.copy_dir(orig, str(tmp_path / ('cut%d' % n)))
        rc, out, err = qemu.run(qemu.QIMG, cmd, *args, cwd=d,
                                env={'QIMG_FAULT_AFTER_WRITES': str(n)})
        if rc != 86:
            assert rc == 0, err
            shutil.rmtree(d)
            break
        yield n, d
        shutil.rmtree(d)
        n += 1
        assert n < 2000
    assert n > 1
