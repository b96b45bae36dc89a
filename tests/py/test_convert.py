"""qimg convert against qemu-img convert 7.2: the same command line run in two directories
holding the same source images (made by qemu-img and qemu-io) must give the same stdout,
stderr (qimg run as `qemu-img`), exit status and output files, byte for byte (vdi's random
UUIDs masked). Where qemu's output is not deterministic (-W), the target must check clean
with real qemu-img and compare identical to qemu's."""

import os
import shlex
import shutil
import subprocess

import pytest

import qemu

MiB = 1 << 20


def _io(path, *cmds, fmt='qcow2', cwd=None):
    args = [qemu.QEMU_IO, '-f', fmt]
    for c in cmds:
        args += ['-c', c]
    subprocess.run(args + [path], check=True, stdout=subprocess.DEVNULL, cwd=cwd)


def _img(*args, cwd=None):
    subprocess.run([qemu.QEMU_IMG] + list(args), check=True, stdout=subprocess.DEVNULL, cwd=cwd)


def _build_sources(d):
    """Every source layout, small: mixed data, zeros (written and plain), holes."""
    j = lambda n: os.path.join(d, n)  # noqa: E731
    _img('create', '-q', '-f', 'qcow2', j('s.qcow2'), '24M')
    _io(j('s.qcow2'), 'write -P 0xaa 0 3M', 'write -P 0 4M 1M', 'write -z 8M 1M',
        'write -P 0xbb 10M 100k', 'write -P 0xcc 13M 5M', 'write -P 0xdd 23M 4k',
        'write -P 0 23M 512')
    _img('create', '-q', '-f', 'qcow2', '-b', 's.qcow2', '-F', 'qcow2', j('top.qcow2'))
    _io(j('top.qcow2'), 'write -P 0x11 1M 2M', 'write -z 14M 1M', 'write -P 0x12 20M 64k')
    _img('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', j('v2.qcow2'), '20M')
    _io(j('v2.qcow2'), 'write -P 1 0 1M', 'write -z 2M 1M', 'write -P 2 5M 64k')
    _img('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=128k',
         j('xl2.qcow2'), '20M')
    _io(j('xl2.qcow2'), 'write -P 1 0 5k', 'write -z 200k 8k', 'write -P 2 1M 300k',
        'write -P 3 19M 4k')
    _img('convert', '-c', '-O', 'qcow2', j('s.qcow2'), j('zlib.qcow2'))
    _img('convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', j('s.qcow2'),
         j('zstd.qcow2'))
    # qemu 7.2 opens a relative data_file name from the working directory (not the image's):
    # made and written from the sources' directory, run from the test's, which holds it too
    _img('create', '-q', '-f', 'qcow2', '-o', 'data_file=df.raw', j('df.qcow2'), '20M', cwd=d)
    _io(j('df.qcow2'), 'write -P 5 0 1M', 'write -P 6 7M 1M', cwd=d)
    _img('create', '-q', '-f', 'qcow2', '-o', 'data_file=dfr.raw,data_file_raw=on',
         j('dfr.qcow2'), '20M', cwd=d)
    _io(j('dfr.qcow2'), 'write -P 5 0 1M', 'write -P 6 7M 1M', cwd=d)
    # big enough for the copy's 2 MiB chunks: data runs, zeros inside data (64k and 4k
    # runs), written zeros, zero clusters, holes, an unaligned tail
    _img('create', '-q', '-f', 'qcow2', j('big.qcow2'), '40M')
    _io(j('big.qcow2'), 'write -P 0x41 0 9M', 'write -P 0 2M 64k', 'write -P 0 5M 4k',
        'write -z 12M 3M', 'write -P 0 16M 3M', 'write -P 0x42 20M 5M',
        'write -P 0 22M 192k', 'write -P 0x43 39M 1000k')
    _img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', j('c4k.qcow2'), '8M')
    _io(j('c4k.qcow2'), 'write -P 8 0 100k', 'write -P 9 3M 1M', 'write -z 3200k 64k')
    _img('create', '-q', '-f', 'qcow2', j('snap.qcow2'), '8M')
    _io(j('snap.qcow2'), 'write -P 1 0 1M')
    _img('snapshot', '-c', 'one', j('snap.qcow2'))
    _io(j('snap.qcow2'), 'write -P 2 512k 1M')
    _img('snapshot', '-c', 'two', j('snap.qcow2'))
    _io(j('snap.qcow2'), 'write -P 3 4M 1M')
    _img('convert', '-O', 'raw', j('s.qcow2'), j('s.raw'))
    _img('convert', '-O', 'qed', j('s.qcow2'), j('s.qed'))
    _img('convert', '-O', 'vdi', j('s.qcow2'), j('s.vdi'))
    _img('create', '-q', '-f', 'qed', '-b', 's.raw', '-F', 'raw', j('top.qed'))
    _io(j('top.qed'), 'write -P 0x21 1M 2M', 'write -P 0x22 20M 64k', fmt='qed')
    with open(j('odd.raw'), 'wb') as f:
        f.write(bytes(range(256)) * 3906 + b'\x01' * 65)  # 1000001 bytes
    _img('create', '-q', '-f', 'qcow2', '-b', 'odd.raw', '-F', 'raw', '-o', 'cluster_size=4k',
         j('overodd.qcow2'), '3M')
    _io(j('overodd.qcow2'), 'write -P 7 900k 200k')
    _img('create', '-q', '-f', 'raw', j('empty.raw'), '5M')
    with open(j('junk'), 'wb') as f:
        f.write(b'junk' * 5000)
    _img('create', '-q', '-f', 'qcow2', j('bm.qcow2'), '8M')
    _io(j('bm.qcow2'), 'write -P 4 0 1M')
    _img('bitmap', '--add', j('bm.qcow2'), 'b0')
    _img('bitmap', '--add', '-g', '128k', '--disable', j('bm.qcow2'), 'b1')
    _io(j('bm.qcow2'), 'write -P 5 2M 1M')
    # a bitmap left in use (the writer was killed): inconsistent
    shutil.copy(j('bm.qcow2'), j('bmbad.qcow2'))
    subprocess.run([qemu.QEMU_IO, '-c', 'write -P 6 4M 64k', '-c', 'sigraise 9', j('bmbad.qcow2')],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('convert-src'))
    _build_sources(d)
    return d


SRC_FILES = ['s.qcow2', 'top.qcow2', 'v2.qcow2', 'xl2.qcow2', 'zlib.qcow2', 'zstd.qcow2',
             'df.qcow2', 'dfr.qcow2', 'c4k.qcow2', 's.raw', 's.qed', 's.vdi', 'top.qed',
             'odd.raw', 'overodd.qcow2', 'empty.raw', 'snap.qcow2']

TARGET_OPTS = ['-O raw', '-O qcow2', '-O qcow2 -c', '-O qcow2 -S 0', '-O raw -S 0',
               '-O qcow2 -o cluster_size=4k', '-O qcow2 -o cluster_size=2M,extended_l2=on',
               '-O qcow2 -c -o compression_type=zstd', '-O qcow2 -o compat=0.10',
               '-O qed', '-O vdi', '-O qcow2 -S 64k', '-O raw -S 1k', '-p -O qcow2']

# (id, argument string); the output is t.img
CASES = []
for _src in SRC_FILES:
    for _o in TARGET_OPTS:
        CASES.append(('%s%s' % (_src, _o.replace(' ', '')), '%s %s t.img' % (_o, _src)))
CASES += [
    # backing file for the target: only the source's own clusters are written
    ('B-qcow2', '-O qcow2 -B s.qcow2 -F qcow2 top.qcow2 t.img'),
    ('B-qcow2-c', '-O qcow2 -c -B s.qcow2 -F qcow2 top.qcow2 t.img'),
    ('B-qcow2-S0', '-O qcow2 -S 0 -B s.qcow2 -F qcow2 top.qcow2 t.img'),
    # iotest 122: -c -S 0 writes the zero clusters compressed too (qimg failed EINVAL)
    ('c-S0', '-O qcow2 -c -S 0 s.qcow2 t.img'),
    ('c-S0-zstd', '-O qcow2 -c -S 0 -o compression_type=zstd top.qcow2 t.img'),
    ('B-qed', '-O qed -B s.raw -F raw top.qed t.img'),
    ('B-shorter-backing', '-O qcow2 -B odd.raw -F raw overodd.qcow2 t.img'),
    ('B-shorter-backing-c', '-O qcow2 -c -B odd.raw -F raw overodd.qcow2 t.img'),
    ('B-o-backing', '-O qcow2 -o backing_file=s.qcow2,backing_fmt=qcow2 top.qcow2 t.img'),
    ('B-no-fmt', '-O qcow2 -B s.qcow2 top.qcow2 t.img'),
    ('B-raw-target', '-O raw -B s.qcow2 -F qcow2 top.qcow2 t.img'),
    ('B-F-raw-target', '-O raw -F qcow2 top.qcow2 t.img'),
    ('B-missing', '-O qcow2 -B nonexist -F qcow2 top.qcow2 t.img'),
    ('B-multi', '-O qcow2 -B s.qcow2 -F qcow2 top.qcow2 s.raw t.img'),
    # several sources concatenated
    ('concat', '-O qcow2 s.qcow2 s.raw top.qcow2 t.img'),
    ('concat-c', '-O qcow2 -c s.qcow2 s.raw top.qcow2 t.img'),
    ('concat-odd', '-O qcow2 odd.raw odd.raw xl2.qcow2 t.img'),
    ('concat-odd-c', '-O qcow2 -c odd.raw xl2.qcow2 odd.raw t.img'),
    ('concat-p', '-p -O raw s.qcow2 empty.raw top.qed t.img'),
    ('concat-f', '-f raw -O qcow2 s.raw odd.raw t.img'),
    # progress and quiet
    ('p-raw', '-p s.raw t.img'),
    ('p-c', '-p -c -O qcow2 top.qcow2 t.img'),
    ('p-S0', '-p -S 0 -O qcow2 top.qcow2 t.img'),
    ('p-empty', '-p empty.raw t.img'),
    ('q-p', '-q -p -O qcow2 s.qcow2 t.img'),
    # options accepted with the same output
    ('m1', '-m 1 -O qcow2 top.qcow2 t.img'),
    ('m16', '-m 16 -O qcow2 -c top.qcow2 t.img'),
    ('m-hex', '-m 0x4 -O qcow2 top.qcow2 t.img'),
    ('t-T', '-t none -T writeback -O qcow2 top.qcow2 t.img'),
    ('U', '-U -O qcow2 top.qcow2 t.img'),
    ('C', '-C -O raw s.raw t.img'),
    ('salvage', '--salvage -O qcow2 top.qcow2 t.img'),
    ('r', '-r 1G -O qcow2 s.qcow2 t.img'),
    ('o-prealloc-metadata', '-O qcow2 -o preallocation=metadata top.qcow2 t.img'),
    ('o-prealloc-falloc', '-O qcow2 -o preallocation=falloc s.qcow2 t.img'),
    ('o-raw-falloc', '-O raw -o preallocation=falloc s.qcow2 t.img'),
    ('o-raw-full', '-O raw -o preallocation=full s.qcow2 t.img'),
    ('o-vdi-static', '-O vdi -o static=on s.qcow2 t.img'),
    ('o-qed-cs', '-O qed -o cluster_size=4k,table_size=1 s.qcow2 t.img'),
    ('o-lazy', '-O qcow2 -o lazy_refcounts=on,refcount_bits=1 top.qcow2 t.img'),
    ('o-repeated', '-O qcow2 -o cluster_size=4k -o refcount_bits=64 top.qcow2 t.img'),
    ('o-size-ignored', '-O qcow2 -o size=1M s.qcow2 t.img'),
    ('o-data-file', '-O qcow2 -o data_file=tdf.raw top.qcow2 t.img'),
    ('o-data-file-raw', '-O qcow2 -o data_file=tdf.raw,data_file_raw=on top.qcow2 t.img'),
    ('S-4k-unaligned-src', '-O qcow2 -S 4k c4k.qcow2 t.img'),
    ('S-16M', '-O raw -S 16M s.qcow2 t.img'),
    ('over-existing', '-O qcow2 s.qcow2 junk'),
    # the target names a source: refused by the locks, the source intact
    ('target-is-source', '-f raw junk junk'),
    ('target-is-source-qcow2', '-f raw -O qcow2 junk junk'),
    ('target-is-second-source', '-O qcow2 s.qcow2 junk junk'),
    ('target-is-source-n', '-n -f raw junk junk'),
    ('target-is-source-U', '-U -f raw junk junk'),
    # snapshots
    ('l-name', '-l one -O qcow2 snap.qcow2 t.img'),
    ('l-id', '-l 2 -O raw snap.qcow2 t.img'),
    ('l-opts-name', '-l snapshot.name=two -O qcow2 snap.qcow2 t.img'),
    ('l-opts-id', '-l snapshot.id=1 -O qcow2 snap.qcow2 t.img'),
    ('l-opts-both', '-l snapshot.id=2,snapshot.name=two -O qcow2 snap.qcow2 t.img'),
    ('l-opts-mismatch', '-l snapshot.id=1,snapshot.name=two -O qcow2 snap.qcow2 t.img'),
    ('l-missing', '-l three snap.qcow2 t.img'),
    ('l-opts-missing', '-l snapshot.name=three snap.qcow2 t.img'),
    ('l-opts-bad', '-l snapshot.foo=1 snap.qcow2 t.img'),
    ('l-opts-empty', '-l snapshot.id= snap.qcow2 t.img'),
    ('l-raw', '-l one s.raw t.img'),
    ('l-multi', '-l one snap.qcow2 snap.qcow2 t.img'),
    ('l-opts-multi', '-l snapshot.name=one snap.qcow2 s.raw t.img'),
    # bitmaps
    ('bitmaps', '--bitmaps -O qcow2 bm.qcow2 t.img'),
    ('bitmaps-skip', '--bitmaps --skip-broken-bitmaps -O qcow2 bm.qcow2 t.img'),
    ('bitmaps-none', '--bitmaps -O qcow2 s.qcow2 t.img'),
    ('bitmaps-raw-src', '--bitmaps -O qcow2 s.raw t.img'),
    ('bitmaps-raw-target', '--bitmaps bm.qcow2 t.img'),
    ('bitmaps-multi', '--bitmaps -O qcow2 bm.qcow2 s.qcow2 t.img'),
    ('bitmaps-broken', '--bitmaps -O qcow2 bmbad.qcow2 t.img'),
    ('bitmaps-broken-skip', '--bitmaps --skip-broken-bitmaps -O qcow2 bmbad.qcow2 t.img'),
    ('bitmaps-v2-target', '--bitmaps -O qcow2 -o compat=0.10 bm.qcow2 t.img'),
    ('bitmaps-v2-source', '--bitmaps -O qcow2 v2.qcow2 t.img'),
    ('skip-broken-alone', '--skip-broken-bitmaps -O qcow2 bm.qcow2 t.img'),
    # bad combinations and bad values
    ('c-raw', '-c s.qcow2 t.img'),
    ('c-qed', '-c -O qed s.qcow2 t.img'),
    ('c-prealloc', '-c -O qcow2 -o preallocation=metadata s.qcow2 t.img'),
    ('c-prealloc-off', '-c -O qcow2 -o preallocation=off s.qcow2 t.img'),
    ('c-encrypt', '-c -O qcow2 -o encrypt.format=luks s.qcow2 t.img'),
    ('c-C', '-c -C s.qcow2 t.img'),
    ('S-C', '-S 4k -C s.qcow2 t.img'),
    ('salvage-C', '--salvage -C s.qcow2 t.img'),
    ('n-o', '-n -o cluster_size=4k s.qcow2 t.img'),
    ('target-is-zero-no-n', '--target-is-zero s.qcow2 t.img'),
    ('target-image-opts-no-n', '--target-image-opts s.qcow2 t.img'),
    ('S-unaligned', '-S 1000 s.qcow2 t.img'),
    ('S-too-large', '-S 17M s.qcow2 t.img'),
    ('S-bad', '-S x s.qcow2 t.img'),
    ('S-negative', '-S -1 s.qcow2 t.img'),
    ('m0', '-m 0 s.qcow2 t.img'),
    ('m17', '-m 17 s.qcow2 t.img'),
    ('m-bad', '-m x s.qcow2 t.img'),
    ('r-bad', '-r x s.qcow2 t.img'),
    ('T-bad', '-T foo s.qcow2 t.img'),
    ('t-bad', '-t foo s.qcow2 t.img'),
    ('O-unknown', '-O foo s.qcow2 t.img'),
    ('o-unknown', '-O qcow2 -o foo=1 s.qcow2 t.img'),
    ('o-bad-cs', '-O qcow2 -o cluster_size=3k s.qcow2 t.img'),
    ('o-bad-list', '-O qcow2 -o cluster_size=4k, s.qcow2 t.img'),
    ('o-raw-backing', '-O raw -o backing_file=s.qcow2 s.qcow2 t.img'),
    ('o-too-large', '-O qcow2 -o cluster_size=512 s.qcow2 t.img'),
    ('o-help', '-O qcow2 -o help s.qcow2 t.img'),
    ('o-help-nofile', '-O qcow2 -o help'),
    ('o-help-raw', '-o help'),
    ('o-help-qmark', '-O vdi -o ? s.qcow2 t.img'),
    ('o-help-unknown', '-O foo -o help'),
    # iotest 082: a known driver without creation (qemu's create_opts NULL)
    ('o-help-no-create', '-O bochs -o help'),
    ('O-no-create', '-O bochs s.qcow2 t.img'),
    ('no-files', ''),
    ('one-file', 's.qcow2'),
    ('nonexist', 'nonexist t.img'),
    ('wrong-f', '-f qcow2 s.raw t.img'),
    ('unknown-opt', '-x s.qcow2 t.img'),
    ('s-opt', '-s one snap.qcow2 t.img'),
    ('missing-arg', '-O'),
    ('no-dir', 's.qcow2 nodir/t.img'),
]


def _setup(d, sources):
    os.makedirs(d)
    for n in os.listdir(sources):
        if n == 'junk':  # a target in one case: a copy of its own
            shutil.copy(os.path.join(sources, n), os.path.join(d, n))
        else:  # sources are only read: shared
            os.link(os.path.join(sources, n), os.path.join(d, n))


def _run(tool, d, args, env=None):
    p = subprocess.run([tool, 'convert'] + args, cwd=d, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300, env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def _files(d):
    out = {}
    for root, _, names in os.walk(d):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, d)] = p
    return out


def _mask_vdi(b):
    if len(b) >= 512 and b[0x40:0x44] == b'\x7f\x10\xda\xbe':
        b[0x188:0x1a8] = bytes(32)
    return b


def _assert_same_files(rd, qd):
    rf, qf = _files(rd), _files(qd)
    assert sorted(qf) == sorted(rf)
    for name in rf:
        if os.path.samefile(rf[name], qf[name]):
            continue  # a source, shared by both directories
        assert os.path.getsize(qf[name]) == os.path.getsize(rf[name]), name
        if subprocess.run(['cmp', '-s', rf[name], qf[name]]).returncode == 0:
            continue
        with open(rf[name], 'rb') as a, open(qf[name], 'rb') as b:
            ra, qb = _mask_vdi(bytearray(a.read())), _mask_vdi(bytearray(b.read()))
        assert ra == qb, name


@pytest.mark.parametrize('args', [pytest.param(a, id=i) for i, a in CASES])
def test_convert_matches_qemu(tmp_path, qimg_binary, sources, args):
    argv = shlex.split(args)
    rd, qd = str(tmp_path / 'qemu'), str(tmp_path / 'qimg')
    _setup(rd, sources)
    _setup(qd, sources)
    r = _run(qemu.QEMU_IMG, rd, argv)
    q = _run(qemu.qimg_as_qemu_img(), qd, argv)
    assert q == r
    _assert_same_files(rd, qd)


# -n: the target exists (made by qemu-img, then filled), is not created
N_CASES = [
    ('raw-zero', 'create -q -f raw T 24M', '', '-n s.qcow2 T'),
    ('raw-random', 'create -q -f raw T 24M', 'write -P 0x5a 0 24M', '-n s.qcow2 T'),
    ('raw-random-S0', 'create -q -f raw T 24M', 'write -P 0x5a 0 24M', '-n -S 0 s.qcow2 T'),
    ('raw-random-tiz', 'create -q -f raw T 24M', 'write -P 0x5a 0 24M',
     '-n --target-is-zero s.qcow2 T'),
    ('raw-larger', 'create -q -f raw T 30M', 'write -P 0x5a 0 30M', '-n top.qcow2 T'),
    ('raw-smaller', 'create -q -f raw T 20M', '', '-n s.qcow2 T'),
    ('qcow2-full', 'create -q -f qcow2 T 24M', 'write -P 9 0 24M', '-n -O qcow2 top.qcow2 T'),
    ('qcow2-c', 'create -q -f qcow2 T 24M', '', '-n -O qcow2 -c top.qcow2 T'),
    ('qcow2-as-raw-c', 'create -q -f qcow2 T 24M', '', '-n -c top.qcow2 T'),
    ('qcow2-tiz', 'create -q -f qcow2 T 30M', 'write -P 9 0 24M',
     '-n -O qcow2 --target-is-zero top.qcow2 T'),
    ('qcow2-B-tiz', 'create -q -f qcow2 T 24M', '',
     '-n -O qcow2 --target-is-zero -B s.qcow2 top.qcow2 T'),
    ('qcow2-backing', 'create -q -f qcow2 -b s.qcow2 -F qcow2 T', '',
     '-n -O qcow2 -B s.qcow2 top.qcow2 T'),
    ('qed', 'create -q -f qed T 24M', 'write -P 9 0 24M', '-n -O qed top.qcow2 T'),
    ('vdi', 'create -q -f vdi T 24M', 'write -P 9 0 24M', '-n -O vdi top.qcow2 T'),
    ('bitmaps-raw', 'create -q -f raw T 24M', '', '-n --bitmaps bm.qcow2 T'),
]


@pytest.mark.parametrize('make,fill,args', [pytest.param(m, f, a, id=i)
                                            for i, m, f, a in N_CASES])
def test_convert_n_matches_qemu(tmp_path, qimg_binary, sources, make, fill, args):
    res = {}
    for tool in ('qemu', 'qimg'):
        d = str(tmp_path / tool)
        _setup(d, sources)
        subprocess.run([qemu.QEMU_IMG] + shlex.split(make), cwd=d, check=True)
        if fill:
            fmt = shlex.split(make)[shlex.split(make).index('-f') + 1]
            _io(os.path.join(d, 'T'), fill, fmt=fmt)
        res[tool] = _run(qemu.tool_path(tool), d, shlex.split(args))
    assert res['qimg'] == res['qemu']
    _assert_same_files(str(tmp_path / 'qemu'), str(tmp_path / 'qimg'))


@pytest.mark.parametrize('opts', ['-O raw', '-O qcow2', '-O raw -S 64k', '-O qcow2 -S 0',
                                  '-O qcow2 -o cluster_size=2M', '-O qed', '-O vdi',
                                  '-O qcow2 -o data_file=tdf.raw',
                                  '-O qcow2 -o preallocation=metadata',
                                  '-O raw -o preallocation=falloc', '-t none -O raw'])
def test_convert_new_target_allocation_matches_qemu(tmp_path, qimg_binary, sources, opts):
    """A target qimg creates gets the file-system allocation qemu-img's gets (FIEMAP after
    sync: the same data ranges, the same holes, nothing left unwritten), on top of the
    same bytes: on ext4 qimg allocates each large write's range before writing it
    (file.c), which must neither add nor drop a block."""
    rd, qd = str(tmp_path / 'qemu'), str(tmp_path / 'qimg')
    _setup(rd, sources)
    _setup(qd, sources)
    argv = shlex.split(opts) + ['big.qcow2', 't.img']
    assert _run(qemu.QEMU_IMG, rd, argv) == _run(qemu.qimg_as_qemu_img(), qd, argv)
    _assert_same_files(rd, qd)
    for name in _files(qd):
        if not os.path.samefile(os.path.join(rd, name), os.path.join(qd, name)):
            assert qemu.allocated_extents(os.path.join(qd, name)) == \
                qemu.allocated_extents(os.path.join(rd, name)), name


@pytest.mark.parametrize('args', ['-W -O qcow2 top.qcow2 t.img',
                                  '-W -m 16 -O qcow2 -c s.qcow2 t.img',
                                  '-W -O raw s.qcow2 t.img'])
def test_convert_oob_writes(tmp_path, qimg_binary, sources, args):
    """-W: qemu's cluster placement depends on timing; qimg's target checks clean and
    holds the same guest data as qemu's."""
    rd, qd = str(tmp_path / 'qemu'), str(tmp_path / 'qimg')
    _setup(rd, sources)
    _setup(qd, sources)
    r = _run(qemu.QEMU_IMG, rd, shlex.split(args))
    q = _run(qemu.qimg_as_qemu_img(), qd, shlex.split(args))
    assert q == r
    t = os.path.join(qd, 't.img')
    if '-O qcow2' in args:
        c = subprocess.run([qemu.QEMU_IMG, 'check', t], stdout=subprocess.PIPE)
        assert c.returncode == 0, c.stdout
    c = subprocess.run([qemu.QEMU_IMG, 'compare', os.path.join(rd, 't.img'), t],
                       stdout=subprocess.PIPE)
    assert c.returncode == 0, c.stdout


def test_convert_read_error_salvage(tmp_path, qimg_binary):
    """A compressed cluster that does not decompress: without --salvage the read error
    ends the copy (qemu's message, exit 1); with it the sector reads as zeros with qemu's
    warnings, the rest is copied, exit 0. Output and target as qemu-img's."""
    res = {}
    for tool in ('qemu', 'qimg'):
        d = tmp_path / tool
        d.mkdir()
        src = str(d / 'c.qcow2')
        _img('create', '-q', '-f', 'qcow2', str(d / 'p.qcow2'), '1M')
        _io(str(d / 'p.qcow2'), 'write -P 1 0 64k', 'write -P 2 64k 64k')
        _img('convert', '-c', '-O', 'qcow2', str(d / 'p.qcow2'), src)
        # break the first compressed cluster's stream (it starts at 0x50000)
        with open(src, 'r+b') as f:
            f.seek(0x50000)
            f.write(b'\xff' * 64)
        out = []
        for extra in ([], ['--salvage'], ['--salvage', '-q']):
            r = _run(qemu.tool_path(tool), str(d), extra + ['-O', 'qcow2', 'c.qcow2',
                                                            't%d.img' % len(out)])
            out.append(r)
        res[tool] = out
    assert res['qimg'] == res['qemu']
    _assert_same_files(str(tmp_path / 'qemu'), str(tmp_path / 'qimg'))
