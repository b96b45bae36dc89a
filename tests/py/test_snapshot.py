"""`qimg snapshot` against the real qemu-img 7.2 snapshot.

Each case builds an image directory with the real qemu-img/qemu-io, copies it, runs the
same `snapshot` command line with qemu-img in one copy and qimg (through a symlink named
qemu-img, so the message prefix matches) in the other, and requires the same exit status,
stdout and stderr, byte-identical files afterwards, the same `info --output=json` and `map
--output=json`, and a clean real `qemu-img check`.

Dates: `-c` stamps the snapshot with the clock, so the two runs differ there. Decision: the
files are compared after masking the date fields (date_sec, date_nsec: bytes 16..23 of each
entry of the snapshot table, found through the header) in both, and info after dropping
date-sec/date-nsec; qimg's date itself is checked to lie between the times before and after
its run (microsecond precision, as qemu's g_get_real_time()). Every other byte must match.

Fault injection (QIMG_FAULT_AFTER_WRITES=N) cuts -c, -d and -a after each write: the real
qemu-img check must then find no corruption (leaks are allowed). --journal runs are undone by
`qimg undo` byte for byte, also after a cut; --dry-run writes nothing.
"""

import json
import os
import shutil
import struct
import time

import pytest

import qcow2poke
import qemu
from portcheck import build_orig, cut_at_every_write, dry_run, journal_cut_then_undo, \
    journal_pair, read_all, undo_restores

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


# -- image builders ----------------------------------------------------------------------------

def _qcow2(size='1M', data=(), zero=(), snaps=(), **opts):
    def build(d):
        p = os.path.join(d, 'img')
        qemu.make_image(p, size=size, **opts)
        for pat, off, length in data:
            qemu.write_pattern(p, pat, off, length)
        for off, length in zero:
            qemu.io(p, 'write -z %s %s' % (off, length))
        for name in snaps:
            qemu.snapshot_create(p, name)
    return build


def _plain(fmt, size='1M', **opts):
    def build(d):
        qemu.make_image(os.path.join(d, 'img'), size=size, fmt=fmt, **opts)
    return build


def _then(build, *steps):
    """build, then each step: ('snap', name) | ('write', pat, off, len) | ('bitmap', name)
    | ('resize', size) | ('zero', off, len), all made by the real tools."""
    def b(d):
        build(d)
        p = os.path.join(d, 'img')
        for s in steps:
            if s[0] == 'snap':
                qemu.snapshot_create(p, s[1])
            elif s[0] == 'write':
                qemu.write_pattern(p, *s[1:])
            elif s[0] == 'zero':
                qemu.io(p, 'write -z %s %s' % s[1:])
            elif s[0] == 'bitmap':
                qemu.qemu_img('bitmap', '--add', p, s[1], check=True)
            elif s[0] == 'resize':
                qemu.qemu_img('resize', p, s[1], check=True)
            elif s[0] == 'shrink':
                qemu.qemu_img('resize', '--shrink', p, s[1], check=True)
            else:
                raise ValueError(s)
    return b


def _compressed(size='4M', snaps=(), **opts):
    def build(d):
        src = os.path.join(d, 'src')
        qemu.make_image(src, size=size)
        qemu.write_pattern(src, 0xaa, 0, 128 * KIB)
        qemu.write_pattern(src, 0xbb, 2 * MIB, 256 * KIB)
        args = ['-c']
        if opts:
            args += ['-o', ','.join('%s=%s' % kv for kv in opts.items())]
        qemu.convert(src, os.path.join(d, 'img'), *args)
        os.unlink(src)
        for name in snaps:
            qemu.snapshot_create(os.path.join(d, 'img'), name)
    return build


def _backed(snaps=()):
    def build(d):
        qemu.make_image(os.path.join(d, 'base'), size='2M')
        qemu.write_pattern(os.path.join(d, 'base'), 0x11, 0, 2 * MIB)
        p = os.path.join(d, 'img')
        qemu.make_image(p, size='2M', backing='base', backing_fmt='qcow2')
        qemu.write_pattern(p, 0x22, 64 * KIB, 64 * KIB)
        for name in snaps:
            qemu.snapshot_create(p, name)
    return build


def _poked(build, fn):
    """build, then fn(q) on the image opened with qcow2poke."""
    def b(d):
        build(d)
        with qcow2poke.Qcow2(os.path.join(d, 'img')) as q:
            fn(q)
    return b


def _retable(extra_of):
    """Rewrite the snapshot table at the end of the file with each entry's extra data
    replaced by extra_of(entry) (bytes; an old qemu's 0 or 16 bytes, unknown extra data);
    the new table's cluster takes the old one's reference."""
    def fn(q):
        buf = b''
        for sn in q.snapshots():
            fixed = bytearray(q.pread(sn.offset, 40))
            extra = extra_of(q.pread(sn.offset + 40, sn.extra_data_size))
            struct.pack_into('>I', fixed, 36, len(extra))
            buf += bytes(fixed) + extra + sn.id_str.encode('latin-1') + sn.name.encode('latin-1')
            buf += bytes(-len(buf) % 8)
        off = (q.file_size() + q.cs - 1) // q.cs * q.cs
        assert len(buf) <= q.cs
        q.pwrite(off, buf)
        q.set_refcount(q.snapshots_offset // q.cs, 0)
        q.set_refcount(off // q.cs, 1)
        q.set_header('snapshots_offset', off)
    return fn


def _l1_entry_unaligned(q):
    q.set_l1(0, q.l1_entry(0) + 512)


def _l2_entry_unaligned(q):
    l2 = q.l2_offset(0)
    q.set_u64(l2, q.u64(l2) + 512)


DATA = ((0xaa, 0, 64 * KIB), (0xbb, 700 * KIB, 200 * KIB))
BIG = ((0xaa, 0, 64 * KIB), (0xbb, 5 * MIB, 300 * KIB), (0xcc, 9 * MIB, 64 * KIB))

# layouts: (id, build); every layout gets -c, and -a/-d of its snapshot 's1'
LAYOUTS = [
    ('v3', _qcow2(data=DATA, snaps=('s1',))),
    ('v3-empty', _qcow2(snaps=('s1',))),
    ('v2', _qcow2(data=DATA, compat='0.10', snaps=('s1',))),
    ('c512', _qcow2(size='10M', data=BIG, cluster_size=512, snaps=('s1',))),
    ('c4k', _qcow2(size='10M', data=BIG, cluster_size=4096, snaps=('s1',))),
    ('c2M', _qcow2(size='10M', data=BIG, cluster_size=2 * MIB, snaps=('s1',))),
    # refcount_bits=1 cannot count a shared cluster: qemu's -c fails half-way (EINVAL)
    ('rb1', _qcow2(size='10M', data=BIG, refcount_bits=1)),
    ('rb2', _qcow2(data=DATA, refcount_bits=2, snaps=('s1',))),
    ('rb8', _qcow2(data=DATA, refcount_bits=8, snaps=('s1',))),
    ('rb64', _qcow2(size='10M', data=BIG, refcount_bits=64, snaps=('s1',))),
    ('ext-l2', _qcow2(size='10M', data=BIG, extended_l2=True, snaps=('s1',))),
    ('ext-l2-zero', _qcow2(size='4M', data=DATA, zero=((0, 4 * KIB), (2 * MIB, 64 * KIB)),
                           extended_l2=True, snaps=('s1',))),
    ('zero', _qcow2(size='4M', data=DATA, zero=((0, 64 * KIB), (2 * MIB, 128 * KIB)),
                    snaps=('s1',))),
    ('zero-v2', _qcow2(size='4M', data=DATA, zero=((0, 64 * KIB), (2 * MIB, 128 * KIB)),
                       compat='0.10', snaps=('s1',))),
    ('compressed', _compressed(snaps=('s1',))),
    ('zstd', _compressed(snaps=('s1',), compression_type='zstd')),
    ('lazy', _qcow2(data=DATA, lazy_refcounts=True, snaps=('s1',))),
    ('backing', _backed(snaps=('s1',))),
    ('big-l1', _qcow2(size='100G', data=((0xaa, 0, 64 * KIB), (0xbb, 50 * GIB, 64 * KIB)),
                      snaps=('s1',))),
    ('many-snaps', _then(_qcow2(data=DATA, snaps=('s1',)), ('write', 0xcc, 0, 128 * KIB),
                         ('snap', 's2'), ('write', 0xdd, 600 * KIB, 64 * KIB), ('snap', 's1'),
                         ('zero', 700 * KIB, 64 * KIB), ('snap', 's3'))),
    ('rewritten', _then(_qcow2(data=DATA, snaps=('s1',)), ('write', 0xcc, 0, 1 * MIB))),
    ('resized', _then(_qcow2(data=DATA, snaps=('s1',)), ('resize', '3M'),
                      ('write', 0xcc, 2 * MIB, 64 * KIB))),
    ('bitmap', _then(_qcow2(data=DATA, snaps=('s1',)), ('bitmap', 'b0'),
                     ('write', 0xcc, 0, 64 * KIB))),
    ('shrunk', _then(_qcow2(size='10M', data=BIG, snaps=('s1',)), ('shrink', '4M'),
                     ('write', 0xcc, 0, 64 * KIB))),
    ('shrunk-c512', _then(_qcow2(size='10M', data=BIG, cluster_size=512, snaps=('s1',)),
                          ('shrink', '1M'))),
]

OPS = [
    ('create', ['-c', 'new']),
    ('create-dup', ['-c', 's1']),
    ('list', ['-l']),
    ('apply', ['-a', 's1']),
    ('apply-id', ['-a', '1']),
    ('delete', ['-d', 's1']),
    ('delete-id', ['-d', '1']),
]

CASES = [('%s-%s' % (lid, oid), b, args) for lid, b in LAYOUTS for oid, args in OPS]

# the command line, other formats, errors
CASES += [
    ('no-args', _qcow2(), []),
    ('no-file', _qcow2(), ['-c', 's']),
    ('two-files', _qcow2(), ['-c', 's', 'img', 'img']),
    ('missing-arg', _qcow2(), ['img', '-c']),
    ('unknown-opt', _qcow2(), ['-x', 'img']),
    ('mix', _qcow2(), ['-l', '-c', 's', 'img']),
    ('mix2', _qcow2(), ['-d', 's', '-a', 's', 'img']),
    ('no-action', _qcow2(data=DATA, snaps=('s1',)), ['img']),
    ('no-action-bitmap', _then(_qcow2(data=DATA), ('bitmap', 'b0')), ['img']),
    ('quiet', _qcow2(data=DATA), ['-q', '-c', 's', 'img']),
    ('format', _qcow2(data=DATA), ['-f', 'qcow2', '-c', 's', 'img']),   # 7.2 has no -f
    ('nonexistent', _qcow2(), ['-c', 's', 'nonexistent']),
    ('share-list', _qcow2(snaps=('s1',)), ['-U', '-l', 'img']),
    ('share-create', _qcow2(), ['-U', '-c', 's', 'img']),
    ('list-none', _qcow2(data=DATA), ['-l', 'img']),
    ('apply-unknown', _qcow2(snaps=('s1',)), ['-a', 'nope', 'img']),
    ('delete-unknown', _qcow2(snaps=('s1',)), ['-d', 'nope', 'img']),
    ('delete-none', _qcow2(), ['-d', '1', 'img']),
    ('apply-bitmap', _then(_qcow2(data=DATA, snaps=('s1',)), ('bitmap', 'b0')),
     ['-a', 's1', 'img']),
    ('data-file-list', _qcow2(data=DATA, data_file='img.data'), ['-l', 'img']),
    ('data-file-create', _qcow2(data=DATA, data_file='img.data'), ['-c', 's', 'img']),
    ('data-file-apply', _qcow2(data=DATA, data_file='img.data'), ['-a', 's', 'img']),
    ('data-file-delete', _qcow2(data=DATA, data_file='img.data'), ['-d', 's', 'img']),
    ('id-and-name', _then(_qcow2(data=DATA, snaps=('2', 'x')), ('snap', '1')),
     ['-d', '2', 'img']),
    ('id-and-name-apply', _then(_qcow2(data=DATA, snaps=('2', 'x')), ('snap', '1')),
     ['-a', '2', 'img']),
    ('long-name', _qcow2(data=DATA), ['-c', 'n' * 300, 'img']),
    # odd and broken tables
    ('sn-l1-unaligned-delete', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                      lambda q: q.set_snapshot_field(0, 'l1_table_offset',
                                        q.snapshots()[0].l1_table_offset + 512)),
     ['-d', 's1', 'img']),
    ('sn-l1-unaligned-apply', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                     lambda q: q.set_snapshot_field(0, 'l1_table_offset',
                                       q.snapshots()[0].l1_table_offset + 512)),
     ['-a', 's1', 'img']),
    ('sn-l1-too-large-delete', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                      lambda q: q.set_snapshot_field(0, 'l1_size', 1 << 24)),
     ['-d', 's1', 'img']),
    ('sn-l1-too-large-apply', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                     lambda q: q.set_snapshot_field(0, 'l1_size', 1 << 24)),
     ['-a', 's1', 'img']),
    ('sn-l1-too-large-list', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                    lambda q: q.set_snapshot_field(0, 'l1_size', 1 << 24)),
     ['-l', 'img']),
    ('sn-table-beyond-eof-list', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                        lambda q: q.set_header('snapshots_offset', 1 << 40)),
     ['-l', 'img']),
    ('sn-extra-too-large-list', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                       lambda q: q.set_snapshot_field(0, 'extra_data_size',
                                                                      5000)),
     ['-l', 'img']),
    ('sn-extra-too-large-create', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                         lambda q: q.set_snapshot_field(0, 'extra_data_size',
                                                                        5000)),
     ['-c', 'x', 'img']),
    ('v2-extra0-create', _poked(_qcow2(data=DATA, compat='0.10', snaps=('s1', 's2')),
                                _retable(lambda e: b'')), ['-c', 'x', 'img']),
    ('v2-extra0-delete', _poked(_qcow2(data=DATA, compat='0.10', snaps=('s1', 's2')),
                                _retable(lambda e: b'')), ['-d', 's1', 'img']),
    ('v2-extra0-apply', _poked(_qcow2(data=DATA, compat='0.10', snaps=('s1', 's2')),
                               _retable(lambda e: b'')), ['-a', 's1', 'img']),
    ('v3-extra16-create', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                 _retable(lambda e: e[:16])), ['-c', 'x', 'img']),
    ('v3-unknown-extra-create', _poked(_qcow2(data=DATA, snaps=('s1', 's2')),
                                       _retable(lambda e: e + b'unknown!' * 3)),
     ['-c', 'x', 'img']),
    ('v3-unknown-extra-delete', _poked(_qcow2(data=DATA, snaps=('s1', 's2')),
                                       _retable(lambda e: e + b'unknown!' * 3)),
     ['-d', 's1', 'img']),
    ('id-9-create', _poked(_qcow2(data=DATA, snaps=('s1', 's2')), lambda q: q.pwrite(
        q.snapshots()[0].offset + 40 + q.snapshots()[0].extra_data_size, b'9')),
     ['-c', 'x', 'img']),
    ('id-text-create', _poked(_qcow2(data=DATA, snaps=('s1',)), lambda q: q.pwrite(
        q.snapshots()[0].offset + 40 + q.snapshots()[0].extra_data_size, b'a')),
     ['-c', 'x', 'img']),
    ('id-apply', _poked(_qcow2(data=DATA, snaps=('s1', 's2')), lambda q: q.pwrite(
        q.snapshots()[1].offset + 40 + q.snapshots()[1].extra_data_size, b'7')),
     ['-a', '7', 'img']),
    ('l1-entry-unaligned-create', _poked(_qcow2(data=DATA), _l1_entry_unaligned),
     ['-c', 'x', 'img']),
    ('l1-entry-unaligned-create-v2', _poked(_qcow2(data=DATA, compat='0.10'),
                                            _l1_entry_unaligned), ['-c', 'x', 'img']),
    ('l2-entry-unaligned-create', _poked(_qcow2(data=DATA), _l2_entry_unaligned),
     ['-c', 'x', 'img']),
    ('corrupt-bit-create', _poked(_qcow2(data=DATA), lambda q: q.set_incompat_bit(1)),
     ['-c', 'x', 'img']),
    ('corrupt-bit-list', _poked(_qcow2(data=DATA, snaps=('s1',)),
                                lambda q: q.set_incompat_bit(1)), ['-l', 'img']),
    ('dirty-lazy-create', _poked(_qcow2(data=DATA, lazy_refcounts=True),
                                 lambda q: q.set_incompat_bit(0)), ['-c', 'x', 'img']),
]
for fmt in ('raw', 'qed', 'vdi'):
    for oid, args in (('list', ['-l']), ('create', ['-c', 's']), ('apply', ['-a', 's']),
                      ('delete', ['-d', 's'])):
        CASES.append(('%s-%s' % (fmt, oid), _plain(fmt), args))


# command-line cases whose arguments are taken as they are
SPECIAL = {'no-args', 'no-file', 'two-files', 'missing-arg', 'unknown-opt', 'mix', 'mix2'}


def _argv(cid, args):
    """The case's arguments, with the file name appended unless the case names files."""
    if cid in SPECIAL or 'img' in args or 'nonexistent' in args:
        return list(args)
    return list(args) + ['img']


# -- comparison helpers ------------------------------------------------------------------------

def _sn_dates(buf):
    """Offsets of the date fields (8 bytes each) of a qcow2 file's snapshot table entries."""
    if len(buf) < 72 or buf[:4] != b'QFI\xfb':
        return []
    nb, = struct.unpack('>I', buf[60:64])
    off, = struct.unpack('>Q', buf[64:72])
    out = []
    for _ in range(nb):
        off = (off + 7) & ~7
        if off + 40 > len(buf):
            break
        id_len, name_len = struct.unpack('>HH', buf[off + 12:off + 16])
        extra, = struct.unpack('>I', buf[off + 36:off + 40])
        out.append(off + 16)
        off += 40 + extra + id_len + name_len
    return out


def _masked(buf):
    b = bytearray(buf)
    for o in _sn_dates(buf):
        b[o:o + 8] = bytes(8)
    return bytes(b)


def _same_files(a, b):
    fa, fb = read_all(a), read_all(b)
    assert sorted(fa) == sorted(fb)
    for n in fa:
        assert len(fa[n]) == len(fb[n]), n
        assert _masked(fa[n]) == _masked(fb[n]), '%s differs from qemu-img\'s' % n


def _info(d, *extra):
    rc, out, err = qemu.qemu_img('info', '--output=json', '-U', *extra, 'img', cwd=d)
    if rc:
        return rc, err
    j = json.loads(out)
    for sn in j.get('snapshots', []):
        sn.pop('date-sec')
        sn.pop('date-nsec')
    j.pop('actual-size', None)   # the file system's allocation, not the image
    return rc, j


def _map(d):
    return qemu.qemu_img('map', '--output=json', '-U', 'img', cwd=d)


def _fmt_of(d):
    rc, out, _ = qemu.qemu_img('info', '--output=json', '-U', 'img', cwd=d)
    return json.loads(out)['format'] if rc == 0 else None


def _run_pair(tmp_path, build, args):
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    a = qemu.copy_dir(str(orig), str(tmp_path / 'qemu'))
    b = qemu.copy_dir(str(orig), str(tmp_path / 'qimg'))
    ra = qemu.run(qemu.tool_path('qemu'), 'snapshot', *args, cwd=a)
    t0 = time.time()
    rb = qemu.run(qemu.tool_path('qimg'), 'snapshot', *args, cwd=b)
    t1 = time.time()
    return str(orig), a, b, ra, rb, (t0, t1)


def _check_new_dates(orig, b, when):
    """Snapshots that qimg added carry a date from its run's clock, in microseconds."""
    p = os.path.join(b, 'img')
    if not os.path.exists(p):
        return
    before = open(os.path.join(orig, 'img'), 'rb').read()
    old = {bytes(before[o:o + 8]) for o in _sn_dates(before)}
    buf = open(p, 'rb').read()
    for o in _sn_dates(buf):
        if buf[o:o + 8] in old:
            continue
        sec, nsec = struct.unpack('>II', buf[o:o + 8])
        assert nsec % 1000 == 0 and nsec < 10 ** 9
        assert int(when[0]) <= sec <= int(when[1]) + 1


def _assert_like_qemu(orig, a, b, ra, rb, when):
    assert rb == ra
    _same_files(a, b)
    _check_new_dates(orig, b, when)
    if _fmt_of(b) == 'qcow2':
        assert _info(b) == _info(a)
        assert _map(b) == _map(a)
        # a clean image stays clean (the broken ones of the poked cases stay broken as
        # qemu leaves them: the files are compared above)
        if ra[0] == 0 and qemu.is_clean_by_qemu('img', cwd=orig)[0]:
            ok, detail = qemu.is_clean_by_qemu('img', cwd=b)
            assert ok, detail


@pytest.mark.parametrize('build,args', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_snapshot_matches_qemu(tmp_path, request, build, args):
    _assert_like_qemu(*_run_pair(tmp_path, build, _argv(request.node.callspec.id, args)))


# sequences: every step made by both tools on their own copy
SEQUENCES = [
    ('create-apply-delete', _qcow2(data=DATA),
     [['-c', 'a'], ['write', 0xcc, 0, 128 * KIB], ['-c', 'b'], ['-a', 'a'], ['-d', 'b'],
      ['-d', 'a'], ['-l']]),
    ('c512-rb2', _qcow2(size='4M', data=DATA, cluster_size=512, refcount_bits=2),
     [['-c', 'a'], ['write', 0xcc, 0, 128 * KIB], ['-c', 'b'], ['-a', 'a'], ['-d', 'a'],
      ['-d', 'b']]),
    ('delete-all-then-create', _qcow2(data=DATA, snaps=('s1', 's2')),
     [['-d', 's1'], ['-d', 's2'], ['-c', 's3'], ['-d', 's3']]),
    ('apply-after-resize', _then(_qcow2(data=DATA, snaps=('s1',)), ('resize', '3M')),
     [['-a', 's1'], ['-c', 's2'], ['-d', 's1']]),
    ('rb64-compressed', _compressed(refcount_bits=64),
     [['-c', 'a'], ['write', 0xcc, 0, 64 * KIB], ['-a', 'a'], ['-d', 'a']]),
]


@pytest.mark.parametrize('build,steps', [c[1:] for c in SEQUENCES],
                         ids=[c[0] for c in SEQUENCES])
def test_snapshot_sequence_matches_qemu(tmp_path, build, steps):
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    a = qemu.copy_dir(str(orig), str(tmp_path / 'qemu'))
    b = qemu.copy_dir(str(orig), str(tmp_path / 'qimg'))
    failed = False
    for s in steps:
        if s[0] == 'write':
            for d in (a, b):
                qemu.write_pattern(os.path.join(d, 'img'), *s[1:])
            continue
        ra = qemu.run(qemu.tool_path('qemu'), 'snapshot', *s, 'img', cwd=a)
        rb = qemu.run(qemu.tool_path('qimg'), 'snapshot', *s, 'img', cwd=b)
        if s == ['-l']:
            # the dates are the runs' own: compare the table without them
            ra = (ra[0], [ln[:45] for ln in ra[1].splitlines()], ra[2])
            rb = (rb[0], [ln[:45] for ln in rb[1].splitlines()], rb[2])
        assert rb == ra, s
        _same_files(a, b)
        assert _info(b) == _info(a), s
        assert _map(b) == _map(a), s
        # a failed step (e.g. a refcount overflow) leaves qemu's leaks behind for good
        failed = failed or ra[0] != 0
        if not failed:
            ok, detail = qemu.is_clean_by_qemu('img', cwd=b)
            assert ok, (s, detail)


def test_list_matches_info_table(tmp_path):
    """-l prints the table info prints (one renderer)."""
    d = str(tmp_path)
    _then(_qcow2(data=DATA, snaps=('s1', 'second')), ('snap', 'x' * 40))(d)
    rc, out, err = qemu.qimg('snapshot', '-l', 'img', cwd=d)
    assert (rc, err) == (0, '')
    rc, info, _ = qemu.qimg('info', 'img', cwd=d)
    lines = info.splitlines()
    i = lines.index('Snapshot list:')
    assert out.splitlines() == lines[i:i + 5]


def test_help_lists_snapshot():
    rc, out, _ = qemu.qimg('--help')
    assert rc == 0
    assert [ln.split() for ln in out.splitlines() if ln.split()[:1] == ['snapshot']] == \
        [['snapshot']]
    rc, out, err = qemu.qimg('snapshot', '--help')
    assert rc == 0 and '--dry-run' in out and '--journal' in out


# -- fault injection ---------------------------------------------------------------------------

FAULT_CASES = [
    ('create', _qcow2(data=DATA, snaps=('s1',)), ['-c', 'new']),
    ('create-c512-rb2', _qcow2(size='4M', data=BIG[:1], cluster_size=512, refcount_bits=2,
                               snaps=('s1',)), ['-c', 'new']),
    ('create-compressed', _compressed(), ['-c', 'new']),
    ('create-ext-l2', _qcow2(size='4M', data=DATA, extended_l2=True), ['-c', 'new']),
    ('create-bitmap', _then(_qcow2(data=DATA), ('bitmap', 'b0')), ['-c', 'new']),
    ('create-lazy', _qcow2(data=DATA, lazy_refcounts=True), ['-c', 'new']),
    ('delete', _then(_qcow2(data=DATA, snaps=('s1',)), ('write', 0xcc, 0, 1 * MIB)),
     ['-d', 's1']),
    ('delete-shared', _qcow2(data=DATA, snaps=('s1', 's2')), ['-d', 's1']),
    ('delete-c512', _then(_qcow2(size='4M', data=BIG[:1], cluster_size=512, snaps=('s1',)),
                          ('write', 0xcc, 0, 32 * KIB)), ['-d', 's1']),
    ('delete-compressed', _compressed(snaps=('s1',)), ['-d', 's1']),
    ('apply', _then(_qcow2(data=DATA, snaps=('s1',)), ('write', 0xcc, 0, 1 * MIB)),
     ['-a', 's1']),
    ('apply-resized', _then(_qcow2(data=DATA, snaps=('s1',)), ('resize', '3M'),
                            ('write', 0xcc, 2 * MIB, 64 * KIB)), ['-a', 's1']),
]


def _cut_is_harmless(d, n, contents):
    """What a cut may leave (qemu's own order leaves the same): leaks, and OFLAG_COPIED out
    of step with a refcount in the window between a refblock write and the L2/L1 write that
    follows it. qemu-img check counts those as corruptions, but they are harmless: the
    extra reference of a snapshot not yet in the table is a leak (a write in place corrupts
    nothing), a missing COPIED flag only costs a copy on the next write. Nothing else may be
    found, `qemu-img check -r all` must leave a clean image, and the guest content must be
    the one before or after the operation."""
    rc, j, out, err = qemu.check_json('qemu', 'img', cwd=d)
    assert j is not None and not j.get('check-errors'), 'cut after write %d: %s %s' % (n, out,
                                                                                     err)
    errors = [ln for ln in err.splitlines() if ln.startswith('ERROR')]
    assert all(ln.startswith('ERROR OFLAG_COPIED ') for ln in errors), \
        'cut after write %d: %s' % (n, err)
    assert j.get('corruptions', 0) == len(errors), 'cut after write %d: %s' % (n, err)
    if contents is not None:
        assert qemu.guest_sha256('img', cwd=d)[0] in contents, 'cut after write %d' % n
    qemu.qemu_img('check', '-r', 'all', 'img', cwd=d)
    ok, detail = qemu.is_clean_by_qemu('img', cwd=d)
    assert ok, 'cut after write %d, repaired: %s' % (n, detail)


# -a first resizes the image to the snapshot's disk size (the driver's truncate, whose own
# cuts test_resize.py tests): there the guest content of a cut is not checked
RESIZED_FIRST = {'apply-resized'}


@pytest.mark.parametrize('build,args', [c[1:] for c in FAULT_CASES],
                         ids=[c[0] for c in FAULT_CASES])
def test_snapshot_cut_at_every_write(tmp_path, request, build, args):
    orig = build_orig(tmp_path, build)
    # the guest content before and after the operation (made by the real qemu-img)
    ref = qemu.copy_dir(orig, str(tmp_path / 'ref'))
    contents = {qemu.guest_sha256('img', cwd=ref)[0]}
    qemu.run(qemu.QEMU_IMG, 'snapshot', *args, 'img', cwd=ref, check=True)
    contents.add(qemu.guest_sha256('img', cwd=ref)[0])
    if request.node.callspec.id in RESIZED_FIRST:
        contents = None
    n = cut_at_every_write(tmp_path, orig, 'snapshot', [*args, 'img'],
                           lambda n, d: _cut_is_harmless(d, n, contents), limit=1000)
    assert n > 3   # the operation wrote several times, so several cuts were tested


# -- --dry-run and --journal (beyond qemu-img) -------------------------------------------------

PORT_CASES = [
    ('create', _qcow2(data=DATA, snaps=('s1',)), ['-c', 'new']),
    ('create-bitmap', _then(_qcow2(data=DATA), ('bitmap', 'b0')), ['-c', 'new']),
    ('create-backing', _backed(), ['-c', 'new']),
    ('delete', _then(_qcow2(data=DATA, snaps=('s1',)), ('write', 0xcc, 0, 1 * MIB)),
     ['-d', 's1']),
    ('apply', _then(_qcow2(data=DATA, snaps=('s1',)), ('write', 0xcc, 0, 1 * MIB)),
     ['-a', 's1']),
    ('apply-resized', _then(_qcow2(data=DATA, snaps=('s1',)), ('resize', '3M')),
     ['-a', 's1']),
    ('c512', _then(_qcow2(size='4M', data=BIG[:1], cluster_size=512, snaps=('s1',)),
                   ('write', 0xcc, 0, 32 * KIB)), ['-d', 's1']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_snapshot_dry_run_writes_nothing(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    rc, out, err = dry_run(tmp_path, orig, 'snapshot', [*args, 'img'])
    assert (rc, err) == (0, '')
    assert out.startswith("Snapshot plan for 'img' (dry run, nothing was written): ")
    assert len(out.splitlines()) > 1


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_snapshot_journal_then_undo(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    d, ref, before, jr, ra, rb = journal_pair(tmp_path, orig, 'snapshot', [*args, 'img'],
                                              'snap.journal')
    assert rb == ra
    _same_files(ref, d)
    ok, detail = qemu.is_clean_by_qemu('img', cwd=d)
    assert ok, detail
    undo_restores(jr, 'img', d, before)


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES[:4]],
                         ids=[c[0] for c in PORT_CASES[:4]])
def test_snapshot_journal_cut_then_undo(tmp_path, build, args):
    """A --journal run killed after each of its writes: qimg undo puts every byte back."""
    orig = build_orig(tmp_path, build)
    n = journal_cut_then_undo(tmp_path, orig, 'snapshot', [*args, 'img'], limit=1000)
    assert n > 1


def test_snapshot_dry_run_journal_refusals(tmp_path):
    d = str(tmp_path)
    _qcow2(data=DATA, data_file='img.data')(d)
    before = read_all(d)
    for opt in (['--dry-run'], ['--journal', str(tmp_path / 'j')]):
        rc, out, err = qemu.qimg('snapshot', *opt, '-c', 's', 'img', cwd=d)
        assert (rc, out) == (1, '')
        assert err == 'qimg: --dry-run and --journal are not supported for images with an ' \
            'external data file\n'
        rc, out, err = qemu.qimg('snapshot', *opt, '-l', 'img', cwd=d)
        assert (rc, out, err) == (1, '', 'qimg: --%s needs -c, -a or -d\n' % opt[0].lstrip('-'))
    rc, out, err = qemu.qimg('snapshot', '--dry-run', '--journal', 'j', '-c', 's', 'img', cwd=d)
    assert (rc, out, err) == (1, '', 'qimg: --dry-run and --journal cannot be used together\n')
    assert read_all(d) == before
    assert not os.path.exists(str(tmp_path / 'j'))


def test_snapshot_refused_while_in_use(tmp_path):
    """Another process holds the image: qemu-img's lock message, nothing written, for the
    plain run and for --journal."""
    d = str(tmp_path)
    _qcow2(data=DATA)(d)
    before = read_all(d)
    with qemu.held_open('img', cwd=d):
        ra = qemu.run(qemu.QEMU_IMG, 'snapshot', '-c', 's', 'img', cwd=d)
        rb = qemu.run(qemu.tool_path('qimg'), 'snapshot', '-c', 's', 'img', cwd=d)
        rj = qemu.run(qemu.tool_path('qimg'), 'snapshot', '--journal', 'j', '-c', 's', 'img',
                      cwd=d)
    assert ra[0] == 1 and 'lock' in ra[2]
    assert rb == ra
    assert rj == ra
    assert read_all(d) == before


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('setpriv'),
                    reason='needs root to run the tools as another user')
def test_snapshot_read_only_file(tmp_path):
    """A file the user cannot write: -l works, the others fail at the open as qemu's."""
    d = tmp_path / 'ro'
    d.mkdir()
    _qcow2(data=DATA, snaps=('s1',))(str(d))
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(d), 0o755)
    os.chmod(str(d / 'img'), 0o444)
    before = read_all(str(d))
    as_nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
    for args in (['-l'], ['-c', 'x'], ['-a', 's1'], ['-d', 's1']):
        ra = qemu.run(*as_nobody, qemu.tool_path('qemu'), 'snapshot', *args, 'img', cwd=str(d))
        rb = qemu.run(*as_nobody, qemu.tool_path('qimg'), 'snapshot', *args, 'img', cwd=str(d))
        assert rb == ra, args
        assert (ra[0] == 0) == (args == ['-l'])
    assert read_all(str(d)) == before


@pytest.mark.parametrize('build,args', [
    (_qcow2(data=DATA, refcount_bits=1), ['-c', 's']),   # fails half-way in qemu
    (_qcow2(data=DATA, snaps=('s1',)), ['-d', 'nope']),
    (_then(_qcow2(data=DATA, snaps=('s1',)), ('bitmap', 'b0')), ['-a', 's1']),
], ids=['refcount-overflow', 'unknown', 'bitmaps'])
def test_snapshot_ported_failure_writes_nothing(tmp_path, build, args):
    """A failing -c/-a/-d under --dry-run or --journal: qemu-img's message and exit code,
    and nothing written (no plan printed, no journal left)."""
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    ref = qemu.copy_dir(str(orig), str(tmp_path / 'ref'))
    ra = qemu.run(qemu.tool_path('qemu'), 'snapshot', *args, 'img', cwd=ref)
    assert ra[0] == 1
    d = qemu.copy_dir(str(orig), str(tmp_path / 'd'))
    before = read_all(d)
    jr = str(tmp_path / 'j')
    for opt in (['--dry-run'], ['--journal', jr]):
        rb = qemu.run(qemu.tool_path('qimg'), 'snapshot', *opt, *args, 'img', cwd=d)
        assert rb == ra, opt
        assert read_all(d) == before
    assert not os.path.exists(jr)


def test_snapshot_delete_blkdebug_cluster_free(tmp_path):
    """iotest 217: an I/O error from the first cluster_free of `snapshot -d` on: qemu's
    two messages and exit status, and the image left with the same leaks (byte-identical
    to qemu's result)."""
    import filecmp
    orig = tmp_path / 'orig'
    orig.mkdir()
    qemu.make_image(str(orig / 't.qcow2'), size='64M')
    qemu.io(str(orig / 't.qcow2'), 'write 0 64k', cwd=str(orig))
    qemu.qemu_img('snapshot', '-c', 'foo', str(orig / 't.qcow2'), check=True)
    (orig / 'bd.conf').write_text('[inject-error]\nevent = "cluster_free"\nerrno = "5"\n')
    outs, dirs = [], []
    for tool in ('qemu', 'qimg'):
        d = qemu.copy_dir(str(orig), str(tmp_path / tool))
        outs.append(qemu.run(qemu.tool_path(tool), 'snapshot', '-d', 'foo',
                             'blkdebug:bd.conf:t.qcow2', cwd=d))
        dirs.append(d)
    assert outs[1] == outs[0]
    assert outs[0][0] == 1 and 'Failed to free the cluster and L1 table' in outs[0][2]
    assert filecmp.cmp(os.path.join(dirs[0], 't.qcow2'), os.path.join(dirs[1], 't.qcow2'),
                       shallow=False)
