"""qimg measure against qemu-img 7.2 measure: the same stdout, stderr (qimg runs as a
symlink named qemu-img, so the program prefix matches) and exit status, over target
formats and creation options, --size values and source images (empty, sparse, full,
compressed, backing chains, data files, snapshots with -l, persistent bitmaps)."""

import os

import pytest

import qemu

TARGETS = [
    [],
    ['-O', 'raw'],
    ['-O', 'qcow2'],
    ['-O', 'qcow2', '--output=json'],
    ['-O', 'qcow2', '-o', 'cluster_size=512'],
    ['-O', 'qcow2', '-o', 'cluster_size=2M'],
    ['-O', 'qcow2', '-o', 'cluster_size=4k', '-o', 'refcount_bits=1'],
    ['-O', 'qcow2', '-o', 'refcount_bits=64'],
    ['-O', 'qcow2', '-o', 'extended_l2=on'],
    ['-O', 'qcow2', '-o', 'extended_l2=on,cluster_size=2M', '--output=json'],
    ['-O', 'qcow2', '-o', 'preallocation=metadata'],
    ['-O', 'qcow2', '-o', 'preallocation=falloc'],
    ['-O', 'qcow2', '-o', 'preallocation=full', '--output=json'],
    ['-O', 'qcow2', '-o', 'compat=0.10'],
    ['-O', 'qcow2', '-o', 'compat=v2', '--output=json'],
    ['-O', 'qcow2', '-o', 'backing_file=whatever.qcow2'],
    ['-O', 'qcow2', '-o', 'data_file=d.raw,data_file_raw=on'],
    ['-O', 'qcow2', '-o', 'encrypt.format=aes'],
    ['-O', 'raw', '-o', 'preallocation=full', '--output=json'],
]

SIZES = ['0', '1', '511', '512', '1000', '64k', '1M', '1G', '128G', '137438953473', '1T',
         '100T', '1P', '2E', '2305843009215741953', '8E',
         '9223372036854775807', '9223372036854775808', '-1', '1x', '0x10']

ERRORS = [
    [],
    ['-O', 'qcow2'],
    ['--size', '1G', 'x.img'],
    ['a', 'b'],
    ['-f', 'raw', '--size', '1G'],
    ['-l', 'snap', '--size', '1G'],
    ['--size', '1G', '--output=xml'],
    ['--output=xml', '--size', 'junk'],
    ['--size', '1G', '-O', 'nosuchfmt'],
    ['--size', '1G', '-O', 'qed'],
    ['--size', '1G', '-O', 'vdi'],
    ['--size', '1G', '-O', 'vmdk'],
    ['--size', '1G', '-O', 'qed', '-o', 'foo=1'],
    ['--size', '1G', '-O', 'qed', '-o', 'cluster_size=64k,table_size=4'],
    ['--size', '1G', '-O', 'vdi', '-o', 'static=on'],
    ['--size', '1G', '-O', 'raw', '-o', 'cluster_size=64k'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'nocow=on,extent_size_hint=1M'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'backing_file=a,,b,cluster_size=4k'],
    ['--size', '1G', '-O', 'vhdx'],
    ['--size', '1G', '-O', 'qcow'],
    ['--size', '1G', '-O', 'nbd'],
    ['--size', '1G', '-O', 'luks'],
    ['--size', '1G', '-O', 'dmg'],
    ['--size', '1G', '-O', 'null-co'],
    ['--size', '1G', '-O', 'file'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'help'],
    ['--size', '1G', '-O', 'qcow2', '-o', '?'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=4k,help'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'foo=1'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=1000'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=4M'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=1x'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=8k,extended_l2=on'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'compat=0.9'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'refcount_bits=3'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'refcount_bits=128'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'refcount_bits=0'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'compat=0.10,refcount_bits=8'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'preallocation=foo'],
    ['--size', '1G', '-O', 'raw', '-o', 'preallocation=foo'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'size=5M'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'encrypt.format=luks'],
    ['--size', '1P', '-O', 'qcow2', '-o', 'cluster_size=512'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'extended_l2=maybe'],
    ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=4k', '-o', 'cluster_size=64k'],
    ['nonexistent.qcow2'],
    ['-O', 'qcow2', 'nonexistent.qcow2'],
]


def test_bad_option_is_a_usage_error(tmp_path):
    """Deliberate difference (README): qemu-img 7.2's measure answers a missing argument or
    an unknown option with getopt's message and its whole --help text on stdout, exit 0;
    qimg gives the usage error every other command gives, exit 1."""
    for args, msg in ((['--size'], "missing argument for option '--size'"),
                      (['--bogus', '--size', '1G'], "unrecognized option '--bogus'")):
        rc, out, err = qemu.run(qemu.qimg_as_qemu_img(), 'measure', *args, cwd=str(tmp_path))
        assert (rc, out) == (1, '')
        assert err == "qemu-img: %s\nTry 'qemu-img --help' for more information\n" % msg


def both(args, cwd):
    a = qemu.run(qemu.QEMU_IMG, 'measure', *args, cwd=cwd)
    b = qemu.run(qemu.qimg_as_qemu_img(), 'measure', *args, cwd=cwd)
    return a, b


def assert_same(args, cwd):
    a, b = both(args, cwd)
    assert b == a, 'measure %s\nqemu-img: %r\nqimg:     %r' % (' '.join(args), a, b)
    return a


@pytest.mark.parametrize('size', SIZES)
def test_size(tmp_path, size):
    for t in TARGETS:
        assert_same(['--size', size] + t, str(tmp_path))


@pytest.mark.parametrize('args', ERRORS, ids=lambda a: ' '.join(a) or 'none')
def test_errors(tmp_path, args):
    qemu.qemu_img('create', '-f', 'raw', str(tmp_path / 'x.img'), '1M', check=True)
    assert_same(args, str(tmp_path))


def io(path, *cmds, fmt='qcow2'):
    args = []
    for c in cmds:
        args += ['-c', c]
    qemu.qemu_io('-f', fmt, *args, path, check=True)


def create(path, size, *opts, fmt='qcow2'):
    qemu.qemu_img('create', '-f', fmt, *opts, path, size, check=True)


# Each builder makes tmp/src (and whatever it needs) and returns the measure args naming it.
def src_empty(d):
    create(d + '/src', '10M')
    return ['src']


def src_sparse(d):
    create(d + '/src', '10M')
    # unaligned writes: partial clusters at both ends, a run over an L2 boundary
    io(d + '/src', 'write 1000 3000', 'write 300k 5k', 'write 2M 1M', 'write -z 5M 64k',
       'write 9M 4k')
    return ['src']


def src_sparse_small_clusters(d):
    create(d + '/src', '3M', '-o', 'cluster_size=512')
    io(d + '/src', 'write 0 512', 'write 513 100', 'write 1M 300k', 'write 3000k 72k')
    return ['src']


def src_full(d):
    create(d + '/src', '2M', '-o', 'cluster_size=4k')
    io(d + '/src', 'write -P 1 0 2M')
    return ['src']


def src_unaligned_size(d):
    create(d + '/src', '1000000')
    io(d + '/src', 'write 999000 1000')
    return ['src']


def src_compressed(d):
    create(d + '/plain', '4M', fmt='raw')
    io(d + '/plain', 'write -P 7 0 1M', 'write -P 9 3M 100k', fmt='raw')
    qemu.qemu_img('convert', '-c', '-O', 'qcow2', d + '/plain', d + '/src', check=True)
    return ['src']


def src_zero_clusters(d):
    create(d + '/src', '4M')
    io(d + '/src', 'write 0 1M', 'write -z 0 512k', 'write -z -u 768k 128k')
    return ['src']


def src_chain(d):
    create(d + '/base', '8M')
    io(d + '/base', 'write 0 1M', 'write 4M 64k')
    create(d + '/mid', '8M', '-b', 'base', '-F', 'qcow2')
    io(d + '/mid', 'write 6M 70k', 'write -z 0 64k')
    create(d + '/src', '12M', '-b', 'mid', '-F', 'qcow2')
    io(d + '/src', 'write 10M 1k', 'write 4M 4k')
    return ['src']


def src_chain_raw_base(d):
    create(d + '/base', '4M', fmt='raw')
    io(d + '/base', 'write 1M 1M', fmt='raw')
    create(d + '/src', '4M', '-b', 'base', '-F', 'raw')
    return ['src']


def src_snapshot(d):
    create(d + '/src', '4M')
    io(d + '/src', 'write 0 64k')
    qemu.qemu_img('snapshot', '-c', 'snap1', d + '/src', check=True)
    io(d + '/src', 'write 128k 192k', 'write 3M 1M', 'discard 0 64k')
    qemu.qemu_img('snapshot', '-c', 'snap2', d + '/src', check=True)
    io(d + '/src', 'write 1M 1M')
    return ['src']


def src_bitmaps(d):
    create(d + '/src', '100M')
    io(d + '/src', 'write 0 1M')
    for name, gran in (('b0', '64k'), ('a-much-longer-bitmap-name', '512'), ('b2', '2M')):
        qemu.qemu_img('bitmap', '--add', '-g', gran, d + '/src', name, check=True)
    qemu.qemu_img('bitmap', '--add', '--disable', d + '/src', 'off', check=True)
    return ['src']


def src_v2(d):
    create(d + '/src', '4M', '-o', 'compat=0.10')
    io(d + '/src', 'write 64k 64k')
    return ['src']


def src_extl2(d):
    create(d + '/src', '4M', '-o', 'extended_l2=on,cluster_size=128k')
    io(d + '/src', 'write 4k 4k', 'write 1M 8k', 'write -z 2M 4k')
    return ['src']


def src_data_file(d):
    create(d + '/src', '4M', '-o', 'data_file=' + d + '/src.data')
    io(d + '/src', 'write 1M 100k')
    return ['src']


def src_prealloc_metadata(d):
    create(d + '/src', '4M', '-o', 'preallocation=metadata')
    io(d + '/src', 'write 1M 64k')
    return ['src']


def src_raw_sparse(d):
    create(d + '/src', '5M', fmt='raw')
    io(d + '/src', 'write 1M 1M', 'write 4M 4k', fmt='raw')
    return ['src']


def src_raw_full(d):
    create(d + '/src', '3000000', '-o', 'preallocation=full', fmt='raw')
    return ['-f', 'raw', 'src']


def src_qed(d):
    create(d + '/src', '4M', fmt='qed')
    io(d + '/src', 'write 64k 64k', fmt='qed')
    return ['src']


def src_vdi(d):
    create(d + '/src', '4M', fmt='vdi')
    io(d + '/src', 'write 1M 64k', fmt='vdi')
    return ['src']


SOURCES = [src_empty, src_sparse, src_sparse_small_clusters, src_full, src_unaligned_size,
           src_compressed, src_zero_clusters, src_chain, src_chain_raw_base, src_snapshot,
           src_bitmaps, src_v2, src_extl2, src_data_file, src_prealloc_metadata,
           src_raw_sparse, src_raw_full, src_qed, src_vdi]


@pytest.mark.parametrize('builder', SOURCES, ids=lambda f: f.__name__[4:])
def test_source(tmp_path, builder):
    d = str(tmp_path)
    src = builder(d)
    for t in TARGETS:
        assert_same(t + src, d)
    # -U agrees too; and every source really measures (not two equal errors)
    rc, out, err = assert_same(['-U', '-O', 'qcow2'] + src, d)
    assert rc == 0 and err == '' and out.startswith('required size: '), (rc, out, err)


def test_source_results_are_real(tmp_path):
    """Not just agreement: a sparse source needs less than a full one, and bitmaps show."""
    d = str(tmp_path)
    src_bitmaps(d)
    rc, out, _ = qemu.qimg('measure', '-O', 'qcow2', 'src', cwd=d)
    assert rc == 0
    lines = dict(l.split(': ') for l in out.splitlines())
    assert int(lines['required size']) < int(lines['fully allocated size'])
    assert int(lines['bitmaps size']) > 0


SNAPSHOT_ARGS = [
    ['-l', 'snap1'], ['-l', 'snap2'], ['-l', '1'], ['-l', '2'], ['-l', 'nosuch'], ['-l', ''],
    ['-l', 'snapshot.id=1'], ['-l', 'snapshot.name=snap2'],
    ['-l', 'snapshot.id=1,snapshot.name=snap1'], ['-l', 'snapshot.id=2,snapshot.name=snap1'],
    ['-l', 'snapshot.foo=1'], ['-l', 'snapshot.id'],
    ['-l', 'snap2', '--output=json'], ['-l', 'snap1', '-l', 'snap2'],
]


@pytest.mark.parametrize('args', SNAPSHOT_ARGS, ids=lambda a: ' '.join(a))
def test_snapshot(tmp_path, args):
    d = str(tmp_path)
    src_snapshot(d)
    for t in (['-O', 'qcow2'], ['-O', 'raw'], ['-O', 'qcow2', '-o', 'cluster_size=4k']):
        assert_same(args + t + ['src'], d)


def test_snapshot_on_formats_without_them(tmp_path):
    d = str(tmp_path)
    for b in (src_raw_sparse, src_qed):
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        src = b(d)
        assert_same(['-l', 'x', '-O', 'qcow2'] + src, d)


def test_snapshot_bitmaps(tmp_path):
    """-l and bitmaps: the bitmaps are the image's, the data the snapshot's."""
    d = str(tmp_path)
    src_snapshot(d)
    qemu.qemu_img('bitmap', '--add', 'src', 'bm', check=True, cwd=d)
    assert_same(['-l', 'snap1', '-O', 'qcow2', 'src'], d)
    assert_same(['-l', 'snap1', '-O', 'qcow2', '--output=json', 'src'], d)


def test_size_option_with_source(tmp_path):
    """qcow2_measure checks the L1 limit on the size option (0 without one) even when a
    source gives the virtual size."""
    d = str(tmp_path)
    src_sparse(d)
    for o in ('size=1P,cluster_size=512', 'size=1M,cluster_size=512', 'size=0'):
        assert_same(['-O', 'qcow2', '-o', o, 'src'], d)


def test_large_sparse_source(tmp_path):
    d = str(tmp_path)
    create(d + '/src', '100T')
    io(d + '/src', 'write 50T 64k', 'write 99T 1M')
    for t in (['-O', 'qcow2'], ['-O', 'qcow2', '-o', 'cluster_size=2M'], ['-O', 'raw']):
        assert_same(t + ['src'], d)


def test_corrupt_source(tmp_path):
    """An unaligned L2 offset in the source: qemu's corruption event, then the block status
    error, exit 1 (raw targets never ask for block status)."""
    import struct
    d = str(tmp_path)
    create(d + '/src', '4M')
    io(d + '/src', 'write 0 64k')
    with open(d + '/src', 'r+b') as f:
        l1 = struct.unpack('>Q', f.read(48)[40:48])[0]
        f.seek(l1)
        e = struct.unpack('>Q', f.read(8))[0]
        f.seek(l1)
        f.write(struct.pack('>Q', e + 512))
    for t in (['-O', 'qcow2'], ['-O', 'raw'], ['-O', 'qcow2', '--output=json']):
        assert_same(t + ['src'], d)


def test_missing_backing(tmp_path):
    d = str(tmp_path)
    create(d + '/src', '4M', '-u', '-b', 'gone.qcow2', '-F', 'qcow2')
    assert_same(['-O', 'qcow2', 'src'], d)
    assert_same(['-f', 'raw', '-O', 'qcow2', 'src'], d)
    assert_same(['-f', 'qed', '-O', 'qcow2', 'src'], d)


def test_encrypted_sources(tmp_path):
    """qemu opens the source before it measures: without a secret, its open error."""
    d = str(tmp_path)
    r = qemu.create_luks('--object', 'secret,id=s0,data=x', '-f', 'qcow2', '-o',
                         'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10',
                         d + '/q', '1M')
    assert r[0] == 0, r
    r = qemu.create_luks('--object', 'secret,id=s0,data=x', '-f', 'luks', '-o',
                         'key-secret=s0,iter-time=10', d + '/l', '1M')
    assert r[0] == 0, r
    for f in ('q', 'l'):
        assert_same(['-O', 'qcow2', f], d)
        assert_same(['-O', 'raw', f], d)


def test_in_use_bitmap(tmp_path):
    """A bitmap left in use (inconsistent) still counts, as qemu loads it at open."""
    import struct
    d = str(tmp_path)
    create(d + '/src', '10M')
    qemu.qemu_img('bitmap', '--add', d + '/src', 'bm0', check=True)
    qemu.qemu_img('bitmap', '--add', '-g', '512', d + '/src', 'bm1', check=True)
    with open(d + '/src', 'r+b') as f:
        h = f.read(4096)
        o = struct.unpack('>I', h[100:104])[0]
        diroff = None
        while True:
            t, ln = struct.unpack('>II', h[o:o + 8])
            if t == 0:
                break
            if t == 0x23852875:
                diroff = struct.unpack('>Q', h[o + 24:o + 32])[0]
            o += 8 + ((ln + 7) & ~7)
        f.seek(diroff + 12)
        flags = struct.unpack('>I', f.read(4))[0]
        f.seek(diroff + 12)
        f.write(struct.pack('>I', flags | 1))
    out = assert_same(['-O', 'qcow2', 'src'], d)
    assert 'bitmaps size: 327680' in out[1]
    assert_same(['-O', 'qcow2', '-o', 'cluster_size=512', '--output=json', 'src'], d)


@pytest.mark.parametrize('damage', ['unaligned', 'too_large', 'past_eof'])
def test_snapshot_l1_hostile(tmp_path, damage):
    """qcow2_snapshot_load_tmp validates the snapshot's L1 table (size, then offset)."""
    import struct
    d = str(tmp_path)
    src_snapshot(d)
    with open(d + '/src', 'r+b') as f:
        so = struct.unpack('>Q', f.read(72)[64:72])[0]
        f.seek(so)
        l1o, l1s = struct.unpack('>QI', f.read(12))
        f.seek(so)
        if damage == 'unaligned':
            f.write(struct.pack('>QI', l1o + 8, l1s))
        elif damage == 'too_large':
            f.write(struct.pack('>QI', l1o, 0x800000))
        else:
            f.write(struct.pack('>QI', 1 << 40, l1s))  # reads as zeros: nothing allocated
    for t in (['-O', 'qcow2'], ['-O', 'raw']):
        assert_same(['-l', 'snap1'] + t + ['src'], d)
