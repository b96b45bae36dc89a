"""A big image: 1 TiB preallocation=metadata (160 MiB of metadata, 2048 L2 tables read in
2 MiB batches, 16.7M clusters in the IMRT) with two snapshots, healthy and then damaged in
tables far apart, must check exactly as qemu-img checks it. The file is sparse (1 TiB
apparent): copies are made with `cp --sparse=always`, never by reading it whole."""

import os
import subprocess

import pytest

import qcow2poke
import qemu


@pytest.fixture(scope='module')
def big_image(tmp_path_factory):
    d = tmp_path_factory.mktemp('large')
    p = str(d / 'big.qcow2')
    qemu.make_image(p, '1T', preallocation='metadata')
    qemu.snapshot_create(p, 's1')
    qemu.write_pattern(p, 0x44, 512 << 30, '64k')   # copies one L2 table away from s1
    qemu.snapshot_create(p, 's2')
    return p


def _same(d):
    rq = qemu.check_json('qemu', 'big.qcow2', cwd=d)
    ri = qemu.check_json('qimg', 'big.qcow2', cwd=d)
    assert ri[0] == rq[0], (rq[0], ri[0], rq[3][-2000:], ri[3][-2000:])
    for k in ('corruptions', 'leaks', 'check-errors', 'allocated-clusters',
              'fragmented-clusters', 'image-end-offset', 'total-clusters'):
        assert ri[1].get(k) == rq[1].get(k), (k, rq[1], ri[1])
    hq = qemu.check('qemu', 'big.qcow2', cwd=d)
    hi = qemu.check('qimg', 'big.qcow2', cwd=d)
    assert hi == hq
    return rq


def _copy(big_image, tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    subprocess.run(['cp', '--sparse=always', big_image, str(d / 'big.qcow2')], check=True)
    return str(d)


def test_large_healthy(big_image, tmp_path):
    assert os.path.getsize(big_image) > 64 << 20
    assert _same(_copy(big_image, tmp_path, 'h'))[0] == 0


@pytest.mark.parametrize('where', ['first', 'middle', 'last'])
def test_large_damaged_l2_entries(big_image, tmp_path, where):
    """One L2 entry loses OFLAG_COPIED and another gets reserved bits, in a table near the
    start, the middle or the end of the L1 table (the batched reads and the walk's
    OFLAG_COPIED pre-screen must find each, wherever its batch starts)."""
    d = _copy(big_image, tmp_path, where)
    p = os.path.join(d, 'big.qcow2')
    guest = {'first': 0, 'middle': 512 << 30, 'last': (1 << 40) - (64 << 10)}[where]
    with qcow2poke.open_image(p) as q:
        off, idx = q.l2_location_for_guest(guest)
        e = q.l2_entry(off, idx)[0]
        q.set_l2(off, idx, e & ~(1 << 63))
        e2 = q.l2_entry(off, idx + (1 if where != "last" else -1))[0]
        q.set_l2(off, idx + (1 if where != 'last' else -1), e2 | (1 << 56))
    rq = _same(d)
    assert rq[0] == 2, rq
