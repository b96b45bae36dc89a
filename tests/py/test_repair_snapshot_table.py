"""The snapshot table read in qemu's repair mode (`check -r all`) through the model's one
reader (qcow2/snapshots.c, QCOW2_SN_READ_REPAIR): extra data past 1024 bytes truncated, a
table past 64 MiB cut before the entry that passes the limit (that entry's dropped extra
data still counted, as qemu counts it). Output, exit code and guest data agree with real
qemu-img; the read-only check and the plain open (info) refuse the same table as qemu."""

import os
import shutil
import struct

import pytest

import qemu


def _image(d, n, extra, strlen, compat='1.1'):
    """A 1 MiB image with n empty snapshot entries appended after its last cluster: each
    with extra_data_size `extra` and id and name of `strlen` bytes."""
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, 'img.qcow2')
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'compat=' + compat, path, '1M',
                  check=True)
    cs = 65536
    off = (os.path.getsize(path) + cs - 1) // cs * cs
    table = bytearray()
    for i in range(n):
        table += b'\0' * (-len(table) % 8)
        ex = bytearray(extra)
        if extra >= 16:
            struct.pack_into('>QQ', ex, 0, 0, 1 << 20)
        table += struct.pack('>QIHHIIQII', 0, 0, strlen, strlen, 0, 0, 0, 0, extra)
        table += ex + (b'%d' % i * strlen)[:strlen] + (b'n%d' % i * strlen)[:strlen]
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(table)
        f.seek(60)
        f.write(struct.pack('>IQ', n, off))
    return path


def _first_past_64m(n, extra, strlen):
    """Index of the entry with which the table, measured as qemu does (extra data kept up
    to 1024 bytes, entries 8-aligned), passes 64 MiB; None if it does not."""
    size = 0
    for i in range(n):
        size = (size + 7) // 8 * 8 + 40 + min(extra, 1024) + 2 * strlen
        if size > 64 << 20:
            return i
    return None


def _repair_both(tmp_path, src):
    dq, di = str(tmp_path / 'qemu'), str(tmp_path / 'qimg')
    for d in (dq, di):
        os.makedirs(d)
        shutil.copy(src, os.path.join(d, 'img.qcow2'))
    rq = qemu.check('qemu', 'img.qcow2', '-r', 'all', cwd=dq)
    ri = qemu.check('qimg', 'img.qcow2', '-r', 'all', cwd=di)
    return dq, di, rq, ri


# (entries, extra_data_size, id/name length): a table past 64 MiB whose dropped entry has
# truncated extra data; one past 64 MiB without; one small with truncated extra data
CASES = {
    'too_big_extra': (600, 2000, 65535),
    'too_big': (600, 16, 65535),
    'extra_only': (5, 2000, 3),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_repair_mode_read_matches_qemu(name, tmp_path):
    n, extra, strlen = CASES[name]
    src = _image(str(tmp_path / 'orig'), n, extra, strlen)
    dq, di, rq, ri = _repair_both(tmp_path, src)
    assert ri == rq
    if extra > 1024:
        assert 'Discarding too much extra metadata in snapshot table entry 0 (%d > 1024)' \
            % extra in ri[2]
    cut = _first_past_64m(n, extra, strlen)
    if cut is not None:
        assert 'Discarding %d overhanging snapshots (snapshot table is too big)' % (n - cut) \
            in ri[2]
    if extra > 1024:
        # the entry that passes the limit is said (and counted) too
        assert ri[2].count('Discarding too much extra metadata') == (n if cut is None
                                                                    else cut + 1)
    assert qemu.qemu_img('compare', os.path.join(dq, 'img.qcow2'),
                         os.path.join(di, 'img.qcow2'))[0] == 0
    ok, detail = qemu.is_clean_by_qemu(os.path.join(di, 'img.qcow2'))
    assert ok, detail


@pytest.mark.parametrize('name', sorted(CASES))
def test_open_mode_read_matches_qemu(name, tmp_path):
    n, extra, strlen = CASES[name]
    src = _image(str(tmp_path / 'orig'), n, extra, strlen)
    d = os.path.dirname(src)
    assert qemu.check('qimg', 'img.qcow2', cwd=d) == qemu.check('qemu', 'img.qcow2', cwd=d)
    assert qemu.check('qimg', 'img.qcow2', '-r', 'leaks', cwd=d)[:2] == \
        qemu.check('qemu', 'img.qcow2', '-r', 'leaks', cwd=d)[:2]
    ri = qemu.run(qemu.tool_path('qimg'), 'info', 'img.qcow2', cwd=d)
    rq = qemu.run(qemu.tool_path('qemu'), 'info', 'img.qcow2', cwd=d)
    assert ri[0] == rq[0] and ri[2] == rq[2]
