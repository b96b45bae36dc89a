"""`qimg undo` verifies everything before it writes anything, and the journal is created
safely (../shared/repro/undo_defects.sh, journal_symlink.sh, enospc_repair.sh):

- a tampered or damaged journal is refused with one line naming the journal and what is
  wrong, exit 2, and the image is byte for byte what it was;
- an undo killed after any of its writes is completed by running undo again;
- a repair killed after any of its writes is undone to the exact original;
- --journal never follows or reuses an existing path, is refused with --dry-run and before
  any repair line is printed, and leaves no file when it cannot be created;
- a repair that fails on ENOSPC prints what qemu-img prints, exits 1 and leaves the
  corrupt bit as it was (qemu-img's result); its journal undoes it exactly.
"""

import contextlib
import filecmp
import json
import os
import shutil
import sqlite3
import struct
import subprocess

import pytest

import injector
import qemu

# ---------------------------------------------------------------------------------------
# the image of undo_defects.sh: 1 MiB of guest data and two leaked clusters


def make_leaky(path):
    qemu.make_image(path, '64M')
    qemu.io(path, 'write -P 0x11 0 1M')
    with open(path, 'r+b') as f:
        f.seek(48)
        rt = struct.unpack('>Q', f.read(8))[0]
        f.seek(rt)
        rb = struct.unpack('>Q', f.read(8))[0]
        n = os.path.getsize(path) // 65536
        f.truncate((n + 2) * 65536)
        for c in (n, n + 1):
            f.seek(rb + 2 * c)
            f.write(struct.pack('>H', 1))


@pytest.fixture(scope='module')
def repaired(tmp_path_factory, qimg_binary):
    """(dir, orig, rep, rep.db): the leaky image, its repaired copy and its journal."""
    d = str(tmp_path_factory.mktemp('undo_hostile'))
    orig = os.path.join(d, 'orig.qcow2')
    make_leaky(orig)
    rep = os.path.join(d, 'rep.qcow2')
    shutil.copy2(orig, rep)
    j = os.path.join(d, 'rep.db')
    rc, out, err = qemu.qimg('check', '-r', 'all', '--journal', j, rep)
    assert rc == 0, out + err
    assert not filecmp.cmp(orig, rep, shallow=False)
    return d, orig, rep, j


def fresh(repaired, tmp_path):
    """A copy of the repaired image (mtime kept, as undo checks it) and of its journal."""
    _, _, rep, j = repaired
    t = str(tmp_path / 't.qcow2')
    tj = str(tmp_path / 't.db')
    shutil.copy2(rep, t)
    shutil.copy(j, tj)
    return t, tj


def same(a, b):
    return filecmp.cmp(a, b, shallow=False)


def corrupt_bit(path):
    js = json.loads(qemu.qemu_img('info', '-U', '--output=json', path, check=True)[1])
    return js['format-specific']['data'].get('corrupt')


def rows(db):
    with contextlib.closing(sqlite3.connect(db)) as c:
        return c.execute('select seq, class, offset, length from writes order by seq').fetchall()


def meta(db):
    with contextlib.closing(sqlite3.connect(db)) as c:
        return dict(c.execute('select key, value from meta'))


def test_pristine_journal_restores(repaired, tmp_path):
    """The journal every hostile case starts from is good: undo gives the original."""
    _, orig, _, _ = repaired
    t, tj = fresh(repaired, tmp_path)
    assert [r[1] for r in rows(tj)] == ['guard', 'refcount', 'header']
    rc, out, err = qemu.qimg('undo', tj, t)
    assert (rc, err) == (0, ''), out + err
    assert out == "Restored '%s' to its state before the repair (3 writes undone).\n" % t
    assert same(t, orig)
    assert meta(tj)['status'] == 'undone' and 'undo_next' not in meta(tj)


# (id, SQL applied to the journal, what the error must say)
HOSTILE = [
    ('pre_size_zero', "update meta set value=0 where key='pre_size'",
     'pre_size 0 is not the size 1507328 the first write found'),
    ('pre_size_1tib', "update meta set value=1099511627776 where key='pre_size'",
     'pre_size 1099511627776 is not the size 1507328 the first write found'),
    ('header_old_bytes', "update writes set old=x'4141414141414141' where seq=1",
     'its old bytes do not give back the pre-repair header (pre_header_sha256)'),
    ('middle_old_bytes', "update writes set old=x'0000000000000000' where seq=3",
     'write 3: old byte at 0x4f is not the byte the writes before it left there'),
    ('unknown_op', "update writes set op='bogus' where seq=2", "write 2: unknown op 'bogus'"),
    ('unknown_class', "update writes set class='x' where seq=2", "write 2: unknown class 'x'"),
    ('schema_version', "update meta set value='2' where key='schema_version'",
     "schema_version '2' is not one this qimg knows (1)"),
    ('no_schema_version', "delete from meta where key='schema_version'",
     'not a qimg repair journal (no schema_version)'),
    ('unknown_status', "update meta set value='done' where key='status'",
     "unknown status 'done'"),
    ('offset_2_62', "update writes set offset=4611686018427387904 where seq=2",
     'write 2: offset, length or sizes out of range (offset and sizes < 2^56, length <= 268435456)'),
    ('negative_offset', "update writes set offset=-2 where seq=2",
     'write 2: offset, length or sizes out of range (offset and sizes < 2^56, length <= 268435456)'),
    ('text_offset', "update writes set offset='abc' where seq=1",
     'write 1: offset, length or sizes out of range (offset and sizes < 2^56, length <= '
     '268435456)'),
    ('length_mismatch', "update writes set length=length+1 where seq=2",
     'write 2: old and new must be blobs of its length 5'),
    ('short_old', "update writes set old=substr(old, 1, length(old) - 1) where seq=2",
     'write 2: old and new must be blobs of its length 4'),
    ('seq_gap', "update writes set seq=5 where seq=2",
     'write 2 is numbered 3: rows must be numbered 1, 2, ...'),
    ('new_size', "update writes set new_size=new_size+65536 where seq=2",
     'write 2: new_size 1572864 does not follow from its old_size 1507328 and range'),
    ('post_size', "update meta set value=value+1 where key='post_size'",
     'post_size 1507329 is not the size 1507328 its writes leave'),
    ('truncate_with_bytes', "update writes set op='truncate' where seq=2",
     'write 2: a truncate row has offset 0, length 0, no bytes'),
    ('failed_seq', "insert into meta values('failed_seq', 99)",
     'failed_seq 99 is not one of its 3 writes'),
    ('undo_next', "insert into meta values('undo_next', 99)",
     'undo_next 99 is not one of its 3 writes'),
    ('missing_hash', "delete from meta where key='pre_header_sha256'",
     "meta 'pre_header_sha256' is missing"),
    ('bad_hash', "update meta set value='xyz' where key='pre_header_sha256'",
     "meta 'pre_header_sha256' is not a sha256 in hex"),
    ('hash_len', "update meta set value=512 where key='header_hash_len'",
     'header_hash_len 512 is not 65536'),
    ('blob_meta', "update meta set value=x'00' where key='pre_size'",
     "meta 'pre_size' is not text"),
    ('junk_number', "update meta set value='1507328x' where key='pre_size'",
     "meta 'pre_size' = '1507328x' is not a number in [0, 72057594037927936]"),
    ('post_mtime', "update meta set value='abc' where key='post_mtime'",
     "post_mtime 'abc' is not sec.nsec"),
    ('complete_without_post', "delete from meta where key='post_size'",
     "status 'complete' without post_size and post_header_sha256"),
    ('no_writes_table', 'drop table writes', 'not a qimg repair journal (no such table: writes)'),
]


@pytest.mark.parametrize('sql,why', [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_journal_refused(repaired, tmp_path, sql, why):
    _, _, rep, _ = repaired
    t, tj = fresh(repaired, tmp_path)
    with contextlib.closing(sqlite3.connect(tj)) as c:
        c.executescript(sql)
        c.commit()
    mtime = os.stat(t).st_mtime_ns
    rc, out, err = qemu.qimg('undo', tj, t)
    assert rc == 2, out + err
    assert out == ''
    assert err == "qimg: journal '%s' is invalid: %s; nothing was written\n" % (tj, why)
    assert same(t, rep), 'the image was written'
    assert os.stat(t).st_mtime_ns == mtime


def test_garbage_and_missing_journal(repaired, tmp_path):
    _, _, rep, _ = repaired
    t, tj = fresh(repaired, tmp_path)
    with open(tj, 'wb') as f:
        f.write(os.urandom(4096))
    rc, out, err = qemu.qimg('undo', tj, t)
    assert rc == 2 and err == ("qimg: journal '%s' is invalid: not an SQLite database (file is "
                               "not a database); nothing was written\n" % tj), err
    missing = str(tmp_path / 'none.db')
    rc, out, err = qemu.qimg('undo', missing, t)
    assert rc == 2 and err == "qimg: Could not open journal '%s': unable to open database file\n" \
        % missing, err
    assert not os.path.exists(missing)
    assert same(t, rep)


def test_undone_journal_refused(repaired, tmp_path):
    _, orig, rep, _ = repaired
    t, tj = fresh(repaired, tmp_path)
    assert qemu.qimg('undo', tj, t)[0] == 0
    shutil.copy2(rep, t)
    rc, out, err = qemu.qimg('undo', tj, t)
    assert rc == 1 and err == "qimg: the repair recorded in '%s' has already been undone\n" % tj
    assert same(t, rep)


def test_changed_byte_refused(repaired, tmp_path):
    """A journaled byte that holds neither what the repair left nor anything in flight."""
    _, _, rep, _ = repaired
    t, tj = fresh(repaired, tmp_path)
    off = rows(tj)[1][2]   # the refcount write
    st = os.stat(t)
    with open(t, 'r+b') as f:
        f.seek(off)
        f.write(b'\x7f')
    os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns))   # even with the mtime put back
    changed = open(t, 'rb').read()
    rc, out, err = qemu.qimg('undo', tj, t)
    assert rc == 1, out + err
    assert err == ("qimg: '%s' has changed since the repair recorded in '%s' (byte at 0x%x); "
                   "refusing to undo it\n" % (t, tj, off)), err
    assert open(t, 'rb').read() == changed


# ---------------------------------------------------------------------------------------
# interrupted undo, interrupted repair


def undo_writes(tj, t, tmp_path):
    """How many image writes a full undo of this journal makes (counted on a copy)."""
    d = tmp_path / 'count'
    d.mkdir()
    c, cj = str(d / 'c.img'), str(d / 'c.db')
    shutil.copy2(t, c)
    shutil.copy(tj, cj)
    n = 0
    while True:
        shutil.copy2(t, c)
        shutil.copy(tj, cj)
        rc, out, err = qemu.run(qemu.QIMG, 'undo', cj, c,
                                env={'QIMG_FAULT_AFTER_WRITES': str(n + 1)})
        if rc != 86:
            assert rc == 0, out + err
            return n
        n += 1


def test_interrupted_undo_resumes(repaired, tmp_path):
    """undo_defects.sh U3: killed after each of its writes, a second undo completes."""
    _, orig, rep, _ = repaired
    t0, tj0 = fresh(repaired, tmp_path)
    n = undo_writes(tj0, t0, tmp_path)
    assert n == 3
    for k in range(1, n + 1):
        t, tj = str(tmp_path / ('k%d.qcow2' % k)), str(tmp_path / ('k%d.db' % k))
        shutil.copy2(rep, t)
        shutil.copy(tj0, tj)
        rc, out, err = qemu.run(qemu.QIMG, 'undo', tj, t, env={'QIMG_FAULT_AFTER_WRITES': str(k)})
        assert rc == 86, out + err
        m = meta(tj)
        assert m['status'] == 'complete' and 'undo_next' in m
        # the header row goes first and the guard row last: the corrupt bit stays set
        # until the undo is through, so qemu does not write a half-restored image
        assert corrupt_bit(t) is (k < 3), k
        rc, out, err = qemu.qimg('undo', tj, t)
        assert rc == 0, 'resume after write %d: %s' % (k, out + err)
        assert same(t, orig), 'resume after write %d' % k
        assert meta(tj)['status'] == 'undone'


def test_interrupted_undo_then_changed_refused(repaired, tmp_path):
    _, orig, rep, _ = repaired
    t, tj = fresh(repaired, tmp_path)
    assert qemu.run(qemu.QIMG, 'undo', tj, t, env={'QIMG_FAULT_AFTER_WRITES': '1'})[0] == 86
    off = rows(tj)[1][2]
    with open(t, 'r+b') as f:
        f.seek(off)
        f.write(b'\x7f')
    before = open(t, 'rb').read()
    rc, out, err = qemu.qimg('undo', tj, t)
    assert rc == 1 and 'has changed since the repair' in err, out + err
    assert open(t, 'rb').read() == before


CRASH_CASES = ['leak_l2_entry_zeroed', 'refcount_zero_data', 'refblock_past_eof',
               'snap_extra_data_8']


@pytest.mark.parametrize('name', CRASH_CASES)
def test_interrupted_repair_and_undo(name, image_factory, tmp_path):
    """A repair killed after any write, then an undo killed after its first write, then
    undo again: the exact original every time."""
    image_factory(injector.BY_NAME[name])
    f = image_factory.filename
    src = os.path.join(image_factory.orig, f)
    full = image_factory.copy('full')
    rc, out, err = qemu.qimg('check', '-r', 'all', '--dry-run', '--output=json',
                             os.path.join(full, f))
    nwrites = len(json.loads(out)['repair-plan'])
    assert nwrites > 0
    for n in range(1, nwrites + 1):
        d = str(tmp_path / ('crash%d' % n))
        shutil.copytree(image_factory.orig, d)
        p, j = os.path.join(d, f), os.path.join(d, 'j.db')
        rc, out, err = qemu.run(qemu.QIMG, 'check', '-r', 'all', '--journal', j, p,
                                env={'QIMG_FAULT_AFTER_WRITES': str(n)})
        assert rc == 86, out + err
        assert meta(j)['status'] == 'applying'
        rc, out, err = qemu.run(qemu.QIMG, 'undo', j, p, env={'QIMG_FAULT_AFTER_WRITES': '1'})
        assert rc in (0, 86), out + err
        if rc == 86:
            rc, out, err = qemu.qimg('undo', j, p)
        assert rc == 0, '%s after write %d: %s' % (name, n, out + err)
        assert same(p, src), '%s: undo after write %d of %d' % (name, n, nwrites)


# ---------------------------------------------------------------------------------------
# --journal: how the file is created


@pytest.fixture
def leak_image(tmp_path, qimg_binary):
    p = str(tmp_path / 'i.qcow2')
    make_leaky(p)
    keep = str(tmp_path / 'keep.qcow2')
    shutil.copy2(p, keep)
    return p, keep


def refused_before_repair(p, keep, j, msg):
    rc, out, err = qemu.qimg('check', '-r', 'all', '--journal', j, p)
    assert (rc, out, err) == (1, '', 'qimg: %s\n' % msg)   # no Leaked/Repairing line
    assert same(p, keep)


def test_journal_dangling_symlink(leak_image, tmp_path):
    """journal_symlink.sh: a symlink planted at the journal path is not followed."""
    p, keep = leak_image
    shared = tmp_path / 'shared'
    shared.mkdir()
    os.chmod(str(shared), 0o777)
    target = str(tmp_path / 'created_by_root')
    j = str(shared / 'j.db')
    os.symlink(target, j)
    refused_before_repair(p, keep, j, "journal '%s' is a symbolic link; refusing to follow it"
                          % j)
    assert not os.path.lexists(target)
    assert os.path.islink(j)


def test_journal_symlink_to_file(leak_image, tmp_path):
    p, keep = leak_image
    target = str(tmp_path / 'precious')
    with open(target, 'w') as f:
        f.write('keep me')
    j = str(tmp_path / 'j.db')
    os.symlink(target, j)
    refused_before_repair(p, keep, j, "journal '%s' is a symbolic link; refusing to follow it"
                          % j)
    assert open(target).read() == 'keep me'


def test_journal_existing_file(leak_image, tmp_path):
    p, keep = leak_image
    j = str(tmp_path / 'j.db')
    with open(j, 'w') as f:
        f.write('x')
    refused_before_repair(p, keep, j, "journal '%s' already exists; refusing to overwrite it" % j)
    assert open(j).read() == 'x'


def test_journal_cannot_be_created(leak_image, tmp_path):
    p, keep = leak_image
    j = str(tmp_path / 'no' / 'j.db')
    refused_before_repair(p, keep, j, "journal '%s': cannot create: No such file or directory"
                          % j)
    assert not os.path.exists(str(tmp_path / 'no'))


def test_journal_with_dry_run_refused(leak_image, tmp_path):
    p, keep = leak_image
    j = str(tmp_path / 'j.db')
    rc, out, err = qemu.qimg('check', '-r', 'all', '--dry-run', '--journal', j, p)
    assert (rc, out) == (1, '')
    assert err == 'qimg: --journal cannot be used with --dry-run: a dry run writes nothing to ' \
        'journal\n'
    assert not os.path.lexists(j)
    assert same(p, keep)


@pytest.mark.parametrize('fmt', ['vdi'])
@pytest.mark.parametrize('opt', [['--dry-run'], ['--journal', 'j.db']], ids=['dry-run', 'journal'])
def test_dry_run_and_journal_refused_for_in_place_formats(tmp_path, qimg_binary, fmt, opt):
    """VDI has no repair: the option would silently be ignored (QED's repair writes through
    the write port and takes both: test_qed_port.py)."""
    p = str(tmp_path / ('i.' + fmt))
    qemu.make_image(p, '1M', fmt=fmt)
    qemu.io(p, 'write 0 64k', fmt=fmt)
    keep = open(p, 'rb').read()
    rc, out, err = qemu.qimg('check', '-r', 'all', *opt, p, cwd=str(tmp_path))
    assert (rc, out) == (1, '')
    assert err == 'qimg: --dry-run and --journal are only supported for qcow2 and qed images\n'
    assert open(p, 'rb').read() == keep
    assert os.listdir(str(tmp_path)) == [os.path.basename(p)]


def test_journal_removed_when_image_does_not_open(tmp_path, qimg_binary):
    p = str(tmp_path / 'b.qcow2')
    qemu.make_image(p, '1M')
    with open(p, 'r+b') as f:
        f.seek(20)
        f.write(struct.pack('>I', 40))   # cluster_bits 40
    j = str(tmp_path / 'j.db')
    rc, out, err = qemu.qimg('check', '-r', 'all', '--journal', j, p)
    rc2, out2, err2 = qemu.qemu_img('check', '-r', 'all', p)
    assert rc == rc2 == 1
    assert err == err2.replace('qemu-img:', 'qimg:')
    assert os.listdir(str(tmp_path)) == ['b.qcow2']


# ---------------------------------------------------------------------------------------
# a full disk (a 2 MiB tmpfs; needs root to mount)


@contextlib.contextmanager
def small_tmpfs(path):
    if os.geteuid() != 0:
        pytest.skip('mounting a tmpfs needs root')
    os.makedirs(path)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2M', 'tmpfs', path], check=True)
    try:
        yield path
    finally:
        subprocess.run(['umount', path], check=True)


def fill(mnt):
    st = os.statvfs(mnt)
    with open(os.path.join(mnt, 'fill'), 'wb') as f:
        try:
            f.write(b'\0' * (st.f_bavail * st.f_frsize))
            f.flush()
        except OSError:
            pass


def enospc_image(path):
    """enospc_repair.sh: the reftable entry zeroed, so -r all rebuilds and grows the file."""
    qemu.make_image(path, '64M')
    qemu.io(path, 'write -P 0x11 0 1M')
    with open(path, 'r+b') as f:
        f.seek(48)
        rt = struct.unpack('>Q', f.read(8))[0]
        f.seek(rt)
        f.write(b'\0' * 8)


def quiet_lines(err):
    return [line for line in err.splitlines()
            if not line.startswith(('ERROR cluster', 'Repairing cluster'))]


def test_enospc_repair_like_qemu(tmp_path, qimg_binary):
    src = str(tmp_path / 'src.qcow2')
    enospc_image(src)
    sha0, _ = qemu.guest_sha256(src)
    res = {}
    for tool in ('qemu', 'qimg'):
        with small_tmpfs(str(tmp_path / ('mnt_' + tool))) as m:
            p = os.path.join(m, 'd.qcow2')
            shutil.copy(src, p)
            fill(m)
            exe = qemu.QEMU_IMG if tool == 'qemu' else qemu.qimg_as_qemu_img()
            rc, out, err = qemu.run(exe, 'check', '-r', 'all', p)
            res[tool] = (rc, out, quiet_lines(err), corrupt_bit(p))
            assert qemu.guest_sha256(p)[0] == sha0, tool
            os.unlink(os.path.join(m, 'fill'))
            if tool == 'qimg':   # with room again, the repair completes
                assert qemu.qimg('check', '-r', 'all', p)[0] == 0
                assert qemu.qemu_img('check', p)[0] == 0
                assert qemu.guest_sha256(p)[0] == sha0
    assert res['qimg'] == res['qemu']
    rc, out, lines, corrupt = res['qimg']
    assert rc == 1 and out == '' and corrupt is False
    assert lines[0] == 'Rebuilding refcount structure'
    assert lines[-1] == 'qemu-img: Check failed: No space left on device'


def test_enospc_repair_journal_undoes(tmp_path, qimg_binary):
    """The failed repair's journal (on a disk with room) puts the file back exactly."""
    src = str(tmp_path / 'src.qcow2')
    enospc_image(src)
    with small_tmpfs(str(tmp_path / 'mnt')) as m:
        p = os.path.join(m, 'd.qcow2')
        shutil.copy(src, p)
        fill(m)
        j = str(tmp_path / 'j.db')
        rc, out, err = qemu.qimg('check', '-r', 'all', '--journal', j, p)
        assert rc == 1 and 'Check failed: No space left on device' in err, out + err
        mt = meta(j)
        assert mt['status'] == 'failed' and 'failed_seq' in mt
        cls = [r[1] for r in rows(j)]
        assert cls[0] == 'guard' and cls[-1] == 'header'   # the corrupt bit put back
        assert corrupt_bit(p) is False
        rc, out, err = qemu.qimg('undo', j, p)   # still on the full disk
        assert rc == 0, out + err
        assert same(p, src)


def test_journal_on_full_disk_leaves_nothing(tmp_path, qimg_binary):
    p = str(tmp_path / 'i.qcow2')
    make_leaky(p)
    keep = str(tmp_path / 'keep.qcow2')
    shutil.copy2(p, keep)
    with small_tmpfs(str(tmp_path / 'mnt')) as m:
        fill(m)
        j = os.path.join(m, 'j.db')
        rc, out, err = qemu.qimg('check', '-r', 'all', '--journal', j, p)
        assert (rc, out) == (1, ''), out + err
        assert err == "qimg: journal '%s': database or disk is full\n" % j, err
        assert sorted(os.listdir(m)) == ['fill']
    assert same(p, keep)
