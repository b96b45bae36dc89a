"""What a read-write open and close of a qcow2 image writes, qimg-io vs the real qemu-io 7.2.

qemu's qcow2_do_open on a writable image clears unknown autoclear bits (and drops a bitmaps
extension whose autoclear bit is clear) by rewriting the header cluster with
qcow2_update_header, refuses an image with the corrupt bit, and repairs an image whose dirty
bit is set (lazy refcounts, a writer that crashed) with its check; qcow2_close clears the
dirty bit. Both tools run on copies of one image (`-c flush`, `-c 'read ...'`) and must leave
the same bytes, print the same lines and exit alike. qimg-io runs through a symlink named
qemu-io so that "<prog>:" prefixes agree.
"""

import os
import shutil
import struct

import pytest

import qemu
from test_qimg_io import QIMG_IO, filter_io, qimg_io_alias  # noqa: F401 (fixture import)
from test_qimg_io import qimg_io_binary  # noqa: F401

IMG = 'img.qcow2'
EXT_END = 0
EXT_BACKING_FMT = 0xE2792ACA
EXT_FEATURES = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_DATA_FILE = 0x44415441


# --- cluster 0 as a list of parts ----------------------------------------------------------

def read_c0(path):
    with open(path, 'rb') as f:
        head = f.read(112)
        cs = 1 << struct.unpack('>I', head[20:24])[0]
        f.seek(0)
        c0 = f.read(cs).ljust(cs, b'\0')
    version = struct.unpack('>I', c0[4:8])[0]
    hl = 72 if version == 2 else struct.unpack('>I', c0[100:104])[0]
    boff, bsize = struct.unpack('>QI', c0[8:20])
    end = boff or cs
    exts, off = [], hl
    while off + 8 <= end:
        magic, ln = struct.unpack('>II', c0[off:off + 8])
        if magic == EXT_END:
            break
        exts.append((magic, c0[off + 8:off + 8 + ln]))
        off += 8 + ((ln + 7) & ~7)
    return {'cs': cs, 'version': version, 'fixed': bytearray(c0[:hl]), 'exts': exts,
            'backing': c0[boff:boff + bsize] if boff else None}


def write_c0(path, c, garbage=b''):
    """Writes cluster 0 from the parts (header_length follows len(fixed) in v3)."""
    fixed = bytearray(c['fixed'])
    if c['version'] == 3:
        struct.pack_into('>I', fixed, 100, len(fixed))
    out = bytearray(fixed)
    for magic, data in c['exts']:
        out += struct.pack('>II', magic, len(data)) + data + b'\0' * ((-len(data)) % 8)
    out += b'\0' * 8
    if c['backing'] is not None:
        struct.pack_into('>QI', out, 8, len(out), len(c['backing']))
        out += c['backing']
    else:
        struct.pack_into('>QI', out, 8, 0, 0)
    out += garbage
    assert len(out) <= c['cs']
    with open(path, 'r+b') as f:
        f.write(bytes(out).ljust(c['cs'], b'\0'))


def poke(path, off, fmt, value):
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack(fmt, value))


def peek(path, off, fmt):
    with open(path, 'rb') as f:
        f.seek(off)
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def set_autoclear(path, bits):
    poke(path, 88, '>Q', peek(path, 88, '>Q') | bits)


def files_of(d):
    return {n: open(os.path.join(d, n), 'rb').read() for n in sorted(os.listdir(d))}


def run_both(tmp_path, build, cmds=('flush',), extra=()):
    """build(dir) makes the image(s) once; both tools run on copies. Returns
    {tool: (rc, out, err, files)} after asserting that the outputs agree."""
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    res = {}
    for tool, exe in (('qemu', qemu.QEMU_IO), ('qimg', qimg_io_alias())):
        d = str(tmp_path / tool)
        shutil.copytree(str(orig), d)
        args = list(extra)
        for c in cmds:
            args += ['-c', c]
        rc, out, err = qemu.run(exe, *args, IMG, cwd=d)
        res[tool] = (rc, filter_io(out), err, files_of(d))
    q, i = res['qemu'], res['qimg']
    assert i[1] == q[1], 'stdout:\nqemu-io:\n%s\nqimg-io:\n%s' % (q[1], i[1])
    assert i[2] == q[2], 'stderr:\nqemu-io:\n%s\nqimg-io:\n%s' % (q[2], i[2])
    assert i[0] == q[0], 'exit code: qemu-io %d, qimg-io %d' % (q[0], i[0])
    res['orig'] = files_of(str(orig))
    return res


def assert_same_files(res):
    q, i = res['qemu'][3], res['qimg'][3]
    assert sorted(q) == sorted(i)
    for n in q:
        assert len(q[n]) == len(i[n]), '%s: length qemu %d, qimg %d' % (n, len(q[n]), len(i[n]))
        if q[n] != i[n]:
            diff = [k for k in range(len(q[n])) if q[n][k] != i[n][k]]
            pytest.fail('%s differs at %d bytes, first at 0x%x' % (n, len(diff), diff[0]))


def make(d, size='64M', **opts):
    return qemu.make_image(os.path.join(d, IMG), size=size, **opts)


# --- header rewrite on a read-write open ---------------------------------------------------

def _unknown_bit(d):
    set_autoclear(make(d), 1 << 63)


def _unknown_bits_known_kept(d):
    # bit 1 (raw external data) needs a data file; bit 0 without an extension is kept too
    set_autoclear(make(d), (1 << 63) | (1 << 17) | 1)


def _small_clusters(cs):
    def build(d):
        set_autoclear(make(d, cluster_size=cs), 1 << 40)
    return build


def _len104(d):
    p = make(d)
    c = read_c0(p)
    c['fixed'] = c['fixed'][:104]
    write_c0(p, c)
    set_autoclear(p, 1 << 63)


def _unknown_tail(d):
    p = make(d)
    c = read_c0(p)
    c['fixed'] = c['fixed'] + bytes(range(1, 25))
    write_c0(p, c)
    set_autoclear(p, 1 << 63)


def _no_feature_table(d):
    p = make(d)
    c = read_c0(p)
    c['exts'] = [e for e in c['exts'] if e[0] != EXT_FEATURES]
    write_c0(p, c)
    set_autoclear(p, 1 << 63)


def _own_feature_table(d):
    p = make(d)
    c = read_c0(p)
    table = b'\x02\x3fmy feature'.ljust(48, b'\0')
    c['exts'] = [e for e in c['exts'] if e[0] != EXT_FEATURES] + [(EXT_FEATURES, table)]
    write_c0(p, c)
    set_autoclear(p, 1 << 63)


def _unknown_exts(d):
    # qemu keeps unknown extensions at the head of a list: they come back reversed
    p = make(d)
    c = read_c0(p)
    c['exts'] = [(0x11111111, b'first'), (0x22222222, b'second ext!')] + c['exts'] + \
        [(0x33333333, b'')]
    write_c0(p, c)
    set_autoclear(p, 1 << 63)


def _garbage_after_end(d):
    p = make(d)
    write_c0(p, read_c0(p), garbage=b'\xaa' * 100)
    set_autoclear(p, 1 << 63)


def _odd_size(d):
    p = make(d)
    poke(p, 24, '>Q', 64 * 1024 * 1024 - 100)
    set_autoclear(p, 1 << 63)


def _backing(d):
    qemu.make_image(os.path.join(d, 'base.qcow2'), size='64M')
    qemu.make_image(os.path.join(d, IMG), size='64M', backing='base.qcow2')
    set_autoclear(os.path.join(d, IMG), 1 << 63)


def _backing_no_format(d):
    _backing(d)
    p = os.path.join(d, IMG)
    c = read_c0(p)
    c['exts'] = [e for e in c['exts'] if e[0] != EXT_BACKING_FMT]
    write_c0(p, c)


def _data_file(raw):
    def build(d):
        make(d, data_file='img.raw', data_file_raw=raw)
        set_autoclear(os.path.join(d, IMG), 1 << 63)
    return build


def _v2_unknown_ext(d):
    # v2 has no autoclear field: nothing to rewrite, nothing written
    p = make(d, compat='0.10')
    c = read_c0(p)
    c['exts'] = [(0x44444444, b'v2 ext')] + c['exts']
    write_c0(p, c)


def _extl2_zstd(d):
    set_autoclear(make(d, extended_l2=True, compression_type='zstd', cluster_size='128k'),
                  1 << 63)


def _snapshot(d):
    p = make(d)
    qemu.io(p, 'write -P 0x11 0 64k')
    qemu.snapshot_create(p, 's1')
    qemu.io(p, 'write -P 0x22 0 64k')
    set_autoclear(p, 1 << 63)


def _bitmaps_ignored(d):
    p = make(d)
    qemu.qemu_img('bitmap', '--add', p, 'b0', check=True)
    poke(p, 88, '>Q', 1 << 50)        # bitmaps bit 0 clear: the extension is ignored


def _v2_bitmaps(d):
    # a v2 header has no autoclear field: the extension is always ignored (qemu's v2 text)
    p = make(d)
    qemu.qemu_img('bitmap', '--add', p, 'b0', check=True)
    c = read_c0(p)
    c['version'] = 2
    c['fixed'] = c['fixed'][:72]
    struct.pack_into('>I', c['fixed'], 4, 2)
    write_c0(p, c)


def _clean(d):
    make(d)


HEADER_CASES = {
    'unknown-autoclear-bit': _unknown_bit,
    'known-bits-kept': _unknown_bits_known_kept,
    'cluster-512': _small_clusters('512'),
    'cluster-4k': _small_clusters('4k'),
    'cluster-2M': _small_clusters('2M'),
    'header-length-104': _len104,
    'unknown-header-tail': _unknown_tail,
    'no-feature-table': _no_feature_table,
    'own-feature-table': _own_feature_table,
    'unknown-extensions': _unknown_exts,
    'garbage-after-end': _garbage_after_end,
    'size-not-sectors': _odd_size,
    'backing': _backing,
    'backing-without-format': _backing_no_format,
    'data-file': _data_file(False),
    'data-file-raw': _data_file(True),
    'v2-unknown-extension': _v2_unknown_ext,
    'extl2-zstd': _extl2_zstd,
    'snapshot': _snapshot,
    'bitmaps-ignored': _bitmaps_ignored,
    'v2-bitmaps-ignored': _v2_bitmaps,
    'clean-nothing-to-do': _clean,
}


@pytest.mark.parametrize('case', sorted(HEADER_CASES))
@pytest.mark.parametrize('cmd', ['flush', 'read 0 512'])
def test_header_after_open_close(tmp_path, case, cmd):
    res = run_both(tmp_path, HEADER_CASES[case], cmds=(cmd,))
    assert res['qemu'][0] == 0, res['qemu'][2]
    assert_same_files(res)
    img = res['qimg'][3][IMG]
    if case in ('clean-nothing-to-do', 'v2-unknown-extension'):
        assert res['qimg'][3] == res['orig'], 'nothing to write, but the image changed'
    else:
        assert img != res['orig'][IMG], 'the test case changes nothing'
        if res['orig'][IMG][88:96] != img[88:96]:
            assert struct.unpack('>Q', img[88:96])[0] & ~3 == 0
    d = str(tmp_path / 'qimg')
    rc, out, err = qemu.qemu_img('check', IMG, cwd=d)
    # the ignored bitmaps' clusters are leaks until a `check -r` (qemu's own result too)
    assert rc == (3 if 'bitmaps-ignored' in case else 0), out + err


def test_snapshot_kept(tmp_path):
    res = run_both(tmp_path, _snapshot)
    d = str(tmp_path / 'qimg')
    assert peek(os.path.join(d, IMG), 60, '>I') == 1
    qemu.qemu_img('snapshot', '-a', 's1', os.path.join(d, IMG), check=True)
    qemu.io(os.path.join(d, IMG), 'read -P 0x11 0 64k')
    assert res['qimg'][0] == 0


# --- read-only opens never write -----------------------------------------------------------

@pytest.mark.parametrize('how', ['qimg-io -r', 'info', 'check', 'map', 'compare'])
def test_read_only_open_writes_nothing(tmp_path, how):
    d = str(tmp_path)
    p = make(d)
    set_autoclear(p, 1 << 63)
    poke(p, 72, '>Q', 1)              # dirty too: a read-only open repairs nothing
    before = open(p, 'rb').read()
    st = os.stat(p)
    if how == 'qimg-io -r':
        rc, out, err = qemu.run(QIMG_IO, '-r', '-c', 'read 0 512', IMG, cwd=d)
    elif how == 'compare':
        rc, out, err = qemu.qimg('compare', IMG, IMG, cwd=d)
    else:
        rc, out, err = qemu.qimg(how, IMG, cwd=d)
    assert rc in (0, 3), out + err
    assert open(p, 'rb').read() == before
    assert os.stat(p).st_mtime_ns == st.st_mtime_ns


# --- refusals ------------------------------------------------------------------------------

def _corrupt(d):
    poke(make(d), 72, '>Q', 2)


def _unknown_incompat(d):
    poke(make(d), 72, '>Q', 1 << 40)


def _unknown_incompat_named(d):
    p = make(d)
    c = read_c0(p)
    c['exts'] = [(EXT_FEATURES, b'\x00\x28test feature'.ljust(48, b'\0'))] + \
        [e for e in c['exts'] if e[0] != EXT_FEATURES]
    write_c0(p, c)
    poke(p, 72, '>Q', (1 << 40) | (1 << 41))


@pytest.mark.parametrize('build', [_corrupt, _unknown_incompat, _unknown_incompat_named],
                         ids=['corrupt', 'unknown-incompat', 'unknown-incompat-named'])
def test_refused_read_write(tmp_path, build):
    res = run_both(tmp_path, build, cmds=('read 0 512',))
    assert res['qemu'][0] == 1 and "can't open device" in res['qemu'][2]
    assert res['qimg'][3] == res['orig'], 'a refused open wrote'


def test_corrupt_read_only_allowed(tmp_path):
    res = run_both(tmp_path, _corrupt, cmds=('read 0 512',), extra=('-r',))
    assert res['qemu'][0] == 0
    assert res['qimg'][3] == res['orig']


# --- dirty images: repaired at the read-write open -----------------------------------------

def refcounts(path, cwd):
    rc, out, err = qemu.qemu_img('check', '--output=json', path, cwd=cwd)
    return rc, qemu.parse_json(out)


def _crashed_writer(opts=None, cmds=('write -P 0x11 0 128k', 'write -P 0x22 1M 64k')):
    def build(d):
        p = make(d, lazy_refcounts=True, **(opts or {}))
        args = []
        for c in cmds:
            args += ['-c', c]
        qemu.qemu_io(*args, '-c', 'abort', IMG, cwd=d)
        assert peek(p, 72, '>Q') & 1, 'the crash left no dirty bit'
    return build


def _dirty_bit_only(d):
    p = make(d, lazy_refcounts=True)
    qemu.io(p, 'write -P 0x11 0 64k')
    poke(p, 72, '>Q', 1)


def _dirty_leak(d):
    import qcow2poke
    p = make(d, lazy_refcounts=True)
    qemu.io(p, 'write -P 0x11 0 64k')
    with qcow2poke.Qcow2(p) as q:
        q.set_refcount(q.host_cluster(0) + 1, 1)
    poke(p, 72, '>Q', 1)


def _crashed_with(setup):
    def build(d):
        setup(d)
        _crashed_writer()(d)
    return build


def _crashed_backing(d):
    qemu.make_image(os.path.join(d, 'base.qcow2'), size='64M')
    qemu.io(os.path.join(d, 'base.qcow2'), 'write -P 0x33 0 4M')
    p = qemu.make_image(os.path.join(d, IMG), size='64M', backing='base.qcow2',
                        lazy_refcounts=True)
    qemu.qemu_io('-c', 'write -P 0x11 64k 4k', '-c', 'abort', IMG, cwd=d)
    assert peek(p, 72, '>Q') & 1


def _crashed_snapshot(d):
    p = make(d, lazy_refcounts=True)
    qemu.io(p, 'write -P 0x11 0 128k')
    qemu.snapshot_create(p, 's1')
    qemu.qemu_io('-c', 'write -P 0x22 0 64k', '-c', 'write -P 0x22 2M 64k', '-c', 'abort',
                 IMG, cwd=d)
    assert peek(p, 72, '>Q') & 1


def _crashed_autoclear(d):
    _crashed_writer()(d)
    set_autoclear(os.path.join(d, IMG), 1 << 63)


DIRTY_CASES = {
    'crashed-backing': _crashed_backing,
    'crashed-snapshot': _crashed_snapshot,
    'crashed-unknown-autoclear': _crashed_autoclear,
    'crashed-writer-data-file': _crashed_writer({'data_file': 'img.raw'}),
    'dirty-bit-only': _dirty_bit_only,
    'dirty-leak': _dirty_leak,
    'crashed-writer': _crashed_writer(),
    'crashed-writer-512': _crashed_writer({'cluster_size': '512'}),
    'crashed-writer-refcount-bits-1': _crashed_writer({'refcount_bits': '1'}),
    'crashed-writer-extl2': _crashed_writer({'extended_l2': True}),
}


def _freed_clusters(data_q, data_i, cs):
    """Clusters where the two files differ only because qemu discarded what it freed."""
    out = []
    for k in range(0, len(data_q), cs):
        if data_q[k:k + cs] != data_i[k:k + cs]:
            out.append(k)
    return out


@pytest.mark.parametrize('case', sorted(DIRTY_CASES))
def test_dirty_image_repaired_on_open(tmp_path, case):
    res = run_both(tmp_path, DIRTY_CASES[case], cmds=('read 0 512',))
    assert res['qemu'][0] == 0, res['qemu'][2]
    for tool in ('qemu', 'qimg'):
        d = str(tmp_path / tool)
        p = os.path.join(d, IMG)
        assert peek(p, 72, '>Q') & 3 == 0, '%s left the dirty/corrupt bit' % tool
        rc, out, err = qemu.qemu_img('check', IMG, cwd=d)
        assert rc == 0 and 'No errors were found' in out, (tool, out, err)
    q, i = res['qemu'][3][IMG], res['qimg'][3][IMG]
    assert len(q) == len(i)
    cs = 1 << peek(str(tmp_path / 'qimg' / IMG), 20, '>I')
    # the same metadata and data everywhere but in the clusters qemu freed and discarded
    # (qemu punches them; qimg leaves their old bytes): those are unreferenced in both
    rc, jq = refcounts(IMG, str(tmp_path / 'qemu'))
    rc, ji = refcounts(IMG, str(tmp_path / 'qimg'))
    assert jq == ji
    for k in _freed_clusters(q, i, cs):
        assert not any(q[k:k + cs]), 'cluster 0x%x differs and qemu did not discard it' % k
    for tool in ('qemu', 'qimg'):
        rc, out, err = qemu.qemu_img('map', '--output=json', IMG, cwd=str(tmp_path / tool))
        res[tool] = res[tool] + (out,)
    assert res['qemu'][4] == res['qimg'][4]
    # guest bytes (a data file is named relative to the working directory)
    hq = qemu.guest_sha256(IMG, cwd=str(tmp_path / 'qemu'))
    assert hq[0] and hq == qemu.guest_sha256(IMG, cwd=str(tmp_path / 'qimg')), hq


def test_dirty_image_read_only_not_repaired(tmp_path):
    res = run_both(tmp_path, _dirty_leak, cmds=('read -P 0x11 0 512',), extra=('-r',))
    assert res['qemu'][0] == 0
    assert res['qimg'][3] == res['orig']


# --- check -r rewrites the header with the same function -----------------------------------

@pytest.mark.parametrize('case', ['unknown-autoclear-bit', 'cluster-4k', 'header-length-104',
                                  'unknown-header-tail', 'no-feature-table',
                                  'unknown-extensions', 'garbage-after-end', 'backing',
                                  'data-file'])
def test_check_repair_header_as_qemu(tmp_path, case):
    """`check -r all` (no snapshots: qemu's rewrite then loses nothing) leaves the header
    qemu-img's check -r leaves, and the one a read-write open leaves."""
    orig = tmp_path / 'orig'
    orig.mkdir()
    HEADER_CASES[case](str(orig))
    out = {}
    for tool in ('qemu', 'qimg', 'qimg-io'):
        d = str(tmp_path / tool)
        shutil.copytree(str(orig), d)
        if tool == 'qimg-io':
            rc, o, e = qemu.run(QIMG_IO, '-c', 'flush', IMG, cwd=d)
        else:
            rc, o, e = qemu.run(qemu.tool_path(tool), 'check', '-r', 'all', IMG, cwd=d)
        assert rc == 0, (tool, o, e)
        out[tool] = files_of(d)
    assert out['qimg'] == out['qemu']
    assert out['qimg'] == out['qimg-io']


def test_check_repair_dry_run_names_the_header_rewrite(tmp_path):
    d = str(tmp_path)
    p = make(d)
    c = read_c0(p)
    c['exts'] = [e for e in c['exts'] if e[0] != EXT_FEATURES]
    write_c0(p, c)
    set_autoclear(p, 1 << 63)
    before = open(p, 'rb').read()
    rc, out, err = qemu.qimg('check', '-r', 'all', '--dry-run', IMG, cwd=d)
    assert rc == 0, out + err
    assert 'header: autoclear features 0x8000000000000000 -> 0x0 (unknown bits cleared), as ' \
        'qemu does on a read-write open' in out, out
    assert open(p, 'rb').read() == before


def test_dirty_repair_fails_as_qemu(tmp_path):
    """QEMU's iotest 060 "dirty corrupt image": an unaligned refblock offset in a dirty
    image. Both print the check's lines and refuse the open (`Could not repair dirty image:
    Input/output error`, rc 1). qemu has written its rebuild and the corrupt bit by then;
    qimg writes nothing when its check meets errors (README); a `check -r all` repairs
    either image (qemu-img's own on qimg's would need two runs there: iotest 060)."""
    def build(d):
        p = make(d)
        poke(p, 0x10000, '>Q', 0xffff2a00)
        poke(p, 72, '>Q', 1)
    res = run_both(tmp_path, build, cmds=('close',))
    assert res['qemu'][0] == 1
    assert res['qemu'][2].endswith('Could not repair dirty image: Input/output error\n')
    assert res['qimg'][3] == res['orig']
    for tool in ('qemu', 'qimg'):
        d = str(tmp_path / tool)
        rc, out, err = qemu.run(qemu.tool_path(tool), 'check', '-r', 'all', IMG, cwd=d)
        assert rc == 0, (tool, out, err)
        rc, out, err = qemu.qemu_img('check', IMG, cwd=d)
        assert rc == 0 and peek(os.path.join(d, IMG), 72, '>Q') == 0, (tool, out, err)


# --- lazy refcounts: the writer's dirty bit ------------------------------------------------

LAZY_CMDS = ('write -P 0x11 0 128k', 'write -P 0x22 1M 64k', 'flush', 'write -P 0x33 9M 64k')


def test_lazy_refcounts_write_and_close(tmp_path):
    """The writer sets the dirty bit before its first deferred refcount update and the
    close clears it: the file is qemu-io's, byte for byte."""
    res = run_both(tmp_path, lambda d: make(d, lazy_refcounts=True), cmds=LAZY_CMDS)
    assert res['qemu'][0] == 0
    assert_same_files(res)
    assert peek(str(tmp_path / 'qimg' / IMG), 72, '>Q') == 0


def test_lazy_refcounts_crash_then_open_repairs(tmp_path):
    """A writer cut at each write (QIMG_FAULT_AFTER_WRITES): once the dirty bit is on disk
    the refcounts may be stale, and the next read-write open (qemu-io's or qimg-io's,
    printing the same lines) repairs the image."""
    dirty_seen = False
    for n in range(1, 40):
        d = str(tmp_path / ('cut%d' % n))
        os.mkdir(d)
        make(d, lazy_refcounts=True)
        args = []
        for c in LAZY_CMDS:
            args += ['-c', c]
        rc, out, err = qemu.run(QIMG_IO, *args, IMG, cwd=d,
                                env={'QIMG_FAULT_AFTER_WRITES': str(n)})
        if rc == 0:
            break
        dirty = bool(peek(os.path.join(d, IMG), 72, '>Q') & 1)
        dirty_seen |= dirty
        shutil.copytree(d, d + '-qemu')
        rq = qemu.run(qemu.QEMU_IO, '-c', 'read 0 512', IMG, cwd=d + '-qemu')
        ri = qemu.run(qimg_io_alias(), '-c', 'read 0 512', IMG, cwd=d)
        assert (ri[0], ri[2]) == (rq[0], rq[2]), (n, rq, ri)
        for dd in (d, d + '-qemu'):
            # repaired when dirty; before the bit a cut may leave leaks, never corruption
            rc, out, err = qemu.qemu_img('check', IMG, cwd=dd)
            assert rc in ((0,) if dirty else (0, 3)), (n, dd, out, err)
            assert peek(os.path.join(dd, IMG), 72, '>Q') == 0, (n, dd)
    else:
        pytest.fail('the workload never completed')
    assert dirty_seen, 'no cut left a dirty image'
