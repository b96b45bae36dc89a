"""Mismatches with qemu-img found by scripts/diffcheck.py (random metadata damage, both
tools run on the same image), rebuilt here from images made by qemu-img so each stays
fixed: check (human and JSON), info and map must give qemu-img's exit code and lines."""

import os

import pytest

import qcow2poke
import qemu


def _v2_with_snapshot(d):
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '8M', compat='0.10')
    qemu.io(p, 'write -P 1 0 64k', 'write -P 3 5M 4k')
    qemu.snapshot_create(p, 'snap1')
    qemu.io(p, 'write -P 4 0 4k')
    return p


def snap_l1_offset_past_int64(d):
    """A snapshot L1 offset with bit 63 set: qemu counts the table (past EOF), its read
    fails the block layer's request check, and the check stops with an I/O error."""
    p = _v2_with_snapshot(d)
    with qcow2poke.open_image(p) as q:
        sn = q.snapshots()[0]
        q.set_snapshot_field(0, 'l1_table_offset', sn.l1_table_offset | (1 << 63))


CASES = [snap_l1_offset_past_int64]


def _same(d, *args):
    rq = qemu.run(qemu.tool_path('qemu'), *args, 'img.qcow2', cwd=d)
    ri = qemu.run(qemu.qimg_as_qemu_img(), *args, 'img.qcow2', cwd=d)
    if args[:2] == ('check', '--output=json') and ri[0] == rq[0] and rq[1].strip():
        # qimg adds its findings array; qemu's fields must be equal
        assert qemu.qemu_part(qemu.parse_json(ri[1])) == qemu.qemu_part(qemu.parse_json(rq[1]))
        assert ri[2] == rq[2]
    else:
        assert ri == rq
    return rq


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.__name__)
def test_diffcheck_find(tmp_path, case):
    d = str(tmp_path)
    case(d)
    for args in (['check'], ['check', '--output=json'], ['info', '--output=json'],
                 ['map', '--output=json']):
        _same(d, *args)
