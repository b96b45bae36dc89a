"""Salvage from damaged qcow2 images qemu-img 7.2 cannot open (src/block/salvage.c).

Each case builds an image with the real qemu-img/qemu-io, records the guest bytes qemu-img
reads from it before the damage (qemu-img convert -O raw), then damages it with byte edits
(tests/py/qcow2poke.py): one edit that makes qemu-img refuse to open the image (checked),
plus the data damage under test. The salvage must then
  - leave the source file untouched,
  - report exactly the expected lost (and suspect) guest ranges, with their reason,
  - give every byte outside the lost ranges as qemu-img read it before the damage, and
    zeros inside them,
  - exit 2 when something was lost, 3 when ranges were only suspect, 0 otherwise.
The salvage runs through build/qimg-salvage (the reader on its own) and, where the build has
it, `qimg convert --salvage -O raw` (the user's way to it).
"""

import hashlib
import os
import re
import subprocess

import pytest

import qemu
from qcow2poke import Qcow2, OFLAG_COPIED

KIB, MIB = 1 << 10, 1 << 20
QIMG_SALVAGE = os.path.join(os.path.dirname(qemu.QIMG), 'qimg-salvage')

LINE = re.compile(r'^\S+: .+: salvage: (lost|suspect) 0x([0-9a-f]+)\+0x([0-9a-f]+) '
                  r'\((\d+) bytes\): (.*)$')


def _sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _base(d, size='4M', writes=('write -P 0x11 0 256k', 'write -P 0x22 1M 64k',
                                'write -P 0x33 3M 128k'), **opts):
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, size, **opts)
    if writes:
        qemu.io(p, *writes)
    return p


def _good_bytes(p, d):
    raw = os.path.join(d, 'good.raw')
    qemu.qemu_img('convert', '-O', 'raw', p, raw, check=True)
    with open(raw, 'rb') as f:
        return f.read()


# -- damage that makes qemu-img refuse the image ----------------------------------------

def refuse_reftable_offset(q):
    q.set_header('refcount_table_offset', q.header('refcount_table_offset') + 512)


def refuse_snapshots(q):
    q.set_header('nb_snapshots', 70000)


def refuse_no_reftable(q):
    q.set_header('refcount_table_clusters', 0)


def refuse_l1_too_large(q):
    q.set_header('l1_size', 0x2000000)


REFUSALS = {
    'reftable-offset': refuse_reftable_offset,
    'snapshots': refuse_snapshots,
    'no-reftable': refuse_no_reftable,
    'l1-too-large': refuse_l1_too_large,
}


# -- data damage; each returns the expected [(kind, off, len, reason words)] ------------

def dmg_none(q, d):
    return []


def dmg_l2_past_eof(q, d):
    q.set_l1(0, (1 << 30) | OFLAG_COPIED)
    return [('lost', 0, 4 * MIB, 'L2 table at 0x40000000 lies past the end of the image file')]


def dmg_l2_unaligned(q, d):
    l2 = q.l2_offset(0)
    q.set_l1(0, (l2 + 512) | OFLAG_COPIED)
    return [('lost', 0, 4 * MIB, 'L2 table offset 0x%x is not cluster aligned' % (l2 + 512))]


def dmg_data_past_eof(q, d):
    q.set_l2_for_guest(64 * KIB, (1 << 30) | OFLAG_COPIED)
    q.set_l2_for_guest(128 * KIB, ((1 << 30) + 64 * KIB) | OFLAG_COPIED)
    return [('lost', 64 * KIB, 128 * KIB,
             'data cluster at 0x40000000 lies past the end of the image file')]


def dmg_data_unaligned(q, d):
    h = q.host_offset(64 * KIB)
    q.set_l2_for_guest(64 * KIB, (h + 512) | OFLAG_COPIED)
    return [('lost', 64 * KIB, 64 * KIB,
             'data cluster offset 0x%x is not cluster aligned' % (h + 512))]


def dmg_data_on_l1(q, d):
    l1 = q.header('l1_table_offset')
    q.set_l2_for_guest(192 * KIB, l1 | OFLAG_COPIED)
    return [('lost', 192 * KIB, 64 * KIB,
             'data cluster at 0x%x lies on metadata (header, L1 or L2 table)' % l1)]


def dmg_data_on_l2(q, d):
    l2 = q.l2_offset(0)
    q.set_l2_for_guest(MIB, l2 | OFLAG_COPIED)
    return [('lost', MIB, 64 * KIB,
             'data cluster at 0x%x lies on metadata (header, L1 or L2 table)' % l2)]


def dmg_truncated(q, d):
    # the last data cluster is guest 3M+64k; cut 1000 bytes into it
    h = q.host_offset(3 * MIB + 64 * KIB)
    assert h + 64 * KIB == q.file_size()
    q.truncate(h + 1000)
    return [('lost', 3 * MIB + 64 * KIB + 1000, 64 * KIB - 1000,
             'data cluster at 0x%x lies past the end of the image file' % h)]


def dmg_shared_data(q, d):
    h = q.host_offset(0)
    q.set_l2_for_guest(MIB, h | OFLAG_COPIED)
    return [('suspect', 0, 64 * KIB, 'host cluster 0x%x is mapped by more than one' % h),
            ('suspect', MIB, 64 * KIB, 'host cluster 0x%x is mapped by more than one' % h)]


def dmg_refblocks_garbage(q, d):
    # a broken refcount structure costs no data
    for i in range(4):
        q.set_rt(i, 0xdeadbeef00 + i)
    q.pwrite(q.header('refcount_table_offset') + 64, b'\xff' * 64)
    return []


def dmg_l1_past_eof(q, d):
    q.set_header('l1_table_offset', 1 << 30)
    return [('lost', 0, 4 * MIB, 'L1 table entry at 0x40000000 lies past the end')]


DAMAGES = {
    'none': dmg_none,
    'l2-past-eof': dmg_l2_past_eof,
    'l2-unaligned': dmg_l2_unaligned,
    'data-past-eof': dmg_data_past_eof,
    'data-unaligned': dmg_data_unaligned,
    'data-on-l1': dmg_data_on_l1,
    'data-on-l2': dmg_data_on_l2,
    'truncated': dmg_truncated,
    'shared-data': dmg_shared_data,
    'refblocks-garbage': dmg_refblocks_garbage,
    'l1-past-eof': dmg_l1_past_eof,
}


# -- running the salvage ------------------------------------------------------------------

def _tools(refused=True):
    """reader: build/qimg-salvage; convert: `convert --salvage` (the salvage reader only
    for images that do not open); convert-reader: `convert --salvage=reader` (always)."""
    tools = ['reader']
    rc, out, err = qemu.qimg('convert', '--help')
    if '--salvage' in out + err and 'not implemented' not in err:
        tools += ['convert', 'convert-reader'] if refused else ['convert-reader']
    return tools


def _salvage(tool, src, out):
    argv = {'reader': [QIMG_SALVAGE, src, out],
            'convert': [qemu.QIMG, 'convert', '--salvage', '-O', 'raw', src, out],
            'convert-reader': [qemu.QIMG, 'convert', '--salvage=reader', '-O', 'raw', src,
                               out]}[tool]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def _parse(err):
    got = []
    for line in err.splitlines():
        m = LINE.match(line)
        if m:
            off, ln = int(m.group(2), 16), int(m.group(3), 16)
            assert int(m.group(4)) == ln
            got.append((m.group(1), off, ln, m.group(5)))
    return got


def _verify(tool, d, src, good, expected):
    before = _sha(src)
    out = os.path.join(d, 'out-%s.raw' % tool)
    rc, so, se = _salvage(tool, src, out)
    assert _sha(src) == before, 'salvage wrote to the source'
    got = _parse(se)
    assert [g[:3] for g in got] == [e[:3] for e in expected], se
    for g, e in zip(got, expected):
        assert e[3] in g[3], (g, e)
    lost = [e for e in expected if e[0] == 'lost']
    assert rc == (2 if lost else 3 if expected else 0), (rc, so, se)
    with open(out, 'rb') as f:
        data = f.read()
    assert len(data) == len(good)
    want = bytearray(good)
    for _, off, ln, _ in lost:
        want[off:off + ln] = bytes(ln)
    # suspect ranges hold whatever their host cluster holds (the same bytes for every
    # guest range on one cluster), not necessarily what qemu read there before
    by_reason = {}
    for kind, off, ln, why in got:
        if kind == 'suspect':
            want[off:off + ln] = data[off:off + ln]
            by_reason.setdefault(why, set()).add(data[off:off + ln])
    assert all(len(v) == 1 for v in by_reason.values())
    if data != bytes(want):
        first = next(i for i in range(len(data)) if data[i] != want[i])
        pytest.fail('%s: byte 0x%x is %#x, expected %#x' % (tool, first, data[first], want[first]))


def _case(tmp_path, refusal, damage, build=_base):
    d = str(tmp_path)
    src = build(d)
    good = _good_bytes(src, d)
    with Qcow2(src) as q:
        REFUSALS[refusal](q)
        expected = DAMAGES[damage](q, d) if isinstance(damage, str) else damage(q, d)
    rc, _, err = qemu.qemu_img('convert', '-O', 'raw', src, os.path.join(d, 'qemu.raw'))
    assert rc == 1 and 'Could not open' in err, (rc, err)
    for tool in _tools():
        _verify(tool, d, src, good, expected)


@pytest.mark.parametrize('damage', list(DAMAGES))
def test_salvage_damage(tmp_path, qimg_binary, damage):
    _case(tmp_path, 'reftable-offset', damage)


@pytest.mark.parametrize('damage', list(DAMAGES))
def test_salvage_reader_on_images_qemu_opens(tmp_path, qimg_binary, damage):
    """The same damage alone: qemu-img opens the image (and reads zeros, metadata or fails
    per sector there); `convert --salvage=reader` reports what is lost all the same."""
    d = str(tmp_path)
    src = _base(d)
    good = _good_bytes(src, d)
    with Qcow2(src) as q:
        expected = DAMAGES[damage](q, d)
    rc, _, err = qemu.qemu_img('info', src)
    assert rc == 0, err
    for tool in _tools(refused=False):
        _verify(tool, d, src, good, expected)


@pytest.mark.parametrize('refusal', list(REFUSALS))
def test_salvage_refusals(tmp_path, qimg_binary, refusal):
    """Images qemu refuses for damage salvage does not need: nothing lost."""
    _case(tmp_path, refusal, 'data-past-eof')


def test_salvage_l1_too_small(tmp_path, qimg_binary):
    """l1_size below what the virtual size needs: the unmapped tail is lost (4 KiB clusters:
    one L1 entry maps 2 MiB)."""
    def build(d):
        return _base(d, cluster_size=4096)

    def damage(q, d):
        q.set_header('l1_size', 1)
        return [('lost', 2 * MIB, 2 * MIB, 'L1 table (l1_size) is too small')]
    d = str(tmp_path)
    src = build(d)
    good = _good_bytes(src, d)
    with Qcow2(src) as q:
        expected = damage(q, d)
    rc, _, err = qemu.qemu_img('convert', '-O', 'raw', src, os.path.join(d, 'qemu.raw'))
    assert rc == 1 and 'L1 table is too small' in err
    for tool in _tools():
        _verify(tool, d, src, good, expected)


def test_salvage_compressed_garbage(tmp_path, qimg_binary):
    """A compressed cluster whose stream is overwritten does not decompress: lost; the
    other compressed clusters are kept."""
    d = str(tmp_path)
    plain = _base(d)
    src = os.path.join(d, 'c.qcow2')
    qemu.qemu_img('convert', '-c', '-O', 'qcow2', plain, src, check=True)
    good = _good_bytes(src, d)
    with Qcow2(src) as q:
        word, _ = q.l2_entry_for_guest(128 * KIB)
        coff, csize = q.decode_compressed(word)
        # overwrite this stream only (streams are packed: the next one may share the sector)
        others = [q.decode_compressed(q.l2_entry_for_guest(g)[0])[0]
                  for g in range(0, 4 * MIB, 64 * KIB)
                  if q.l2_entry_for_guest(g)[0] & (1 << 62)]
        nxt = min([o for o in others if o > coff] + [coff + csize])
        q.pwrite(coff, b'\xa5' * min(nxt - coff, 32))
        refuse_reftable_offset(q)
    rc, _, err = qemu.qemu_img('convert', '-O', 'raw', src, os.path.join(d, 'qemu.raw'))
    assert rc == 1
    expected = [('lost', 128 * KIB, 64 * KIB,
                 'compressed cluster at 0x%x does not decompress' % coff)]
    for tool in _tools():
        _verify(tool, d, src, good, expected)


def test_salvage_extended_l2_bad_bitmap(tmp_path, qimg_binary):
    """Extended L2: a subcluster with both its allocated and zero bits set is lost, the
    other subclusters of the cluster are kept."""
    d = str(tmp_path)
    src = _base(d, extended_l2=True)
    good = _good_bytes(src, d)
    with Qcow2(src) as q:
        word, bmp = q.l2_entry_for_guest(64 * KIB)
        q.set_l2_for_guest(64 * KIB, bitmap=bmp | (1 << (32 + 3)))
        refuse_snapshots(q)
    rc, _, err = qemu.qemu_img('convert', '-O', 'raw', src, os.path.join(d, 'qemu.raw'))
    assert rc == 1
    expected = [('lost', 64 * KIB + 3 * 2 * KIB, 2 * KIB, 'invalid subcluster bitmap')]
    for tool in _tools():
        _verify(tool, d, src, good, expected)


def test_salvage_missing_backing(tmp_path, qimg_binary):
    """The backing file is gone (qemu: cannot open): the top image's own clusters are
    kept, its unallocated ranges are lost."""
    d = str(tmp_path)
    base = os.path.join(d, 'base.qcow2')
    qemu.make_image(base, '4M')
    qemu.io(base, 'write -P 0x44 0 4M')
    src = os.path.join(d, 'img.qcow2')
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', src,
                  cwd=d, check=True)
    qemu.io(src, 'write -P 0x55 1M 64k', 'write -z 2M 64k')
    good = _good_bytes(src, d)
    os.rename(base, base + '.gone')
    rc, _, err = qemu.qemu_img('convert', '-O', 'raw', src, os.path.join(d, 'qemu.raw'))
    assert rc == 1 and 'Could not open backing file' in err
    # the backing file's bytes are what is lost (salvage zeros them)
    expected = [('lost', 0, MIB, 'backing file did not open'),
                ('lost', MIB + 64 * KIB, MIB - 64 * KIB, 'backing file did not open'),
                ('lost', 2 * MIB + 64 * KIB, 2 * MIB - 64 * KIB, 'backing file did not open')]
    for tool in _tools():
        _verify(tool, d, src, good, expected)


def test_salvage_not_qcow2(tmp_path, qimg_binary):
    d = str(tmp_path)
    p = os.path.join(d, 'x.raw')
    with open(p, 'wb') as f:
        f.write(b'\0' * 4096)
    rc, _, err = _salvage('reader', p, os.path.join(d, 'o'))
    assert rc == 1 and 'salvage reads qcow2 images only' in err


def test_salvage_header_unusable(tmp_path, qimg_binary):
    """Damage salvage cannot get past (the L1 table cannot be found): refused, exit 1,
    the source untouched."""
    d = str(tmp_path)
    src = _base(d)
    with Qcow2(src) as q:
        q.set_header('l1_table_offset', q.header('l1_table_offset') + 8)
    before = _sha(src)
    rc, _, err = _salvage('reader', src, os.path.join(d, 'o'))
    assert rc == 1 and 'Active L1 table offset invalid' in err, err
    assert _sha(src) == before


@pytest.mark.parametrize('layout', ['4k', '16k-extl2'])
def test_salvage_agrees_with_qemu_on_fuzzed_images(tmp_path, qimg_binary, layout):
    """Random byte damage in the metadata of images qemu-img still reads (no corruption
    event): outside the ranges salvage reports, its bytes are qemu's; and it never crashes,
    hangs or writes to the source, whatever the damage."""
    import random
    d = str(tmp_path)
    base = os.path.join(d, 'base.qcow2')
    opts = {'cluster_size': 4096} if layout == '4k' else {'cluster_size': 16384,
                                                          'extended_l2': True}
    qemu.make_image(base, '8M', **opts)
    qemu.io(base, 'write -P 0x11 0 1M', 'write -P 0x22 2M 3k', 'write -z 3M 64k',
            'write -P 0x33 6M 5k', 'write -c -P 0x44 7M 16k')
    with open(base, 'rb') as f:
        data = f.read()
    f_img, q_raw, s_raw = (os.path.join(d, n) for n in ('f.qcow2', 'q.raw', 's.raw'))
    compared = 0
    for seed in range(40):
        r = random.Random(seed)
        b = bytearray(data)
        for _ in range(r.randint(1, 6)):
            off = r.randrange(0, min(len(b), 65536) if r.random() < 0.8 else len(b))
            b[off:off + 8] = r.randbytes(8) if r.random() < 0.5 else bytes([r.randrange(256)]) * 8
        with open(f_img, 'wb') as f:
            f.write(b)
        rc, out, err = _salvage('reader', f_img, s_raw)
        assert rc in (0, 1, 2, 3), (seed, rc, err)
        with open(f_img, 'rb') as f:
            assert f.read() == b, seed
        q = qemu.qemu_img('convert', '-O', 'raw', f_img, q_raw)
        if q[0] != 0 or 'corrupt' in q[2] or rc == 1:
            continue
        compared += 1
        with open(q_raw, 'rb') as f:
            qa = bytearray(f.read())
        with open(s_raw, 'rb') as f:
            sa = f.read()
        assert len(qa) == len(sa), seed
        for _, off, ln, _ in _parse(err):
            qa[off:off + ln] = sa[off:off + ln]
        assert bytes(qa) == sa, seed
    assert compared >= 20


def _damaged(d):
    """An image qemu refuses (misaligned reftable offset) with one data cluster past EOF
    (guest 64k) and one on the L1 table (guest 192k); returns (path, good bytes, lost)."""
    src = _base(d)
    good = _good_bytes(src, d)
    with Qcow2(src) as q:
        refuse_reftable_offset(q)
        q.set_l2_for_guest(64 * KIB, (1 << 30) | OFLAG_COPIED)
        l1 = q.header('l1_table_offset')
        q.set_l2_for_guest(192 * KIB, l1 | OFLAG_COPIED)
    lost = [(64 * KIB, 64 * KIB), (192 * KIB, 64 * KIB)]
    return src, good, lost


def test_convert_salvage_qcow2_target(tmp_path, qimg_binary):
    """convert --salvage -O qcow2: the target holds the salvaged bytes (real qemu-img reads
    it back), real qemu-img check finds it clean, the messages say what happened."""
    d = str(tmp_path)
    src, good, lost = _damaged(d)
    out = os.path.join(d, 'out.qcow2')
    rc, so, se = qemu.qimg('convert', '--salvage', '-O', 'qcow2', src, out)
    assert rc == 2, se
    assert so == ''
    lines = se.splitlines()
    assert lines[0] == "qimg: Could not open '%s': Reference count table offset invalid" % src
    assert lines[1].startswith("qimg: salvage: '%s' opened by the salvage reader" % src)
    assert [(m[1], m[2]) for m in _parse(se)] == lost
    assert len(lines) == 2 + len(lost)
    assert qemu.is_clean_by_qemu(out)[0]
    raw = os.path.join(d, 'back.raw')
    qemu.qemu_img('convert', '-O', 'raw', out, raw, check=True)
    want = bytearray(good)
    for off, ln in lost:
        want[off:off + ln] = bytes(ln)
    with open(raw, 'rb') as f:
        assert f.read() == bytes(want)


def test_convert_without_salvage_refuses(tmp_path, qimg_binary):
    """Without --salvage: qemu-img's message and exit code, nothing salvaged."""
    d = str(tmp_path)
    src, _, _ = _damaged(d)
    r = qemu.qemu_img('convert', '-O', 'raw', src, os.path.join(d, 'a.raw'))
    q = qemu.run(qemu.qimg_as_qemu_img(), 'convert', '-O', 'raw', src, os.path.join(d, 'b.raw'))
    assert q == r and r[0] == 1


def test_convert_salvage_quiet_progress_and_concat(tmp_path, qimg_binary):
    """-p keeps its progress lines on stdout, the report is on stderr; with two sources the
    good one is copied as is, the damaged one salvaged, one report."""
    d = str(tmp_path)
    src, good, lost = _damaged(d)
    other = os.path.join(d, 'other.qcow2')
    qemu.make_image(other, '1M')
    qemu.io(other, 'write -P 0x77 0 1M')
    out = os.path.join(d, 'cat.raw')
    rc, so, se = qemu.qimg('convert', '--salvage', '-p', '-O', 'raw', other, src, out)
    assert rc == 2, se
    assert '(100.00/100%)' in so and 'salvage' not in so
    # offsets are the damaged source's own
    assert [(m[1], m[2]) for m in _parse(se)] == lost
    assert all(': %s: salvage: lost' % src in ln for ln in se.splitlines()[2:])
    with open(out, 'rb') as f:
        data = f.read()
    want = bytearray(b'\x77' * MIB + good)
    for off, ln in lost:
        want[MIB + off:MIB + off + ln] = bytes(ln)
    assert data == bytes(want)


def test_convert_salvage_not_salvageable(tmp_path, qimg_binary):
    """A source salvage cannot read either (L1 table offset unusable): qemu's message only,
    exit 1, no target written."""
    d = str(tmp_path)
    src = _base(d)
    with Qcow2(src) as q:
        q.set_header('l1_table_offset', q.header('l1_table_offset') + 8)
    out = os.path.join(d, 'o.raw')
    r = qemu.qemu_img('convert', '--salvage', '-O', 'raw', src, out)
    q = qemu.run(qemu.qimg_as_qemu_img(), 'convert', '--salvage', '-O', 'raw', src,
                 os.path.join(d, 'o2.raw'))
    assert q == r and r[0] == 1
    assert not os.path.exists(os.path.join(d, 'o2.raw'))


def test_salvage_data_file_short(tmp_path, qimg_binary):
    """External data file cut short: the guest bytes past its end are lost, the rest kept;
    neither the image nor the data file is written."""
    d = str(tmp_path)
    df = os.path.join(d, 'd.raw')
    src = _base(d, data_file=df)
    good = _good_bytes(src, d)
    with Qcow2(src) as q:
        refuse_reftable_offset(q)
    os.truncate(df, 3 * MIB + 1000)
    before = _sha(df)
    expected = [('lost', 3 * MIB + 1000, 128 * KIB - 1000,
                 'data cluster at 0x300000 lies past the end of the data file')]
    for tool in _tools():
        _verify(tool, d, src, good, expected)
    assert _sha(df) == before


def test_convert_salvage_bad_argument(tmp_path, qimg_binary):
    """--salvage=X other than qimg's `reader`: qemu-img's usage error for it."""
    d = str(tmp_path)
    src = _base(d)
    r = qemu.qemu_img('convert', '--salvage=foo', '-O', 'raw', src, os.path.join(d, 'a'))
    q = qemu.run(qemu.qimg_as_qemu_img(), 'convert', '--salvage=foo', '-O', 'raw', src,
                 os.path.join(d, 'b'))
    assert q == r and r[0] == 1


def test_salvage_snapshots_share_clusters(tmp_path, qimg_binary):
    """Clusters shared with internal snapshots (refcount 2) are not suspect: only the
    active L1/L2 is read; the snapshot table being unreadable costs nothing."""
    d = str(tmp_path)
    src = _base(d)
    qemu.snapshot_create(src, 's1')
    qemu.io(src, 'write -P 0x66 0 64k', 'write -P 0x67 2M 64k')
    qemu.snapshot_create(src, 's2')
    good = _good_bytes(src, d)
    with Qcow2(src) as q:
        refuse_snapshots(q)
    rc, _, err = qemu.qemu_img('convert', '-O', 'raw', src, os.path.join(d, 'qemu.raw'))
    assert rc == 1
    for tool in _tools():
        _verify(tool, d, src, good, [])
