"""qcow2 writes through qimg's block layer (build/qimg-io) vs the real qemu-io 7.2.

Each case builds the same image with real qemu-img/qemu-io in two directories (same file
names, so backing and data file names agree), runs one write script with qemu-io in one and
with qimg-io in the other, and requires: the same exit code and output (timing filtered),
identical guest bytes, a clean real `qemu-img check`, the same `qemu-img map --output=json`
(host offsets included: qimg allocates where qemu does), the same image file length and,
with an external data file, the same data file bytes.

These are the focused deterministic cases; the randomized differential harness is separate.
"""

import hashlib
import os

import pytest

import qemu
from test_qimg_io import QIMG_IO, filter_io, qimg_io_alias  # noqa: F401

IMG = 'img.qcow2'


def cmds(*lines):
    out = []
    for line in lines:
        out += ['-c', line]
    return out


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def differential(tmp_path, setup, script, extra_files=()):
    """setup(dir) builds IMG (and what it needs) in dir; script: qemu-io command lines.
    extra_files: files (data files) whose bytes must agree afterwards."""
    res = {}
    for tool, exe in (('qemu', qemu.QEMU_IO), ('qimg', qimg_io_alias())):
        d = str(tmp_path / tool)
        os.mkdir(d)
        setup(d)
        rc, out, err = qemu.run(exe, '-f', 'qcow2', *cmds(*script), IMG, cwd=d)
        rmap, mout, merr = qemu.qemu_img('map', '--output=json', IMG, cwd=d)
        assert rmap == 0, merr
        guest, gerr = qemu.guest_sha256(IMG, cwd=d)
        assert guest, gerr
        res[tool] = dict(rc=rc, out=filter_io(out), err=err, map=mout, guest=guest,
                         size=os.path.getsize(os.path.join(d, IMG)),
                         files={f: sha(os.path.join(d, f)) for f in extra_files})
        if tool == 'qimg':
            ok, detail = qemu.is_clean_by_qemu(IMG, cwd=d)
            assert ok, 'qemu-img check after qimg-io: %s' % detail
    q, i = res['qemu'], res['qimg']
    assert i['out'] == q['out'], 'stdout\nqemu-io:\n%s\nqimg-io:\n%s' % (q['out'], i['out'])
    assert i['err'] == q['err']
    assert i['rc'] == q['rc']
    assert i['guest'] == q['guest'], 'guest bytes differ'
    assert i['map'] == q['map'], 'map differs\nqemu:\n%s\nqimg:\n%s' % (q['map'], i['map'])
    assert i['size'] == q['size'], 'image length: qemu %d, qimg %d' % (q['size'], i['size'])
    assert i['files'] == q['files'], 'data file bytes differ'
    return q


def plain(size='4M', **opts):
    def setup(d):
        qemu.make_image(os.path.join(d, IMG), size, **opts)
    return setup


def prefilled(size='4M', fill=(), snapshot=False, **opts):
    """qemu-img create, then qemu-io writes fill (command lines), then a snapshot."""
    def setup(d):
        p = os.path.join(d, IMG)
        qemu.make_image(p, size, **opts)
        if fill:
            qemu.io(p, *fill)
        if snapshot:
            qemu.snapshot_create(p, 'snap1')
    return setup


def with_backing(size='4M', base_opts=None, **opts):
    """base.qcow2 with data (patterns, a zero cluster), IMG on top of it."""
    def setup(d):
        base = os.path.join(d, 'base.qcow2')
        qemu.make_image(base, size, **(base_opts or {}))
        qemu.io(base, 'write -P 0x11 0 1M', 'write -P 0x22 1500k 3000', 'write -z 600k 64k')
        qemu.make_image(os.path.join(d, IMG), size, backing='base.qcow2', **opts)
    return setup


MIXED = [
    'write -P 1 0 4k',             # head of a cluster
    'write -P 2 100k 70k',         # unaligned, spans clusters
    'write -P 3 1000 3000',        # inside an allocated cluster: in place
    'write -P 4 1M 1M',            # aligned run
    'write -P 5 1030k 10',         # rewrite inside the run
    'write -P 6 3M 100',           # far away
    'read -P 3 1000 3000',
    'read -P 6 3M 100',
]

LAYOUTS = {
    'c512': dict(cluster_size=512),
    'c4k': dict(cluster_size=4096),
    'c64k': dict(),
    'c2M': dict(cluster_size=2 << 20),
    'compat010': dict(compat='0.10'),
    'compat010-c4k': dict(compat='0.10', cluster_size=4096),
    'extl2-c16k': dict(extended_l2=True, cluster_size=16384),
    'extl2-c64k': dict(extended_l2=True),
    'extl2-c2M': dict(extended_l2=True, cluster_size=2 << 20),
    'rc1': dict(refcount_bits=1),
    'rc64-c4k': dict(refcount_bits=64, cluster_size=4096),
    'lazy': dict(lazy_refcounts=True),
}


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_plain_writes(tmp_path, layout):
    differential(tmp_path, plain(**LAYOUTS[layout]), MIXED)


@pytest.mark.parametrize('layout', ['c64k', 'c4k', 'extl2-c64k', 'compat010'])
def test_overwrite_snapshot_shared_clusters(tmp_path, layout):
    """Clusters shared with an internal snapshot (refcount 2, no OFLAG_COPIED): the L2
    table is copied (l2_allocate), the data clusters reallocated with COW."""
    fill = ['write -P 0x11 0 1M', 'write -z 1M 64k']
    differential(tmp_path, prefilled(fill=fill, snapshot=True, **LAYOUTS[layout]),
                 ['write -P 1 100 200', 'write -P 2 200k 100k', 'write -P 3 2M 1000',
                  'write -P 4 105k 1k', 'read -P 0x11 0 100'])


@pytest.mark.parametrize('overlay', ['c64k', 'extl2-c64k', 'compat010-c4k', 'c512'])
def test_backing_cow(tmp_path, overlay):
    """Partial clusters over backing data are completed from the backing file."""
    differential(tmp_path, with_backing(**LAYOUTS[overlay]),
                 ['write -P 1 100 200', 'write -P 2 1400k 200k', 'write -P 3 590k 30k',
                  'write -P 4 2M 1000', 'read -P 0x11 0 100', 'read -P 0x22 1600k 1k'])


ZERO_SCRIPT = [
    'write -P 1 0 1M',
    'write -z 100 200',          # unaligned over data: written as zeros
    'write -z 64k 64k',          # zero flag, cluster kept
    'write -z -u 128k 128k',     # zero flag, cluster freed
    'write -z 300k 500k',
    'write -z -u 3M 100k',       # unallocated
    'write -P 2 130k 1k',        # into a zeroed, freed cluster
    'read -P 0 64k 64k',
]


@pytest.mark.parametrize('layout', ['c64k', 'extl2-c64k', 'compat010', 'c4k'])
def test_write_zeroes(tmp_path, layout):
    differential(tmp_path, plain(**LAYOUTS[layout]), ZERO_SCRIPT)


@pytest.mark.parametrize('overlay', ['c64k', 'compat010', 'extl2-c64k'])
def test_write_zeroes_and_discard_over_backing(tmp_path, overlay):
    differential(tmp_path, with_backing(**LAYOUTS[overlay]),
                 ['write -z 100 200', 'write -z 64k 64k', 'write -z -u 128k 128k',
                  'write -z 300k 500k', 'discard 1M 1M', 'read -P 0 64k 64k'])


@pytest.mark.parametrize('layout', ['c64k', 'compat010-c4k', 'extl2-c64k'])
def test_discard(tmp_path, layout):
    differential(tmp_path, plain(**LAYOUTS[layout]),
                 ['write -P 1 0 1M', 'discard 100 200', 'discard 64k 64k',
                  'discard 100k 300k', 'write -P 2 70k 10k', 'discard 3M 1M',
                  'read -P 0 64k 64k'])


def test_discard_partial_last_cluster(tmp_path):
    """A partial cluster is discarded only when it ends the image."""
    differential(tmp_path, plain(size='1000k'),
                 ['write -P 1 0 1000k', 'discard 960k 40k', 'discard 0 1000', 'read -P 0 960k 40k'])


@pytest.mark.parametrize('layout,ctype', [('c64k', 'zlib'), ('c64k', 'zstd'),
                                          ('c4k', 'zstd'), ('c512', 'zlib'),
                                          ('c2M', 'zlib')])
def test_compressed_writes(tmp_path, layout, ctype):
    opts = dict(LAYOUTS[layout], compression_type=ctype)
    cs = int(opts.get('cluster_size', 65536))
    differential(tmp_path, plain(**opts),
                 ['write -c -P 1 0 %d' % cs,
                  'write -c -P 2 %d %d' % (2 * cs, 2 * cs),
                  'write -P 3 %d 100' % (2 * cs + 7),      # COW of a compressed cluster
                  'write -c %d %d' % (cs, cs),             # 0xcd: compresses well
                  'write -c -P 4 %d %d' % (cs, cs),        # allocated: EIO as qemu
                  'write -z -u %d %d' % (2 * cs, cs),      # frees the compressed one
                  'read -P 2 %d 100' % (3 * cs)])


def test_compressed_short_last_cluster(tmp_path):
    differential(tmp_path, plain(size='1000k'),
                 ['write -c -P 1 960k 40k', 'write -c -P 2 0 100', 'read -P 1 960k 40k'])


def data_file_image(raw, **opts):
    def setup(d):
        qemu.make_image(os.path.join(d, IMG), '4M', data_file='img.data',
                        data_file_raw=raw, **opts)
    return setup


DATA_SCRIPT = ['write -P 1 100 200', 'write -P 2 1400k 200k', 'write -z 590k 30k',
               'write -z -u 1400k 64k', 'discard 1500k 64k', 'write -P 4 2M 1000',
               'read -P 2 1464k 36k']


@pytest.mark.parametrize('raw', [False, True], ids=['data_file', 'data_file_raw'])
def test_data_file(tmp_path, raw):
    differential(tmp_path, data_file_image(raw), DATA_SCRIPT, extra_files=['img.data'])


def test_data_file_extended_l2(tmp_path):
    differential(tmp_path, data_file_image(False, extended_l2=True), DATA_SCRIPT,
                 extra_files=['img.data'])


def test_data_file_compressed_refused(tmp_path):
    differential(tmp_path, data_file_image(False), ['write -c 0 64k'],
                 extra_files=['img.data'])


def test_many_l2_tables(tmp_path):
    """512-byte clusters: each L2 table maps 32 KiB, so a 200 KiB write allocates L2 tables
    between its data clusters, and the first refcount block fills."""
    differential(tmp_path, plain(size='1M', cluster_size=512),
                 ['write -P 1 1000 200k', 'write -P 2 500k 1000', 'write -z -u 10k 20k',
                  'write -P 3 12k 1k'])


def test_flush_and_reopen(tmp_path):
    """Data written before a flush is visible after the image is closed and reopened."""
    differential(tmp_path, plain(),
                 ['write -P 1 0 100k', 'flush', 'write -P 2 50k 10k', 'flush',
                  'read -P 1 0 50k'])


@pytest.mark.parametrize('layout,size,grow', [
    ('c64k', '1M', ['truncate 3M', 'write -P 2 2M 64k']),
    ('c512', '64k', ['truncate 3M', 'write -P 2 2M 64k', 'truncate 5000k',
                     'write -P 3 4900k 100k']),                     # the L1 table grows
    ('compat010-c4k', '64k', ['truncate 3M', 'write -P 2 2M 64k']),
    ('extl2-c64k', '100k', ['truncate 3M', 'write -P 2 2M 64k']),
])
def test_truncate_grow(tmp_path, layout, size, grow):
    differential(tmp_path, plain(size=size, **LAYOUTS[layout]),
                 ['write -P 1 0 64k'] + grow + ['read -P 0 %d 4096' % (2 << 20 | 65536)])


def long_backing(size, **opts):
    """IMG shorter than its 4 MiB backing file full of 0x11."""
    def setup(d):
        base = os.path.join(d, 'base.qcow2')
        qemu.make_image(base, '4M')
        qemu.io(base, 'write -P 0x11 0 4M')
        qemu.make_image(os.path.join(d, IMG), size, backing='base.qcow2', **opts)
    return setup


@pytest.mark.parametrize('layout,size', [('c64k', '1M'), ('c64k', '1000k'),
                                         ('extl2-c64k', '1000k'), ('compat010', '1000k')])
def test_truncate_grow_over_longer_backing(tmp_path, layout, size):
    """The new area must not show the backing file: qemu zeroes it (v2 cannot: the same
    failure as qemu's)."""
    differential(tmp_path, long_backing(size, **LAYOUTS[layout]),
                 ['truncate 3M', 'read -P 0 2M 64k'])


def test_truncate_grow_data_file(tmp_path):
    differential(tmp_path, data_file_image(False),
                 ['write -P 1 0 64k', 'truncate 6M', 'write -P 2 5M 64k'],
                 extra_files=['img.data'])


def test_truncate_unaligned_refused(tmp_path):
    differential(tmp_path, plain(size='64k', cluster_size=512), ['truncate 1000'])


@pytest.mark.parametrize('mode', ['falloc', 'full'])
def test_truncate_falloc_full(tmp_path, mode):
    """falloc/full growth as qemu 7.2's qcow2_co_truncate: new refcount structures, the
    data clusters after them, mapped (an unaligned old end: the head copied)."""
    differential(tmp_path, plain(size='1000448'),
                 ['write -P 1 960k 16k', 'truncate -m %s 3M' % mode, 'read -P 0 2M 64k',
                  'write -P 2 2M 4k'])


@pytest.mark.parametrize('layout', ['c64k', 'extl2-c64k', 'compat010'])
@pytest.mark.parametrize('mode', ['falloc', 'full'])
def test_truncate_falloc_over_longer_backing(tmp_path, mode, layout):
    """falloc/full over a longer backing file: the file's zeros hide the backing file (the
    new clusters' subclusters marked allocated), nothing zeroed afterwards, so v2 works
    here where plain growth fails as qemu's does."""
    differential(tmp_path, long_backing('1000448', **LAYOUTS[layout]),
                 ['truncate -m %s 3M' % mode, 'read -P 0 2M 64k', 'read -P 0 1000448 512'])


def test_freed_cluster_reuse_across_runs_of_one_request(tmp_path):
    """One write of three allocation runs whose first run replaces a compressed cluster:
    qemu's write tasks link (and free) after the later runs allocate, so the last run does
    not reuse the freed cluster (found by a randomized script)."""
    differential(tmp_path, plain(size='2048', refcount_bits=1, cluster_size=512),
                 ['write -c -P 67 512 512', 'write -P 89 1024 1', 'write -P 112 0 2048',
                  'write -z -u 0 1', 'write -c -P 175 512 512', 'write -P 19 0 1543',
                  'write -P 17 1536 100', 'write -z 1536 100', 'write -z -u 1163 885',
                  'discard 0 512'])


def test_corrupt_entry_stops_the_image(tmp_path):
    """An unaligned data cluster offset met by a write: qemu's corruption event, the corrupt
    bit set, the write failed with EIO and every later request with "No medium found"."""
    def setup(d):
        p = os.path.join(d, IMG)
        qemu.make_image(p, '1M')
        qemu.io(p, 'write -P 1 0 64k')
        with open(p, 'r+b') as f:          # L2 table at 0x40000, its first entry + 512
            f.seek(0x40000)
            e = int.from_bytes(f.read(8), 'big')
            f.seek(0x40000)
            f.write((e + 512).to_bytes(8, 'big'))

    res = {}
    for tool, exe in (('qemu', qemu.QEMU_IO), ('qimg', qimg_io_alias())):
        d = str(tmp_path / tool)
        os.mkdir(d)
        setup(d)
        rc, out, err = qemu.run(exe, '-f', 'qcow2', *cmds('write -P 2 100 100',
                                                           'write -P 3 64k 1k', 'read 0 512'),
                                IMG, cwd=d)
        with open(os.path.join(d, IMG), 'rb') as f:
            res[tool] = (rc, out, err.replace('qimg-io', 'qemu-io'), f.read())
    assert res['qimg'] == res['qemu']
    assert 'Marking image as corrupt: Data cluster offset 0x50200 unaligned' in res['qemu'][2]


@pytest.mark.parametrize('layout,script', [
    ('c64k', ['write -P 1 0 4M', 'truncate 1M', 'read -P 1 0 1M']),
    ('c64k', ['write -P 1 0 3M', 'truncate 1000k', 'truncate 3M', 'write -P 2 2M 64k',
              'read -P 0 1000k 24k']),
    ('c512', ['write -P 1 0 4M', 'truncate 100k']),                  # refblocks dropped
    ('rc64-c4k', ['write -P 1 0 4M', 'truncate 100k', 'write -P 2 50k 10k']),
    ('extl2-c64k', ['write -P 1 0 2M', 'write -c -P 3 3M 64k', 'truncate 1536k']),
    ('compat010', ['write -P 1 0 2M', 'truncate 1536k']),
])
def test_truncate_shrink(tmp_path, layout, script):
    """qemu 7.2's shrink: cut clusters freed, L1 tail cleared, unused refblocks dropped, the
    file cut after its last used cluster."""
    differential(tmp_path, plain(size='4M', **LAYOUTS[layout]), script)


def test_truncate_shrink_with_snapshot(tmp_path):
    fill = ['write -P 0x11 0 1M']
    differential(tmp_path, prefilled(fill=fill, snapshot=True),
                 ['truncate 512k', 'write -P 5 100k 4k'])


def test_truncate_shrink_v2_with_snapshot_refused(tmp_path):
    fill = ['write -P 0x11 0 1M']
    q = differential(tmp_path, prefilled(fill=fill, snapshot=True, compat='0.10'),
                     ['truncate 512k'])
    assert "Can't resize a v2 image which has snapshots" in q['err']


def test_truncate_shrink_data_file(tmp_path):
    differential(tmp_path, data_file_image(False), ['write -P 1 0 2M', 'truncate 1536k'],
                 extra_files=['img.data'])


@pytest.mark.parametrize('layout,size,script', [
    ('c64k', '1M', ['write -P 1 0 64k', 'truncate -m metadata 3M', 'write -P 2 2M 64k']),
    ('c512', '1000k', ['write -P 1 0 64k', 'truncate -m metadata 3000k']),
    ('extl2-c64k', '1000k', ['write -P 1 0 64k', 'truncate -m metadata 3M',
                             'write -P 2 2100k 1k']),
])
def test_truncate_grow_metadata_prealloc(tmp_path, layout, size, script):
    """qemu's preallocate_co: the new clusters mapped (no subcluster marked written), the
    file grown to hold them."""
    differential(tmp_path, plain(size=size, **LAYOUTS[layout]), script)


@pytest.mark.parametrize('opts,script', [
    (dict(), ['write -P 1 0 64k', 'truncate 6M', 'write -P 2 5M 1k']),
    (dict(cluster_size=512), ['truncate 6M', 'truncate 2000k']),
    # the L1 grows by one entry; its entry write must not grow the file past the table
    (dict(cluster_size=512), ['write -P 1 0 1M', 'truncate 4200448']),
])
def test_truncate_data_file_raw(tmp_path, opts, script):
    """A data-file-raw image grows with its metadata preallocated (host offset = guest
    offset), as qemu enforces."""
    differential(tmp_path, data_file_image(True, **opts), script, extra_files=['img.data'])


def test_compressed_not_packed_into_reused_cluster(tmp_path):
    """Deliberately better than qemu 7.2 (README): qemu packs compressed bytes into the host
    cluster it packed into before even after that cluster was freed and taken as a data
    cluster, overwriting the data (its check: OFLAG_COPIED data cluster, refcount=2). qimg
    starts a new cluster there: clean check, every byte as written."""
    script = ['write -c -P 210 2040k 4k', 'write -P 147 2040k 4k', 'write -P 48 1M 4k',
              'write -c -P 100 2036k 4k']
    dirs = {}
    for tool, exe in (('qemu', qemu.QEMU_IO), ('qimg', qimg_io_alias())):
        d = str(tmp_path / tool)
        os.mkdir(d)
        p = qemu.make_image(os.path.join(d, IMG), '2M', cluster_size=4096)
        qemu.io(p, 'write -P 0x5a 0 100k')
        rc, out, err = qemu.run(exe, '-f', 'qcow2', *cmds(*script), IMG, cwd=d)
        assert rc == 0, out + err
        dirs[tool] = d
    ok, detail = qemu.is_clean_by_qemu(IMG, cwd=dirs['qemu'])
    assert not ok, 'qemu 7.2 no longer corrupts here: %s' % detail
    ok, detail = qemu.is_clean_by_qemu(IMG, cwd=dirs['qimg'])
    assert ok, detail
    rc, out, err = qemu.run(qemu.QEMU_IO, '-f', 'qcow2', *cmds(
        'read -P 147 2040k 4k', 'read -P 48 1M 4k', 'read -P 100 2036k 4k',
        'read -P 0x5a 0 100k'), IMG, cwd=dirs['qimg'])
    assert rc == 0 and 'verification failed' not in out, out + err
