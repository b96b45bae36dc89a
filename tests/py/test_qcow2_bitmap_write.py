"""Writes to qcow2 images with persistent dirty bitmaps, qimg-io against qemu-io 7.2.

qemu marks every consistent bitmap in use when it opens the image read-write
(qcow2_load_dirty_bitmaps), sets the bits of each enabled bitmap a write, zero write or
discard touches, and at close stores every consistent bitmap to new clusters (data, then
table, then a new directory; the old ones freed; qcow2_store_persistent_dirty_bitmaps).
qemu is deterministic here: the image files qemu-io and qimg-io leave are compared byte for
byte, and the bitmaps are also checked against bits computed from the script.
"""

import json
import os
import shutil
import subprocess
import types

import pytest

import qemu
import writediff

KIB = 1024
MIB = 1024 * KIB
IMG = 'img.qcow2'
LAYOUT = types.SimpleNamespace(fmt='qcow2', image=IMG)

# name, granularity (None: qemu-img's default, the cluster size), disabled
BITMAPS = (('bm0', None, False), ('bm-disabled', '128k', True), ('bm-fine', '512', False),
           ('bm-coarse', '1M', False))


def _make(d, size=2 * MIB, bitmaps=BITMAPS):
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, IMG)
    qemu.make_image(p, size=str(size), cluster_size='4k')
    qemu.io(p, 'write -P 1 0 64k')
    for name, gran, disabled in bitmaps:
        args = ['bitmap', '--add'] + (['-g', gran] if gran else []) + [p, name]
        assert qemu.qemu_img(*args)[0] == 0
        if disabled:
            assert qemu.qemu_img('bitmap', '--disable', p, name)[0] == 0
    return p


def _run(tool, path, cmds, env=None):
    args = [tool]
    for c in cmds:
        args += ['-c', c]
    args.append(path)
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env,
                       cwd=os.path.dirname(path))
    return r.returncode, r.stdout, r.stderr


def _both(tmp_path, base, cmds, env=None):
    """qemu-io and qimg-io on copies of base: (qemu path, qimg path, qemu res, qimg res)."""
    q, i = str(tmp_path / 'q'), str(tmp_path / 'i')
    for d in (q, i):
        shutil.copytree(base, d)
    rq = _run(qemu.QEMU_IO, os.path.join(q, IMG), cmds)
    ri = _run(writediff.qimg_io_alias(), os.path.join(i, IMG), cmds, env=env)
    return os.path.join(q, IMG), os.path.join(i, IMG), rq, ri


def _info_bitmaps(p):
    rc, out, err = qemu.qemu_img('info', '--output=json', p)
    assert rc == 0, err
    return json.loads(out)['format-specific']['data'].get('bitmaps')


def _same_file(a, b):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        return fa.read() == fb.read()


def _check_clean(p):
    rc, out, err = qemu.qemu_img('check', p)
    assert rc == 0, out + err


def _expected_bits(size, gbits, ranges):
    nbits = (size + (1 << gbits) - 1) >> gbits
    bits = bytearray((nbits + 7) // 8)
    for off, n in ranges:
        for k in range(off >> gbits, min((off + n - 1) >> gbits, nbits - 1) + 1):
            bits[k // 8] |= 1 << (k % 8)
    return bytes(bits)


SCRIPT = ('write -P 5 100k 3k', 'write -z 1M 64k', 'discard 1536k 12k',
          'write -c -P 9 256k 4k', 'write -P 6 2047k 1k')
RANGES = ((100 * KIB, 3 * KIB), (MIB, 64 * KIB), (1536 * KIB, 12 * KIB), (256 * KIB, 4 * KIB),
          (2047 * KIB, KIB))


def test_writes_set_bits_and_store_like_qemu(tmp_path):
    """Several bitmaps of different granularities, one disabled: same file as qemu-io,
    the enabled bitmaps hold exactly the written ranges, the disabled one stays empty."""
    base = str(tmp_path / 'base')
    _make(base)
    before = writediff.bitmaps(LAYOUT, base)
    qp, ip, rq, ri = _both(tmp_path, base, SCRIPT)
    assert rq[0] == 0 and ri[0] == 0, (rq, ri)
    assert ri[2] == rq[2]
    assert _info_bitmaps(ip) == _info_bitmaps(qp)
    got = writediff.bitmaps(LAYOUT, os.path.dirname(ip))
    assert got == writediff.bitmaps(LAYOUT, os.path.dirname(qp))
    for name, (flags, gbits, bits) in got.items():
        if name == 'bm-disabled':
            assert (flags, gbits, bits) == before[name]
            assert flags == 0 and not any(bits)
        else:
            assert flags == 2   # auto, no longer in use
            assert bits == _expected_bits(2 * MIB, gbits, RANGES), name
    assert _same_file(qp, ip)
    _check_clean(ip)


def test_bitmaps_relocated_and_old_clusters_freed(tmp_path):
    """Every close stores the bitmaps to new clusters and frees the old ones (qemu
    reuses none): after three sessions the file is still qemu-io's, and check is clean."""
    base = str(tmp_path / 'base')
    _make(base)
    q, i = str(tmp_path / 'q'), str(tmp_path / 'i')
    shutil.copytree(base, q)
    shutil.copytree(base, i)
    for k, cmd in enumerate(('write -P 3 0 8k', 'write -P 4 1M 8k', 'discard 0 1M')):
        assert _run(qemu.QEMU_IO, os.path.join(q, IMG), [cmd])[0] == 0
        assert _run(writediff.qimg_io_alias(), os.path.join(i, IMG), [cmd])[0] == 0
        assert _same_file(os.path.join(q, IMG), os.path.join(i, IMG)), 'session %d' % k
    _check_clean(os.path.join(i, IMG))


def test_read_write_open_marks_in_use(tmp_path):
    """The open's in-place directory update (autoclear bit off, directory with IN_USE,
    autoclear bit on): a process that dies right after it leaves what qemu-io's abort
    leaves, every bitmap in use."""
    base = str(tmp_path / 'base')
    _make(base)
    env = dict(os.environ, QIMG_FAULT_AFTER_WRITES='3')
    q, i = str(tmp_path / 'q'), str(tmp_path / 'i')
    shutil.copytree(base, q)
    shutil.copytree(base, i)
    qp, ip = os.path.join(q, IMG), os.path.join(i, IMG)
    _run(qemu.QEMU_IO, qp, ['abort'])   # qemu-io: open, then die without storing
    ri = _run(writediff.qimg_io_alias(), ip, ['read 0 512'], env=env)
    assert ri[0] == 86, ri
    flags = [b['flags'] for b in _info_bitmaps(ip)]
    assert all('in-use' in f for f in flags), flags
    assert _info_bitmaps(ip) == _info_bitmaps(qp)
    assert _same_file(qp, ip)


def test_inconsistent_bitmap(tmp_path):
    """Bitmaps left in use by a crash are inconsistent: writes leave them as they are
    (qemu skips them at store), a consistent one added later is updated, and a resize is
    refused with qemu's message."""
    base = str(tmp_path / 'base')
    p = _make(base, bitmaps=BITMAPS[:2])
    _run(qemu.QEMU_IO, p, ['write -P 7 0 4k', 'abort'])
    assert qemu.qemu_img('bitmap', '--add', '-g', '64k', p, 'bm-new')[0] == 0
    before = writediff.bitmaps(LAYOUT, base)
    assert before['bm0'][0] & 1 and before['bm-disabled'][0] & 1
    qp, ip, rq, ri = _both(tmp_path, base, ['write -P 5 100k 300k', 'discard 1M 100k'])
    assert rq[0] == 0 and ri[0] == 0, (rq, ri)
    assert rq[2] == ri[2]
    got = writediff.bitmaps(LAYOUT, os.path.dirname(ip))
    assert got == writediff.bitmaps(LAYOUT, os.path.dirname(qp))
    assert got['bm0'] == before['bm0'] and got['bm-disabled'] == before['bm-disabled']
    assert got['bm-new'][2] == _expected_bits(2 * MIB, 16, ((100 * KIB, 300 * KIB),
                                                             (MIB, 100 * KIB)))
    assert _same_file(qp, ip)
    _check_clean(ip)
    shutil.rmtree(str(tmp_path / 'q'))
    shutil.rmtree(str(tmp_path / 'i'))
    qp, ip, rq, ri = _both(tmp_path, base, ['truncate 4M'])
    assert rq[0] == ri[0] == 1
    assert ri[2] == rq[2]
    assert 'inconsistent' in ri[2]
    assert _same_file(qp, ip)


@pytest.mark.parametrize('size', ['3584k', '1M', '2047k'])
def test_truncate_resizes_bitmaps(tmp_path, size):
    """Resize: the bitmaps follow the new size (bits past a shrunk end dropped, the tables
    sized for the new disk), as qemu stores them."""
    base = str(tmp_path / 'base')
    _make(base)
    cmds = ['write -P 5 1000k 1000k', 'truncate ' + size, 'write -P 6 0 4k']
    qp, ip, rq, ri = _both(tmp_path, base, cmds)
    assert rq[0] == 0 and ri[0] == 0, (rq, ri)
    assert writediff.bitmaps(LAYOUT, os.path.dirname(ip)) == \
        writediff.bitmaps(LAYOUT, os.path.dirname(qp))
    assert _info_bitmaps(ip) == _info_bitmaps(qp)
    assert _same_file(qp, ip)
    _check_clean(ip)


@pytest.mark.parametrize('seed', [100, 101])
def test_cut_at_every_write(tmp_path, seed):
    """Crash safety with bitmaps: qimg-io killed after each of its writes (the open's
    in-place directory update, the guest writes, the store at close) leaves an image
    qemu-img check finds consistent (leaks allowed) with every completed write's data."""
    import test_write_faults as twf
    layout = twf.LAYOUTS['bitmaps']
    script = [c for c in writediff.case_script(layout, seed) if c.split()[0] != 'truncate']
    twf.cut_every_write(str(tmp_path), 'bitmaps seed %d' % seed, layout, script,
                        'python3 -m pytest tests/py/test_qcow2_bitmap_write.py -k %d' % seed)


def test_dirty_image_with_bitmaps(tmp_path):
    """A dirty lazy_refcounts image: qemu loads (and marks) the bitmaps, then repairs the
    image, then stores the bitmaps it loaded before the repair at close; an inconsistent
    bitmap stays, the consistent one is updated, the file is qemu-io's."""
    base = str(tmp_path / 'base')
    os.makedirs(base)
    p = os.path.join(base, IMG)
    qemu.make_image(p, size='2M', cluster_size='4k', lazy_refcounts='on')
    qemu.io(p, 'write -P 1 0 64k')
    assert qemu.qemu_img('bitmap', '--add', p, 'a')[0] == 0
    _run(qemu.QEMU_IO, p, ['write -P 9 64k 8k', 'abort'])    # dirty, 'a' in use
    assert qemu.qemu_img('bitmap', '--add', '-g', '8k', p, 'b')[0] == 0
    with open(p, 'r+b') as f:                                  # dirty again
        f.seek(79)
        v = f.read(1)[0]
        f.seek(79)
        f.write(bytes([v | 1]))
    qp, ip, rq, ri = _both(tmp_path, base, ['write -P 1 100k 1k', 'write -P 2 1M 70k'])
    assert rq[0] == 0 and ri[0] == 0, (rq, ri)
    assert ri[2] == rq[2]
    got = writediff.bitmaps(LAYOUT, os.path.dirname(ip))
    assert got == writediff.bitmaps(LAYOUT, os.path.dirname(qp))
    assert sorted(got) == ['a', 'b'] and got['a'][0] & 1 and got['b'][0] == 2
    assert _same_file(qp, ip)
    _check_clean(ip)
