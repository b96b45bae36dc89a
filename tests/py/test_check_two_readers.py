"""check's two-reader L2 walk (checker/qcow2_l2read.h): a walk over at least 8 MiB of L2
tables reads them on two threads through a ring of slots, while findings are still made in
L1 order on one thread. Damage placed in tables on both sides of slot and batch boundaries
must give exactly qemu-img's verdict and lines, and exactly what one reader gives
(QIMG_CHECK_THREADS=1), findings included."""

import os
import subprocess

import pytest

import qcow2poke
import qemu

GiB = 1 << 30


def _scattered(d):
    """64 KiB clusters, 150 L2 tables (9.4 MiB) each followed by its data cluster on disk
    (one table per batch), a snapshot, then a second round of writes so both the active
    and the snapshot L1 walk use two readers."""
    p = os.path.join(d, 'scattered.qcow2')
    qemu.make_image(p, '%d' % (80 * GiB), cluster_size=65536)
    qemu.io(p, *['write -P %d %d 4k' % (i % 250 + 1, i * 512 * (1 << 20)) for i in range(150)])
    qemu.snapshot_create(p, 'snap')
    qemu.io(p, *['write -P 7 %d 4k' % (i * 512 * (1 << 20) + 65536) for i in range(0, 150, 3)])
    return p


def _adjacent(d):
    """160 adjacent 64 KiB L2 tables (read 4 to a slot): a whole-cluster zero write in
    each 512 MiB region allocates its table and no data; data comes after all tables."""
    p = os.path.join(d, 'adjacent.qcow2')
    region = 512 * (1 << 20)
    qemu.make_image(p, '%d' % (80 * GiB), cluster_size=65536)
    qemu.io(p, *['write -z %d 64k' % (i * region) for i in range(160)])
    qemu.io(p, *['write -P %d %d 4k' % (i % 250 + 1, i * region + 65536) for i in range(160)])
    return p


def _small_tables(d):
    """4 KiB clusters: 2,100 adjacent 4 KiB L2 tables, 64 to a slot, made as above."""
    p = os.path.join(d, 'small.qcow2')
    region = 2 * (1 << 20)
    qemu.make_image(p, '%d' % (5 * GiB), cluster_size=4096)
    qemu.io(p, *['write -z %d 4k' % (i * region) for i in range(2100)])
    qemu.io(p, *['write -P 3 %d 4k' % (i * region + 8192) for i in range(2100)])
    return p


BASES = {'scattered': _scattered, 'adjacent': _adjacent, 'small': _small_tables}


@pytest.fixture(scope='module')
def bases(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('tworeaders'))
    return {name: make(d) for name, make in BASES.items()}


def _tables(q):
    return [i for i, e in enumerate(q.l1_table()) if e]


def _some(idx):
    """Tables on both sides of slot and batch boundaries, and the last one."""
    picks = [0, 1, 3, 4, 7, 8, 63, 64, 65, len(idx) - 1]
    return [idx[k] for k in picks if k < len(idx)]


def _first_used(q, l2):
    for i in range(q.l2_entries):
        w, _ = q.l2_entry(l2, i)
        if w:
            return i, w
    return None, None


def dmg_none(q):
    pass


def dmg_unaligned_data(q):
    for l1i in _some(_tables(q)):
        l2 = q.l2_offset(l1i)
        i, w = _first_used(q, l2)
        q.set_l2(l2, i, w + 512)


def dmg_reserved_bits(q):
    for l1i in _some(_tables(q)):
        l2 = q.l2_offset(l1i)
        i, w = _first_used(q, l2)
        q.set_l2(l2, i, w | 0x2)


def dmg_past_eof(q):
    end = qcow2poke.align_up(q.file_size(), q.cs)
    for n, l1i in enumerate(_some(_tables(q))):
        l2 = q.l2_offset(l1i)
        i, w = _first_used(q, l2)
        q.set_l2(l2, i, (w & ~qcow2poke.L2E_OFFSET_MASK) | (end + n * q.cs))


def dmg_copied_cleared(q):
    for l1i in _some(_tables(q)):
        l2 = q.l2_offset(l1i)
        i, w = _first_used(q, l2)
        q.set_l2(l2, i, w & ~qcow2poke.OFLAG_COPIED)


def dmg_l1_duplicate(q):
    idx = _tables(q)
    for k in (4, 8, 64):
        if k + 1 < len(idx):
            q.set_l1(idx[k + 1], q.l1_entry(idx[k]))


def dmg_l1_past_eof(q):
    idx = _tables(q)
    end = qcow2poke.align_up(q.file_size(), q.cs)
    q.set_l1(idx[5], (q.l1_entry(idx[5]) & ~qcow2poke.L1E_OFFSET_MASK) | (end + 64 * q.cs))


def dmg_l1_unaligned(q):
    idx = _tables(q)
    q.set_l1(idx[9], q.l1_entry(idx[9]) + 512)


DAMAGE = {f.__name__[4:]: f for f in (dmg_none, dmg_unaligned_data, dmg_reserved_bits,
                                       dmg_past_eof, dmg_copied_cleared, dmg_l1_duplicate,
                                       dmg_l1_past_eof, dmg_l1_unaligned)}


def _qimg(d, *args, threads=None):
    env = {'QIMG_CHECK_THREADS': threads} if threads else None
    return qemu.run(qemu.tool_path('qimg'), *args, cwd=d, env=env)


@pytest.mark.parametrize('damage', sorted(DAMAGE))
@pytest.mark.parametrize('base', sorted(BASES))
def test_two_readers_match_qemu_and_one_reader(bases, tmp_path, base, damage):
    d = str(tmp_path)
    name = os.path.basename(bases[base])
    subprocess.run(['cp', '--sparse=always', bases[base], os.path.join(d, name)], check=True)
    with qcow2poke.open_image(os.path.join(d, name)) as q:
        DAMAGE[damage](q)

    rq, outq, _ = qemu.check('qemu', name, cwd=d)
    ri, outi, erri = _qimg(d, 'check', name)
    assert (ri, outi) == (rq, outq), erri
    if damage == 'none':
        assert ri == 0

    rj, jq, _, _ = qemu.check_json('qemu', name, cwd=d)
    ji_rc, ji_out, _ = _qimg(d, 'check', '--output=json', name)
    assert ji_rc == rj
    assert qemu.qemu_part(qemu.parse_json(ji_out)) == qemu.qemu_part(jq)

    # one reader: byte for byte the same, findings included
    assert _qimg(d, 'check', name, threads='1') == (ri, outi, erri)
    assert _qimg(d, 'check', '--output=json', name, threads='1')[:2] == (ji_rc, ji_out)
