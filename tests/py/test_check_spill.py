"""Refcounts above 254: qimg's IMRT keeps one byte per cluster and spills larger values
into a side map (checker/imrt.h). An image with 260 internal snapshots shares its data
cluster and L2 table 261 times; check, damage and repair must agree with qemu-img there."""

import os
import shutil

import pytest

import qcow2poke
import qemu

SNAPSHOTS = 260


@pytest.fixture(scope='module')
def shared_image(tmp_path_factory):
    d = tmp_path_factory.mktemp('spill')
    p = str(d / 'shared.qcow2')
    qemu.make_image(p, '1M', cluster_size=65536)
    qemu.write_pattern(p, 0x5a, 0, '64k')
    for i in range(SNAPSHOTS):
        qemu.snapshot_create(p, 's%d' % i)
    return p


def _copy(shared_image, tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    shutil.copyfile(shared_image, str(d / 'shared.qcow2'))
    return str(d)


def _data_cluster(path):
    with qcow2poke.open_image(path) as q:
        return q.host_cluster(0)


def _both_agree(d):
    rq = qemu.check_json('qemu', 'shared.qcow2', cwd=d)
    ri = qemu.check_json('qimg', 'shared.qcow2', cwd=d)
    assert ri[0] == rq[0], (rq, ri)
    for k in ('corruptions', 'leaks', 'check-errors', 'allocated-clusters',
              'image-end-offset'):
        assert ri[1].get(k) == rq[1].get(k), (k, rq, ri)
    hq = qemu.check('qemu', 'shared.qcow2', cwd=d)
    hi = qemu.check('qimg', 'shared.qcow2', cwd=d)
    assert (hi[0], hi[1], hi[2]) == (hq[0], hq[1], hq[2])
    return rq


def test_healthy_shared_cluster(shared_image, tmp_path):
    d = _copy(shared_image, tmp_path, 'healthy')
    with qcow2poke.open_image(os.path.join(d, 'shared.qcow2')) as q:
        assert q.get_refcount(q.host_cluster(0)) == SNAPSHOTS + 1
    rq = _both_agree(d)
    assert rq[0] == 0


@pytest.mark.parametrize('delta', [-2, +3, -(SNAPSHOTS + 1)])
def test_damaged_big_refcount(shared_image, tmp_path, delta):
    d = _copy(shared_image, tmp_path, 'd%d' % delta)
    p = os.path.join(d, 'shared.qcow2')
    with qcow2poke.open_image(p) as q:
        c = q.host_cluster(0)
        q.set_refcount(c, SNAPSHOTS + 1 + delta)
    rq = _both_agree(d)
    assert rq[0] == (3 if delta > 0 else 2), rq
    # repair: clean by the real qemu-img, guest data as before
    sha = qemu.guest_sha256('shared.qcow2', cwd=d)[0]
    ri = qemu.check('qimg', 'shared.qcow2', '-r', 'all', cwd=d)
    assert ri[0] == 0, ri
    ok, detail = qemu.is_clean_by_qemu('shared.qcow2', cwd=d)
    assert ok, detail
    assert qemu.guest_sha256('shared.qcow2', cwd=d)[0] == sha
    with qcow2poke.open_image(p) as q:
        assert q.get_refcount(_data_cluster(p)) == SNAPSHOTS + 1
