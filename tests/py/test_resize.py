"""`qimg resize` against the real qemu-img 7.2 resize.

Each case builds an image directory with the real qemu-img/qemu-io, copies it, runs
`qemu-img resize ARGS` in one copy and qimg (through a symlink named qemu-img, so the
message prefix matches) in the other, and requires the same exit status, stdout and stderr
and byte-identical files afterwards (every file of the directory: image, data file, backing
file), plus a clean real `qemu-img check` of a resized qcow2/qed image.

The fault cases cut qimg (QIMG_FAULT_AFTER_WRITES=N) after each write of a qcow2 grow and
shrink and require real qemu-img check to find no corruption in what is left.
"""

import os
import struct

import pytest

import qemu
from portcheck import build_orig, cut_at_every_write, dry_run, journal_cut_then_undo, \
    journal_pair, no_corruption, read_all, real_run_changes, run_pair, same_files, \
    undo_restores

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


def _qcow2(size='1M', data=(), **opts):
    def build(d):
        qemu.make_image(os.path.join(d, 'img'), size=size, **opts)
        for pat, off, length in data:
            qemu.write_pattern(os.path.join(d, 'img'), pat, off, length)
    return build


def _raw(size='1M', data=()):
    def build(d):
        qemu.make_image(os.path.join(d, 'img'), size=size, fmt='raw')
        for pat, off, length in data:
            qemu.write_pattern(os.path.join(d, 'img'), pat, off, length, fmt='raw')
    return build


def _plain(fmt, size='1M', **opts):
    def build(d):
        qemu.make_image(os.path.join(d, 'img'), size=size, fmt=fmt, **opts)
    return build


def _snap(build, name='s1'):
    def b(d):
        build(d)
        qemu.snapshot_create(os.path.join(d, 'img'), name)
    return b


def _bitmap(build, name='b0'):
    def b(d):
        build(d)
        qemu.qemu_img('bitmap', '--add', os.path.join(d, 'img'), name, check=True)
    return b


def _compressed(size='10M', **opts):
    """Compressed clusters before and past 4M (converted with -c by the real qemu-img)."""
    def build(d):
        src = os.path.join(d, 'src')
        qemu.make_image(src, size=size)
        qemu.write_pattern(src, 0xaa, 0, 128 * KIB)
        qemu.write_pattern(src, 0xbb, 5 * MIB, 256 * KIB)
        args = ['-c']
        if opts:
            args += ['-o', ','.join('%s=%s' % kv for kv in opts.items())]
        qemu.convert(src, os.path.join(d, 'img'), *args)
        os.unlink(src)
    return build


def _backed(base_size, top_size, data=()):
    """img (qcow2) over base (qcow2) with data in the base past the top's end."""
    def build(d):
        qemu.make_image(os.path.join(d, 'base'), size=base_size)
        qemu.write_pattern(os.path.join(d, 'base'), 0x11, 0, base_size)
        qemu.make_image(os.path.join(d, 'img'), size=top_size, backing='base',
                        backing_fmt='qcow2')
        for pat, off, length in data:
            qemu.write_pattern(os.path.join(d, 'img'), pat, off, length)
    return build


DATA = ((0xaa, 0, 64 * KIB), (0xbb, 700 * KIB, 200 * KIB))
BIGDATA = ((0xaa, 0, 64 * KIB), (0xbb, 5 * MIB, 300 * KIB), (0xcc, 9 * MIB, 64 * KIB))

def _bad_reftable(pokes, **opts):
    """iotest 060's refblock cases: refcount table entries (index -> value) overwritten."""
    def build(d):
        path = os.path.join(d, 'img')
        qemu.make_image(path, size='64M', **opts)
        with open(path, 'r+b') as f:
            rt = struct.unpack('>Q', f.read(56)[48:56])[0]
            for idx, val in pokes.items():
                f.seek(rt + 8 * idx)
                f.write(struct.pack('>Q', val))
    return build


# (id, build, resize args after `resize` with 'img' as the file name)
CASES = [
    # the command line
    ('no-args', _raw(), ['img']),
    ('extra-arg', _raw(), ['-f', 'raw', 'img', '1M', 'x']),
    ('bad-size', _raw(), ['-f', 'raw', 'img', '1x']),
    ('bad-rel-size', _raw(), ['-f', 'raw', 'img', '-1x']),
    ('empty-rel', _raw(), ['-f', 'raw', 'img', '+']),
    ('size-range', _raw(), ['-f', 'raw', 'img', '18E']),
    ('size-8E', _raw(), ['-f', 'raw', 'img', '8E']),
    ('rel-wraps', _raw(), ['-f', 'raw', 'img', '+9E']),
    ('zero', _raw(), ['-f', 'raw', 'img', '0']),
    ('negative', _raw(), ['-f', 'raw', 'img', '-2M']),
    ('negative-dashdash', _raw(), ['-f', 'raw', 'img', '--', '-2M']),
    ('bad-prealloc', _raw(), ['--preallocation=foo', '-f', 'raw', 'img', '2M']),
    ('prealloc-same', _raw(), ['--preallocation=full', '-f', 'raw', 'img', '+0']),
    ('prealloc-shrink', _raw(), ['--shrink', '--preallocation=falloc', '-f', 'raw', 'img', '1k']),
    ('unknown-opt', _raw(), ['-U', 'img', '2M']),
    ('long-format', _raw(), ['--format=raw', 'img', '2M']),
    ('missing-arg', _raw(), ['img', '-f']),
    ('no-file', _raw(), ['nonexistent', '2M']),
    ('wrong-fmt', _raw(), ['-f', 'qcow2', 'img', '2M']),
    ('unknown-fmt', _raw(), ['-f', 'foo', 'img', '2M']),
    # raw
    ('raw-probed-grow', _raw(data=DATA), ['img', '3M']),
    ('raw-same', _raw(), ['-f', 'raw', 'img', '+0']),
    ('raw-grow', _raw(data=DATA), ['-f', 'raw', 'img', '+1M']),
    ('raw-grow-unaligned', _raw(), ['-f', 'raw', 'img', '1000001']),
    ('raw-grow-q', _raw(), ['-q', '-f', 'raw', 'img', '5M']),
    ('raw-shrink-refused', _raw(data=DATA), ['-f', 'raw', 'img', '512K']),
    ('raw-shrink', _raw(data=DATA), ['--shrink', '-f', 'raw', 'img', '-300K']),
    ('raw-falloc', _raw(data=DATA), ['--preallocation=falloc', '-f', 'raw', 'img', '3M']),
    ('raw-full', _raw(data=DATA), ['--preallocation=full', '-f', 'raw', 'img', '3M']),
    ('raw-metadata', _raw(), ['--preallocation=metadata', '-f', 'raw', 'img', '3M']),
    ('raw-from-empty', _plain('raw', size='0'), ['-f', 'raw', 'img', '1M']),
    # qcow2 growth
    ('qcow2-grow', _qcow2(data=DATA), ['img', '2M']),
    ('qcow2-grow-rel', _qcow2(data=DATA), ['img', '+5G']),
    ('qcow2-grow-l1', _qcow2(data=DATA), ['img', '100G']),
    ('qcow2-grow-huge', _qcow2(), ['img', '60T']),
    ('qcow2-grow-unaligned', _qcow2(), ['img', '1000001']),
    ('qcow2-grow-4E', _qcow2(), ['img', '4E']),
    ('qcow2-l1-too-large', _qcow2(cluster_size=512), ['img', '1T']),
    ('qcow2-c512-l1-big', _qcow2(cluster_size=512), ['img', '100G']),
    ('qcow2-ext-l2-too-large', _qcow2(extended_l2=True), ['img', '1E']),
    ('raw-max', _raw(), ['-f', 'raw', 'img', '9223372036854775807']),
    ('raw-max-aligned', _raw(), ['-f', 'raw', 'img', '9223372035781033984']),
    ('qcow2-grow-q', _qcow2(), ['-q', 'img', '2M']),
    ('qcow2-same', _qcow2(), ['img', '1M']),
    ('qcow2-metadata', _qcow2(data=DATA), ['--preallocation=metadata', 'img', '20M']),
    ('qcow2-falloc', _qcow2(data=DATA), ['--preallocation=falloc', 'img', '20M']),
    ('qcow2-full', _qcow2(data=DATA), ['--preallocation=full', 'img', '20M']),
    ('qcow2-full-unaligned', _qcow2(size='1000448', data=((0xaa, 0, 4 * KIB),
                                                          (0xbb, 960 * KIB, 16 * KIB))),
     ['--preallocation=full', 'img', '3000001']),
    ('qcow2-falloc-mid-cluster', _qcow2(size='1000448', data=((0xbb, 960 * KIB, 16 * KIB),)),
     ['--preallocation=falloc', 'img', '+3M']),
    ('qcow2-falloc-l1', _qcow2(data=DATA, cluster_size=4096), ['--preallocation=falloc',
                                                               'img', '40M']),
    ('qcow2-full-ext-l2', _qcow2(data=DATA, extended_l2=True),
     ['--preallocation=full', 'img', '5M']),
    ('qcow2-falloc-rb1', _qcow2(data=DATA, refcount_bits=1), ['--preallocation=falloc',
                                                               'img', '7M']),
    ('qcow2-falloc-v2', _qcow2(data=DATA, compat='0.10'), ['--preallocation=falloc',
                                                            'img', '7M']),
    ('qcow2-falloc-snap', _snap(_qcow2(data=DATA)), ['--preallocation=falloc', 'img', '7M']),
    ('qcow2-falloc-bitmap', _bitmap(_qcow2(data=DATA)), ['--preallocation=falloc', 'img', '7M']),
    ('qcow2-falloc-backing-shorter', _backed(1 * MIB, 2 * MIB),
     ['--preallocation=falloc', 'img', '3M']),
    ('qcow2-falloc-backing-longer', _backed(4 * MIB, 1 * MIB + 512),
     ['--preallocation=falloc', 'img', '3M']),
    ('qcow2-full-backing-longer', _backed(4 * MIB, 1 * MIB),
     ['--preallocation=full', 'img', '3M']),
    ('qcow2-full-data-file', _qcow2(data=DATA, data_file='img.data'),
     ['--preallocation=full', 'img', '5M']),
    ('qcow2-falloc-data-file-raw', _qcow2(data=DATA, data_file='img.data', data_file_raw=True),
     ['--preallocation=falloc', 'img', '5M']),
    ('qcow2-c512', _qcow2(data=DATA, cluster_size=512), ['img', '3G']),
    ('qcow2-c2M', _qcow2(data=DATA, cluster_size=2 * MIB), ['img', '10T']),
    ('qcow2-v2', _qcow2(data=DATA, compat='0.10'), ['img', '10G']),
    ('qcow2-rb1', _qcow2(data=DATA, refcount_bits=1), ['img', '10G']),
    ('qcow2-rb64', _qcow2(data=DATA, refcount_bits=64), ['img', '10G']),
    ('qcow2-ext-l2', _qcow2(data=DATA, extended_l2=True), ['img', '10G']),
    ('qcow2-ext-l2-metadata', _qcow2(extended_l2=True),
     ['--preallocation=metadata', 'img', '3M']),
    ('qcow2-lazy', _qcow2(data=DATA, lazy_refcounts=True), ['img', '10G']),
    ('qcow2-data-file', _qcow2(data=DATA, data_file='img.data'), ['img', '5M']),
    ('qcow2-data-file-raw', _qcow2(data=DATA, data_file='img.data', data_file_raw=True),
     ['img', '5M']),
    ('qcow2-bitmap', _bitmap(_qcow2(data=DATA)), ['img', '3G']),
    ('qcow2-snap-v3', _snap(_qcow2(data=DATA)), ['img', '10G']),
    ('qcow2-snap-v2', _snap(_qcow2(data=DATA, compat='0.10')), ['img', '10G']),
    ('qcow2-backing-longer', _backed(4 * MIB, 1 * MIB), ['img', '3M']),
    ('qcow2-backing-unaligned', _backed(4 * MIB, 1 * MIB + 512), ['img', '3M']),
    ('qcow2-backing-shorter', _backed(1 * MIB, 2 * MIB), ['img', '3M']),
    # qcow2 shrinking
    ('qcow2-shrink-refused', _qcow2(data=DATA), ['img', '512K']),
    ('qcow2-shrink-rel-refused', _qcow2(data=DATA), ['img', '-512K']),
    ('qcow2-shrink', _qcow2(size='10M', data=BIGDATA), ['--shrink', 'img', '4M']),
    ('qcow2-shrink-rel', _qcow2(size='10M', data=BIGDATA), ['--shrink', 'img', '--', '-1M']),
    ('qcow2-shrink-mid-cluster', _qcow2(size='10M', data=BIGDATA),
     ['--shrink', 'img', '5250k']),
    ('qcow2-shrink-unaligned', _qcow2(size='10M', data=BIGDATA), ['--shrink', 'img', '1000001']),
    ('qcow2-shrink-l1', _qcow2(size='5G', data=((0xaa, 0, 64 * KIB), (0xbb, 4 * GIB, 1 * MIB))),
     ['--shrink', 'img', '1G']),
    ('qcow2-shrink-prealloc', _qcow2(size='10M', data=BIGDATA),
     ['--shrink', '--preallocation=metadata', 'img', '4M']),
    ('qcow2-shrink-c512', _qcow2(size='10M', data=BIGDATA, cluster_size=512),
     ['--shrink', 'img', '4M']),
    ('qcow2-shrink-rb1', _qcow2(size='10M', data=BIGDATA, refcount_bits=1),
     ['--shrink', 'img', '4M']),
    ('qcow2-shrink-ext-l2', _qcow2(size='10M', data=BIGDATA, extended_l2=True),
     ['--shrink', 'img', '5200k']),
    ('qcow2-shrink-data-file', _qcow2(size='10M', data=BIGDATA, data_file='img.data'),
     ['--shrink', 'img', '4M']),
    ('qcow2-shrink-data-file-raw',
     _qcow2(size='10M', data=BIGDATA, data_file='img.data', data_file_raw=True),
     ['--shrink', 'img', '4M']),
    ('qcow2-shrink-metadata-prealloc',
     _qcow2(size='10M', data=BIGDATA, preallocation='metadata'), ['--shrink', 'img', '4M']),
    ('qcow2-shrink-snap', _snap(_qcow2(size='10M', data=BIGDATA)), ['--shrink', 'img', '4M']),
    ('qcow2-shrink-snap-v2', _snap(_qcow2(size='10M', data=BIGDATA, compat='0.10')),
     ['--shrink', 'img', '4M']),
    ('qcow2-shrink-bitmap', _bitmap(_qcow2(size='10M', data=BIGDATA)),
     ['--shrink', 'img', '4M']),
    ('qcow2-shrink-compressed', _compressed(), ['--shrink', 'img', '4M']),
    ('qcow2-shrink-zstd', _compressed(compression_type='zstd'), ['--shrink', 'img', '4M']),
    ('qcow2-grow-compressed', _compressed(), ['img', '1T']),
    ('qcow2-shrink-lazy', _qcow2(size='10M', data=BIGDATA, lazy_refcounts=True),
     ['--shrink', 'img', '4M']),
    ('qcow2-shrink-to-tiny', _qcow2(size='10M', data=BIGDATA), ['--shrink', 'img', '512']),
    ('qcow2-shrink-grow-back', _qcow2(size='10M', data=BIGDATA), ['--shrink', 'img', '+0']),
    # shrinking past a damaged refcount table (iotest 060): qemu's corruption events
    ('qcow2-shrink-refblock-far', _bad_reftable({1: 0x00ffffff00000000}),
     ['--shrink', 'img', '32M']),
    ('qcow2-shrink-refblock-uncovered', _bad_reftable({1: 0x1000000000}, refcount_bits=1),
     ['--shrink', 'img', '32M']),
    ('qcow2-shrink-refblock-unaligned',
     _bad_reftable({1: 0x1000000000, 2: 0x200}, refcount_bits=1), ['--shrink', 'img', '32M']),
    # qed and vdi
    ('qed-grow', _plain('qed'), ['img', '5M']),
    ('qed-grow-big', _plain('qed'), ['img', '100G']),
    ('qed-too-big', _plain('qed'), ['img', '100T']),
    ('qed-unaligned', _plain('qed'), ['img', '1000001']),
    ('qed-shrink', _plain('qed', size='4M'), ['--shrink', 'img', '1M']),
    ('qed-prealloc', _plain('qed'), ['--preallocation=full', 'img', '4M']),
    ('vdi-grow', _plain('vdi'), ['img', '4M']),
    ('vdi-shrink', _plain('vdi', size='4M'), ['--shrink', 'img', '1M']),
]


def _extents(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        size, off, out = os.fstat(fd).st_size, 0, []
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            off = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, off))
        return out
    finally:
        os.close(fd)


def _fmt_of(d):
    rc, out, _ = qemu.qemu_img('info', '--output=json', '-U', 'img', cwd=d)
    return qemu.parse_json(out)['format'] if rc == 0 else None


@pytest.mark.parametrize('build,args', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resize_matches_qemu(tmp_path, build, args):
    _, a, b, ra, rb = run_pair(tmp_path, build, 'resize', args)
    assert rb == ra
    same_files(a, b)
    if any(x.startswith('--preallocation=f') for x in args):
        # preallocated: the same extents allocated on disk as well (SEEK_DATA/SEEK_HOLE;
        # st_blocks also counts the filesystem's extent tree blocks, which vary)
        for n in os.listdir(a):
            assert _extents(os.path.join(a, n)) == _extents(os.path.join(b, n)), n
    if ra[0] == 0 and _fmt_of(b) in ('qcow2', 'qed'):
        ok, detail = qemu.is_clean_by_qemu('img', cwd=b)
        assert ok, detail


def test_help_lists_resize():
    rc, out, _ = qemu.qimg('--help')
    assert rc == 0
    # listed, and without "(not implemented yet)"
    assert [ln.split() for ln in out.splitlines() if ln.split()[:1] == ['resize']] == \
        [['resize']]


# -- fault injection -------------------------------------------------------------------------

FAULT_CASES = [
    ('grow-l1', _qcow2(data=DATA), ['img', '100G']),
    ('grow-metadata', _qcow2(data=DATA), ['--preallocation=metadata', 'img', '6M']),
    ('grow-backing', _backed(4 * MIB, 1 * MIB), ['img', '3M']),
    ('grow-falloc', _qcow2(data=DATA), ['--preallocation=falloc', 'img', '6M']),
    ('grow-full-backing', _backed(4 * MIB, 1 * MIB + 512), ['--preallocation=full', 'img',
                                                            '3M']),
    ('grow-full-mid-cluster', _qcow2(size='1000448', data=((0xbb, 960 * KIB, 16 * KIB),)),
     ['--preallocation=full', 'img', '3M']),
    ('shrink', _qcow2(size='10M', data=BIGDATA), ['--shrink', 'img', '4M']),
    ('shrink-l1', _qcow2(size='5G', data=((0xaa, 0, 64 * KIB), (0xbb, 4 * GIB, 1 * MIB))),
     ['--shrink', 'img', '1G']),
    ('shrink-data-file', _qcow2(size='10M', data=BIGDATA, data_file='img.data'),
     ['--shrink', 'img', '4M']),
    ('shrink-compressed', _compressed(), ['--shrink', 'img', '4M']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in FAULT_CASES],
                         ids=[c[0] for c in FAULT_CASES])
def test_resize_cut_at_every_write(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    n = cut_at_every_write(tmp_path, orig, 'resize', args, no_corruption('img'), limit=500)
    assert n > 1   # the resize wrote something, so some cut was tested


# -- --dry-run and --journal (beyond qemu-img) -----------------------------------------------

PORT_CASES = [
    ('qcow2-grow-l1', _qcow2(data=DATA), ['img', '100G']),
    ('qcow2-metadata', _qcow2(data=DATA), ['--preallocation=metadata', 'img', '6M']),
    ('qcow2-bitmap', _bitmap(_qcow2(data=DATA)), ['img', '3G']),
    ('qcow2-backing', _backed(4 * MIB, 1 * MIB), ['img', '3M']),
    ('qcow2-shrink', _qcow2(size='10M', data=BIGDATA), ['--shrink', 'img', '4M']),
    ('qcow2-shrink-snap', _snap(_qcow2(size='10M', data=BIGDATA)), ['--shrink', 'img', '4M']),
    ('raw-grow', _raw(data=DATA), ['-f', 'raw', 'img', '3M']),
    ('qed-grow', _plain('qed'), ['img', '5M']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_resize_dry_run_writes_nothing(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    rc, out, err = dry_run(tmp_path, orig, 'resize', args)
    assert (rc, err) == (0, '')
    assert out.startswith('Resize plan (dry run, nothing was written): ')
    assert 'Image resized.' not in out
    # the plan lists writes exactly when the real resize changes the file
    _, changed = real_run_changes(tmp_path, orig, 'resize', args)
    assert (len(out.splitlines()) > 1) == changed


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_resize_journal_then_undo(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    d, ref, before, jr, ra, rb = journal_pair(tmp_path, orig, 'resize', args, 'resize.journal')
    assert rb == ra
    after, expect = read_all(d), read_all(ref)
    shrink = '--shrink' in args
    for n in expect:
        if shrink and n == 'img':
            # the journal keeps no bytes of a cut: the file keeps its length, the rest is
            # qemu's image byte for byte
            assert after[n][:len(expect[n])] == expect[n]
        else:
            assert after[n] == expect[n], n
    if _fmt_of(d) in ('qcow2', 'qed'):
        ok, detail = qemu.is_clean_by_qemu('img', cwd=d)
        assert ok, detail
    undo_restores(jr, 'img', d, before)


def test_resize_dry_run_journal_refusals(tmp_path):
    d = str(tmp_path)
    _qcow2(data=DATA, data_file='img.data')(d)
    before = read_all(d)
    for opt in (['--dry-run'], ['--journal', str(tmp_path / 'j')]):
        rc, out, err = qemu.qimg('resize', *opt, 'img', '5M', cwd=d)
        assert rc == 1 and out == ''
        assert err == 'qimg: --%s is not supported for images with an external data file\n' \
            % opt[0].lstrip('-')
    rc, out, err = qemu.qimg('resize', '--dry-run', '--journal', 'j', 'img', '5M', cwd=d)
    assert (rc, out, err) == (1, '', 'qimg: --dry-run and --journal cannot be used together\n')
    assert read_all(d) == before
    assert not os.path.exists(str(tmp_path / 'j'))


@pytest.mark.parametrize('read_only', [False, True], ids=['writer', 'reader'])
def test_resize_refused_while_in_use(tmp_path, read_only):
    """Another process holds the image (qemu-io): qemu-img's lock message, nothing written;
    --journal refuses the same way and leaves no journal."""
    d = str(tmp_path)
    _qcow2(data=DATA)(d)
    before = read_all(d)
    with qemu.held_open('img', read_only=read_only, cwd=d):
        ra = qemu.run(qemu.QEMU_IMG, 'resize', 'img', '2M', cwd=d)
        rb = qemu.run(qemu.tool_path('qimg'), 'resize', 'img', '2M', cwd=d)
        rj = qemu.run(qemu.tool_path('qimg'), 'resize', '--journal', 'j', 'img', '2M', cwd=d)
    assert ra[0] == 1 and 'lock' in ra[2]
    assert rb == ra
    assert rj == ra
    assert read_all(d) == before


JOURNAL_CUT_CASES = [c for c in FAULT_CASES if c[0] in ('grow-l1', 'grow-metadata', 'shrink',
                                                         'shrink-compressed')]


@pytest.mark.parametrize('build,args', [c[1:] for c in JOURNAL_CUT_CASES],
                         ids=[c[0] for c in JOURNAL_CUT_CASES])
def test_resize_journal_cut_then_undo(tmp_path, build, args):
    """A --journal resize killed after each of its writes: qimg undo puts every byte back."""
    orig = build_orig(tmp_path, build)
    n = journal_cut_then_undo(tmp_path, orig, 'resize', args, limit=500)
    assert n > 1
