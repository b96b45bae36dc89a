"""Where qemu 7.2's `check -r all` is broken (digest §3.8, §13.1, §13.4, §13.12, and the
overlap failure of snap_l1_size_too_big), each test states what qemu-img's repair leaves and
asserts what qimg's leaves instead: an image real qemu-img check finds clean (or, where the
damage is unfixable by design, with fewer problems), and output naming what was dropped."""

import os
import shutil

import pytest

import injector
import qemu


def _both(image_factory, name):
    image_factory(injector.BY_NAME[name])
    f = image_factory.filename
    dq, di = image_factory.copy('qemu'), image_factory.copy('qimg')
    rq = qemu.check('qemu', f, '-r', 'all', cwd=dq)
    ri = qemu.check('qimg', f, '-r', 'all', cwd=di)
    cq = qemu.check_json('qemu', f, cwd=dq)
    ci = qemu.check_json('qemu', f, cwd=di)
    return f, dq, di, rq, ri, cq, ci


def _clean(c):
    rc, js = c[0], c[1]
    return rc == 0 and js and not js.get('corruptions') and not js.get('leaks')


@pytest.mark.parametrize('name', ['reftable_reserved_bits', 'refblock_misaligned'])
def test_rebuild_with_damaged_reftable_entry(name, image_factory):
    f, dq, di, rq, ri, cq, ci = _both(image_factory, name)
    # qemu: the rebuild collides with its own overlap check, "Check failed", rc 1
    assert rq[0] == 1 and 'Check failed' in rq[2], rq
    # qimg: rebuilt, rc 0, clean by real qemu-img check, guest data as before
    assert ri[0] == 0, ri
    assert 'Rebuilding refcount structure' in ri[2]
    assert _clean(ci), ci
    sha_orig = qemu.guest_sha256(f, cwd=image_factory.orig)[0]
    if sha_orig is not None:
        assert qemu.guest_sha256(f, cwd=di)[0] == sha_orig


@pytest.mark.parametrize('name', ['unaligned_data_l2', 'extl2_unaligned_data'])
def test_unaligned_data_entry_dropped(name, image_factory):
    f, dq, di, rq, ri, cq, ci = _both(image_factory, name)
    # qemu: the entry stays, and the neighbour's refcount was raised instead (rc 2 after)
    assert rq[0] == 2 and not _clean(cq), (rq, cq)
    # qimg: the mapping is dropped, said so, and the image is clean
    assert ri[0] == 0, ri
    assert 'dropped the unaligned data cluster mapping of guest offset' in ri[2], ri
    assert _clean(ci), ci
    assert qemu.guest_sha256(f, cwd=di)[0] is not None


def test_snapshot_count_garbage(image_factory):
    f, dq, di, rq, ri, cq, ci = _both(image_factory, 'snap_nb_70000')
    # qemu: garbage parsed into snapshots, still corrupt (rc 2) afterwards
    assert not _clean(cq), cq
    # qimg: keeps the one real snapshot, says what it discarded, clean
    assert ri[0] == 0, ri
    assert 'Discarding 4464 overhanging snapshots' in ri[2]
    assert 'are not snapshots' in ri[2], ri
    assert _clean(ci), ci
    rc, out, err = qemu.qemu_img('snapshot', '-l', f, cwd=di)
    assert rc == 0 and 's1' in out, out + err
    sha_q = qemu.guest_sha256(f, cwd=dq)[0]
    assert qemu.guest_sha256(f, cwd=di)[0] in (sha_q, qemu.guest_sha256(f, cwd=image_factory.orig)[0])


def test_snapshot_l1_too_large_overlap(image_factory):
    f, dq, di, rq, ri, cq, ci = _both(image_factory, 'snap_l1_size_too_big')
    # qemu: the OFLAG_COPIED write hits the overlap check against the bogus 64 MiB
    # snapshot L1: "Marking image as corrupt", Check failed, rc 1, leaks remain
    assert rq[0] == 1, rq
    assert cq[1].get('leaks'), cq
    # qimg: the leaks and the COPIED flag are fixed; only the snapshot entry stays
    # corrupt (by design, as qemu), rc 2
    assert ri[0] == 2, ri
    assert not ci[1].get('leaks') and ci[1].get('corruptions') == 1, ci


REGRESSIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'corpus',
                           'regressions')


def test_rebuild_keeps_clear_of_l1_past_eof(tmp_path):
    """corpus/regressions/repair-rebuild-writes-over-l1.qcow2 (fuzz_repair): the active L1
    table lies past EOF, so the IMRT does not count its cluster. qemu's rebuild picks that
    cluster for the new reftable and its overlap check refuses the write ("overlaps with
    active L1 table", Check failed); qimg used to write it and corrupt the image. The
    rebuild must keep clear of it and never leave the image worse than before."""
    name = 'repair-rebuild-writes-over-l1.qcow2'
    for d in ('orig', 'qemu', 'qimg'):
        (tmp_path / d).mkdir()
        shutil.copyfile(os.path.join(REGRESSIONS, name), str(tmp_path / d / name))
    before = qemu.check_json('qemu', name, cwd=str(tmp_path / 'orig'))
    assert before[0] == 2 and before[1].get('corruptions') == 5, before
    # qemu: the overlap check refuses the reftable write
    rq = qemu.check('qemu', name, '-r', 'all', cwd=str(tmp_path / 'qemu'))
    assert rq[0] == 1 and 'overlaps with active L1 table' in rq[2], rq
    # qimg: rebuilt without touching the L1 table, and its double check agrees with qemu
    ri = qemu.check('qimg', name, '-r', 'all', cwd=str(tmp_path / 'qimg'))
    assert 'Rebuilding refcount structure' in ri[2], ri
    assert 'Preventing invalid write' not in ri[2], ri
    after = qemu.check_json('qemu', name, cwd=str(tmp_path / 'qimg'))
    assert after[1] is not None, after
    assert after[1].get('corruptions', 0) <= before[1]['corruptions'], (before, after)
    assert after[1].get('check-errors', 0) == 0, after
    ours = qemu.check_json('qimg', name, cwd=str(tmp_path / 'qimg'))
    assert ours[0] == after[0], (ours, after)
    for k in ('corruptions', 'leaks', 'check-errors'):
        assert ours[1].get(k, 0) == after[1].get(k, 0), (k, ours, after)
    # the repair's own double check reported what qemu-img check reports now
    assert ri[0] == after[0], (ri, after)
    assert _clean(after), after
