"""Repair beyond qemu-img: --dry-run changes nothing, --journal + `qimg undo` restores the
exact pre-repair file, undo refuses an image changed since, -U with -r and an image in use
are refused.  Every injector case that qimg's `-r all` repairs (writes to) is undone."""

import hashlib
import os
import sqlite3
import subprocess

import pytest

import injector
import qemu
from conftest import case_params

CASES = case_params([c for c in injector.CASES if 'open-fails' not in c.tags])


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize('case', CASES)
def test_dry_run_then_journal_undo(case, image_factory):
    image_factory(case)
    d = image_factory.copy('qimg')
    p = os.path.join(d, image_factory.filename)
    before = sha(p)

    # --dry-run: the plan, nothing written, exit code as plain check
    rc_plain, _, _ = qemu.qimg('check', p, cwd=d)
    rc, out, err = qemu.qimg('check', '-r', 'all', '--dry-run', p, cwd=d)
    assert sha(p) == before, 'dry run changed the file\n' + out + err
    assert rc == rc_plain, out + err
    assert 'Repair plan (dry run, nothing was written)' in out or rc == 1, out + err

    # real repair with a journal, then undo
    j = os.path.join(d, 'j.db')
    rc, out, err = qemu.qimg('check', '-r', 'all', '--journal', j, p, cwd=d)
    if not os.path.exists(j):
        assert sha(p) == before, 'repair wrote without a journal\n' + out + err
        return
    rows = sqlite3.connect(j).execute('select count(*) from writes').fetchone()[0]
    rc, out2, err2 = qemu.qimg('undo', j, p, cwd=d)
    assert rc == 0, out + err + out2 + err2
    assert sha(p) == before, 'undo did not restore the file (%d writes)\n%s%s' % (rows, out, err)
    # a second undo is refused: the image is no longer in its repaired state
    rc, out2, err2 = qemu.qimg('undo', j, p, cwd=d)
    assert rc == 1 and 'already been undone' in err2


def _leak_case(image_factory):
    image_factory(injector.BY_NAME['leak_l2_entry_zeroed'])
    d = image_factory.copy('qimg')
    return d, os.path.join(d, image_factory.filename)


def test_journal_schema_and_identity(image_factory):
    d, p = _leak_case(image_factory)
    before = sha(p)
    j = os.path.join(d, 'j.db')
    rc, out, err = qemu.qimg('check', '-r', 'leaks', '--journal', j, p, cwd=d)
    assert rc == 0, out + err
    db = sqlite3.connect(j)
    meta = dict(db.execute('select key, value from meta'))
    assert meta['status'] == 'complete'
    assert meta['schema_version'] == '1'
    assert int(meta['pre_size']) == os.path.getsize(p)
    with open(p, 'rb') as f:
        assert meta['post_header_sha256'] == hashlib.sha256(f.read(65536)).hexdigest()
    rows = db.execute('select seq, op, class, offset, length, old, new, reason from writes '
                      'order by seq').fetchall()
    assert [r[2] for r in rows] == ['guard', 'refcount', 'header']
    for seq, op, cls, off, ln, old, new, reason in rows:
        assert op == 'write' and len(old) == ln == len(new) and reason
    # the guard sets the corrupt bit, the last write clears it
    assert int.from_bytes(rows[0][6], 'big') & 2 and not int.from_bytes(rows[-1][6], 'big') & 2
    assert qemu.qimg('undo', j, p)[0] == 0 and sha(p) == before


def test_undo_refuses_changed_image(image_factory):
    d, p = _leak_case(image_factory)
    j = os.path.join(d, 'j.db')
    assert qemu.qimg('check', '-r', 'all', '--journal', j, p)[0] == 0
    qemu.io(p, 'write -P 0x11 0 4k')   # the image is used after the repair
    changed = sha(p)
    rc, out, err = qemu.qimg('undo', j, p)
    assert rc == 1 and 'has changed since the repair' in err, out + err
    assert sha(p) == changed


def test_journal_refuses_existing_file(image_factory):
    d, p = _leak_case(image_factory)
    j = os.path.join(d, 'j.db')
    open(j, 'w').close()
    before = sha(p)
    rc, out, err = qemu.qimg('check', '-r', 'all', '--journal', j, p)
    assert rc == 1 and 'already exists' in err
    assert sha(p) == before


def test_force_share_with_repair_refused(image_factory):
    d, p = _leak_case(image_factory)
    before = sha(p)
    rc, out, err = qemu.qimg('check', '-U', '-r', 'all', p)
    assert rc == 1 and 'cannot be used with -r' in err
    assert sha(p) == before


def test_image_in_use_refused(image_factory):
    d, p = _leak_case(image_factory)
    before = sha(p)
    # qemu-io keeps the image open read-write (with qemu's OFD locks) until stdin closes
    io = subprocess.Popen([qemu.QEMU_IO, '-f', 'qcow2', p], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # wait for the prompt: the image is open and locked
        io.stdin.write(b'help\n')
        io.stdin.flush()
        io.stdout.readline()
        rc, out, err = qemu.qimg('check', '-r', 'all', p)
        assert rc == 1 and 'Failed to get "write" lock' in err, out + err
        assert 'Is another process using the image' in err
    finally:
        io.stdin.close()
        io.wait(timeout=30)
    assert sha(p) == before
    assert qemu.qimg('check', '-r', 'all', p)[0] == 0


def test_dry_run_json_has_plan(image_factory):
    d, p = _leak_case(image_factory)
    import json
    rc, out, err = qemu.qimg('check', '--output=json', '-r', 'all', '--dry-run', p)
    assert rc == 3, out + err
    js = json.loads(out)
    assert js['leaks'] == 1
    plan = js['repair-plan']
    assert [w['class'] for w in plan] == ['guard', 'refcount', 'header']
    assert all(w['op'] == 'write' and w['length'] > 0 and w['reason'] for w in plan)
