"""Backing chains for the rebase and commit tests: built with the real qemu-img/qemu-io
in a directory, then run through qemu-img and qimg on copies (portcheck.py; see
test_rebase.py)."""

import os

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


def fmt_of(d, name):
    rc, out, _ = qemu.qemu_img('info', '--output=json', '-U', name, cwd=d)
    return qemu.parse_json(out)['format'] if rc == 0 else None


def images(d):
    return sorted(n for n in os.listdir(d) if fmt_of(d, n) in ('qcow2', 'qed'))
