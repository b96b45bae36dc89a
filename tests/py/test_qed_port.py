"""QED's check -r writes its fixes through the write port (io/wport.h), so --dry-run and
--journal work as for qcow2: a dry run prints the plan and writes nothing, a journaled
repair makes the same bytes as qemu-img's repair and `qimg undo` puts the original back.

Images are made by qemu-img/qemu-io and damaged with struct pokes (an unaligned L2 entry,
a garbage L1 entry, NEED_CHECK set); qemu-img check -r all on a copy is the reference."""

import json
import os
import shutil
import struct

import qemu


def damaged_qed(d, need_check=True):
    p = os.path.join(d, 'i.qed')
    qemu.qemu_img('create', '-q', '-f', 'qed', p, '4M', check=True)
    qemu.io(p, 'write -P 1 0 256k', 'write -P 2 1M 64k', fmt='qed')
    with open(p, 'r+b') as f:
        h = f.read(64)
        feat = struct.unpack('<Q', h[16:24])[0]
        l1 = struct.unpack('<Q', h[40:48])[0]
        f.seek(l1)
        l2 = struct.unpack('<Q', f.read(8))[0]
        f.seek(l2 + 8)
        f.write(struct.pack('<Q', 0x123457))      # L2[1]: not cluster aligned
        f.seek(l1 + 3 * 8)
        f.write(struct.pack('<Q', 0x7777))        # L1[3]: not table aligned
        if need_check:
            f.seek(16)
            f.write(struct.pack('<Q', feat | 2))  # QED_F_NEED_CHECK
    return p, l1, l2


def read(p):
    with open(p, 'rb') as f:
        return f.read()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, qimg_binary):
    d = str(tmp_path)
    p, l1, l2 = damaged_qed(d)
    before = read(p)
    mtime = os.stat(p).st_mtime_ns
    rc, out, err = qemu.qimg('check', '-r', 'all', '--dry-run', p)
    assert read(p) == before and os.stat(p).st_mtime_ns == mtime
    assert os.listdir(d) == ['i.qed']
    assert err == ''
    # the exit code and last report are those of the image as it is now
    qrc, qout, _ = qemu.qemu_img('check', p)
    assert rc == qrc == 2
    plan, rest = out.split('\n\n', 1)
    assert plan.split('\n') == [
        'Repair plan (dry run, nothing was written): 3 writes, 524352 bytes',
        '     1  offset 0x%x length 262144  [table] L2 table at 0x%x: 1 invalid entry cleared'
        % (l2, l2),
        '     2  offset 0x%x length 262144  [table] L1 table at 0x%x: 1 invalid entry cleared'
        % (l1, l1),
        '     3  offset 0x0 length 64  [header] header: NEED_CHECK cleared',
    ]
    would, now = rest.split('\nThe image as it is now:\n')
    assert now == qout
    # what check would report after the repair is what qemu-img check reports after
    # qemu-img's own repair
    ref = os.path.join(d, 'ref.qed')
    shutil.copy(p, ref)
    qemu.qemu_img('check', '-r', 'all', ref)
    _, after, _ = qemu.qemu_img('check', ref)
    assert would == ('The following inconsistencies would be repaired:\n\n'
                     '    0 leaked clusters\n    2 corruptions\n\n'
                     'After the repair, check would report:\n' + after)


def test_dry_run_json_lists_the_plan(tmp_path, qimg_binary):
    p, l1, l2 = damaged_qed(str(tmp_path))
    before = read(p)
    rc, out, err = qemu.qimg('check', '-r', 'all', '--dry-run', '--output=json', p)
    assert (rc, err) == (2, '')
    assert read(p) == before
    j = json.loads(out)
    assert [(w['op'], w['offset'], w['length'], w['class']) for w in j['repair-plan']] == [
        ('write', l2, 262144, 'table'), ('write', l1, 262144, 'table'),
        ('write', 0, 64, 'header')]
    assert j['corruptions'] == 2


def test_journal_repairs_as_qemu_and_undo_restores(tmp_path, qimg_binary):
    d = str(tmp_path)
    p, _, _ = damaged_qed(d)
    orig = read(p)
    ref = os.path.join(d, 'ref.qed')
    shutil.copy(p, ref)
    qrc, qout, qerr = qemu.qemu_img('check', '-r', 'all', 'ref.qed', cwd=d)
    shutil.copy(p, os.path.join(d, 'ref.qed.orig'))
    os.rename(p, os.path.join(d, 'ref.qed.mine'))
    # same relative name for both tools, so the reports compare byte for byte
    os.rename(ref, os.path.join(d, 'ref.qed.qemu'))
    os.rename(os.path.join(d, 'ref.qed.mine'), os.path.join(d, 'ref.qed'))
    rc, out, err = qemu.run(qemu.tool_path('qimg'), 'check', '-r', 'all', '--journal', 'j.db',
                            'ref.qed', cwd=d)
    assert (rc, out, err) == (qrc, qout, qerr)
    assert qrc == 3   # the leak stays (QED never repairs leaks)
    assert read(os.path.join(d, 'ref.qed')) == read(os.path.join(d, 'ref.qed.qemu'))
    assert read(os.path.join(d, 'ref.qed')) != orig
    urc, uout, uerr = qemu.qimg('undo', 'j.db', 'ref.qed', cwd=d)
    assert (urc, uerr) == (0, '')
    assert uout == "Restored 'ref.qed' to its state before the repair (3 writes undone).\n"
    assert read(os.path.join(d, 'ref.qed')) == orig


def test_journal_without_need_check(tmp_path, qimg_binary):
    """Only the tables are fixed (NEED_CHECK was clear): two journaled writes, undone."""
    d = str(tmp_path)
    p, _, _ = damaged_qed(d, need_check=False)
    orig = read(p)
    rc, _, _ = qemu.qimg('check', '-r', 'all', '--journal', 'j.db', p, cwd=d)
    assert rc == 3
    assert qemu.qemu_img('check', p)[0] == 3   # corruptions gone, the leak stays
    urc, uout, _ = qemu.qimg('undo', os.path.join(d, 'j.db'), p)
    assert urc == 0 and '(2 writes undone)' in uout
    assert read(p) == orig


def test_journal_refused_before_anything(tmp_path, qimg_binary):
    """An existing journal file is refused before the image is touched (the read-write
    open of a QED image with NEED_CHECK set would otherwise clear it on close)."""
    d = str(tmp_path)
    p, _, _ = damaged_qed(d)
    orig = read(p)
    open(os.path.join(d, 'j.db'), 'w').close()
    rc, out, err = qemu.qimg('check', '-r', 'all', '--journal', os.path.join(d, 'j.db'), p)
    assert rc == 1 and out == ''
    assert 'j.db' in err
    assert read(p) == orig


def test_journal_holds_the_close_time_header_write(tmp_path, qimg_binary):
    """A repair that leaves a corruption behind does not clear NEED_CHECK itself, but the
    read-write close does (qemu's bdrv_qed_close): that write is journaled too, so undo
    gives back the original bytes."""
    d = str(tmp_path)
    p, l1, l2 = damaged_qed(d)
    # a double reference the check cannot fix: L2[2] names the cluster L2[0] maps
    with open(p, 'r+b') as f:
        f.seek(l2)
        e0 = f.read(8)
        f.seek(l2 + 16)
        f.write(e0)
    orig = read(p)
    ref = os.path.join(d, 'ref.qed')
    shutil.copy(p, ref)
    qrc = qemu.qemu_img('check', '-r', 'all', ref)[0]
    rc, _, _ = qemu.qimg('check', '-r', 'all', '--journal', 'j.db', p, cwd=d)
    assert rc == qrc == 2
    assert read(p) == read(ref)
    urc, uout, _ = qemu.qimg('undo', 'j.db', p, cwd=d)
    assert urc == 0, uout
    assert read(p) == orig
