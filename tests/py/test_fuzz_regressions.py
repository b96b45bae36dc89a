"""Inputs the fuzzers found (corpus/regressions/, described in its README): each test runs
the command line on the file with qimg and with the real qemu-img and asserts they agree,
so the bug stays fixed in the product and not only in the fuzz target."""

import os
import shutil
import struct

import pytest

import qemu

REGRESSIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'corpus',
                           'regressions')


def _copies(tmp_path, name, *dirs):
    for d in dirs:
        (tmp_path / d).mkdir()
        shutil.copyfile(os.path.join(REGRESSIONS, name), str(tmp_path / d / name))
    return [str(tmp_path / d) for d in dirs]


def test_read_l1_too_large_is_refused(tmp_path):
    """read-l1-too-large-waived.qcow2 (fuzz_read): size near 2^64 (qemu's size_to_l1 wraps)
    and l1_size 0xffffffff. The wrapped-size waiver used to accept the header although the
    L1 table is over qemu's 32 MiB limit, and the open allocated 32 GiB. Both tools must
    refuse the image with the same message and exit code."""
    name = 'read-l1-too-large-waived.qcow2'
    (d,) = _copies(tmp_path, name, 'x')
    for cmd in (['info'], ['check'], ['map', '--output=json']):
        rq = qemu.run(qemu.tool_path('qemu'), *cmd, name, cwd=d)
        ri = qemu.run(qemu.qimg_as_qemu_img(), *cmd, name, cwd=d)
        assert ri[0] == rq[0] != 0, (cmd, rq, ri)
        assert ri[1:] == rq[1:], (cmd, rq, ri)


def test_snapshot_rewrite_drops_string_tail_and_frees_as_qemu(tmp_path):
    """repair-snapshot-rewrite-strlen.qcow2 (fuzz_repair): a v3 image whose snapshot table
    lies partly past EOF, entry 0 with a 3584-byte id read as zeros. qemu rewrites the
    table with strlen() of id and name (one cluster, at the first free cluster) and its
    qcow2_free_clusters of the old range fails with EINVAL (a cluster already at refcount 0)
    and rolls back. qimg kept the 3584 bytes, put an 8-cluster table over the old range and
    then freed its own new clusters: refcount 0 on a referenced table. Now both repairs
    print the same lines and leave the same metadata (qimg does not punch the freed
    clusters, see README "Freed clusters are not discarded")."""
    name = 'repair-snapshot-rewrite-strlen.qcow2'
    dq, di = _copies(tmp_path, name, 'qemu', 'qimg')
    rq = qemu.check('qemu', name, '-r', 'all', cwd=dq)
    ri = qemu.check('qimg', name, '-r', 'all', cwd=di)
    assert 'qcow2_free_clusters failed: Invalid argument' in rq[2], rq
    assert (ri[0], ri[1]) == (rq[0], rq[1]), (rq, ri)
    assert ri[2].splitlines() == rq[2].splitlines(), (rq, ri)
    after_q = qemu.check_json('qemu', name, cwd=dq)
    after_i = qemu.check_json('qemu', name, cwd=di)
    assert after_i[0] == after_q[0] and after_i[1] == after_q[1], (after_q, after_i)
    # same header and snapshot table; the rest differs only where qemu punched freed clusters
    with open(os.path.join(dq, name), 'rb') as f:
        bq = f.read()
    with open(os.path.join(di, name), 'rb') as f:
        bi = f.read()
    assert len(bq) == len(bi)
    assert bq[:0xa00] == bi[:0xa00]
    assert all(x == 0 for x, y in zip(bq, bi) if x != y), 'differs beyond discarded clusters'


@pytest.mark.parametrize('name,what', [
    ('repair-rebuild-header-in-snapshot-table.qcow2', 'snapshot table'),
    ('repair-rebuild-l1-table-over-header.qcow2', 'active L1 table'),
])
def test_rebuild_refused_when_metadata_covers_header(tmp_path, name, what):
    """The header's refcount_table_offset field is also another structure's pointer, so a
    refcount rebuild's header switch would point that structure at the new refcount
    blocks (new refblock-shared / refcount / OFLAG_COPIED errors after repair):
    - repair-rebuild-header-in-snapshot-table.qcow2: v2, 512-byte clusters,
      snapshots_offset 0, so snapshot entry 1's L1 pointer is the field;
    - repair-rebuild-l1-table-over-header.qcow2: l1_table_offset 0 and no refcount table,
      so active L1 entry 6 is the field.
    qemu's rebuild fails on both (its overlap check refuses a refblock over the table).
    qimg refuses before writing anything: exit 1 like qemu, says why, file byte-identical."""
    dq, di = _copies(tmp_path, name, 'qemu', 'qimg')
    with open(os.path.join(REGRESSIONS, name), 'rb') as f:
        orig = f.read()
    rq = qemu.check('qemu', name, '-r', 'all', cwd=dq)
    assert rq[0] == 1 and 'Check failed' in rq[2], rq
    ri = qemu.check('qimg', name, '-r', 'all', cwd=di)
    assert ri[0] == 1, ri
    assert 'the %s overlaps the image header' % what in ri[2], ri
    assert 'Check failed' in ri[2], ri
    with open(os.path.join(di, name), 'rb') as f:
        assert f.read() == orig


@pytest.mark.parametrize('method', [3, 7, 0x80000000, 0xffffffff])
def test_unsupported_crypt_method_refused(tmp_path, method):
    """qemu refuses crypt_method > 2 ("Unsupported encryption method %d", signed) when it
    parses the open options, after the L1 checks; qimg used to open such images."""
    p = str(tmp_path / 'c.qcow2')
    qemu.make_image(p, '1M')
    with open(p, 'r+b') as f:
        f.seek(32)
        f.write(struct.pack('>I', method))
    for cmd in (['info'], ['check'], ['map', '--output=json']):
        rq = qemu.run(qemu.tool_path('qemu'), *cmd, 'c.qcow2', cwd=str(tmp_path))
        ri = qemu.run(qemu.qimg_as_qemu_img(), *cmd, 'c.qcow2', cwd=str(tmp_path))
        assert ri == rq and rq[0] == 1, (cmd, rq, ri)


def test_crypt_method_checked_after_refcount_table_rule(tmp_path):
    """open-crypt-method-unsupported.qcow2 (fuzz_repair): no refcount table and crypt_method
    0x80000000. info fails on the refcount table, check (which skips that rule) on the
    crypt method: both as qemu-img."""
    name = 'open-crypt-method-unsupported.qcow2'
    (d,) = _copies(tmp_path, name, 'x')
    for cmd in (['info'], ['check'], ['check', '-r', 'all']):
        rq = qemu.run(qemu.tool_path('qemu'), *cmd, name, cwd=d)
        ri = qemu.run(qemu.qimg_as_qemu_img(), *cmd, name, cwd=d)
        assert ri == rq and rq[0] == 1, (cmd, rq, ri)


def test_l2_fix_refused_in_header_cluster(tmp_path):
    """repair-l2-fix-in-header-cluster.qcow2 (fuzz_repair): an active L1 entry names
    cluster 0 as an L2 table, so its "entries" are header fields. qimg's drop of an
    unaligned data entry wrote a zero entry over l1_size and the image no longer opened.
    qemu's overlap check refuses the write of its own fix (a preallocated zero cluster) and
    aborts the check. qimg now does exactly that: same output, exit 1, file unchanged."""
    name = 'repair-l2-fix-in-header-cluster.qcow2'
    dq, di = _copies(tmp_path, name, 'qemu', 'qimg')
    with open(os.path.join(REGRESSIONS, name), 'rb') as f:
        orig = f.read()
    rq = qemu.check('qemu', name, '-r', 'all', cwd=dq)
    ri = qemu.check('qimg', name, '-r', 'all', cwd=di)
    assert 'overlaps with qcow2_header' in rq[2], rq
    assert ri == rq and rq[0] == 1, (rq, ri)
    with open(os.path.join(di, name), 'rb') as f:
        assert f.read() == orig
