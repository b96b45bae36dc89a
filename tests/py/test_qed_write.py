"""QED writes through qimg's block layer (build/qimg-io) vs the real qemu-io 7.2.

Each case builds the same QED image with real qemu-img/qemu-io in two directories (same file
names, so backing names agree), runs one qemu-io script with qemu-io in one and qimg-io in
the other, and requires: the same exit code, stdout (timing filtered) and stderr, identical
image file bytes (QED's allocation is deterministic: clusters and L2 tables are appended
at the end of the file in request order), the same `qemu-img map --output=json`, and a
clean real `qemu-img check` after qimg-io.

Not byte-identical on purpose (README, "Differences from qemu-img"): a partial write into
a zero cluster (offset 1) of an image with a backing file. qemu 7.2 fills the rest of the
new cluster from the backing file, bringing backing data back into a range the guest had
zeroed; qimg fills it with zeros (test_zero_cluster_cow_keeps_zeros).

The fault-injection case cuts qimg-io (QIMG_FAULT_AFTER_WRITES=N) after each of its file
writes in a workload and checks that the real qemu-img check finds no corruption (leaks
allowed) and that every write reported before the cut reads back.
"""

import os
import random
import subprocess

import pytest

import qemu
from test_qimg_io import QIMG_IO, filter_io, qimg_io_alias  # noqa: F401

IMG = 'img.qed'
BASE = 'base.raw'
KIB = 1024
MIB = 1024 * 1024


def cmds(*lines):
    out = []
    for line in lines:
        out += ['-c', line]
    return out


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def guest(d, name=IMG):
    """The guest bytes (qemu-img convert); None for images over 256 MiB, which only grow by
    truncate here (their map and file bytes are compared)."""
    if int.from_bytes(read(os.path.join(d, name))[48:56], 'little') > 256 * MIB:
        return None
    raw = os.path.join(d, 'guest.raw')
    rc, out, err = qemu.qemu_img('convert', '-f', 'qed', '-O', 'raw', name, raw, cwd=d)
    assert rc == 0, err
    data = read(raw)
    os.unlink(raw)
    return data


def plain(size='4M', **opts):
    def setup(d):
        qemu.make_image(os.path.join(d, IMG), size, fmt='qed', **opts)
    return setup


def prefilled(size='4M', fill=(), backing=None, **opts):
    """backing: (size, fill commands) of a raw backing file BASE."""
    def setup(d):
        kw = {}
        if backing:
            bsize, bfill = backing
            qemu.make_image(os.path.join(d, BASE), bsize, fmt='raw')
            if bfill:
                qemu.io(os.path.join(d, BASE), *bfill, fmt='raw')
            kw = dict(backing=BASE, backing_fmt='raw')
        qemu.make_image(os.path.join(d, IMG), size, fmt='qed', **kw, **opts)
        if fill:
            qemu.io(os.path.join(d, IMG), *fill, fmt='qed')
    return setup


def run_tool(tool, d, script, env=None):
    exe = qemu.QEMU_IO if tool == 'qemu' else qimg_io_alias()
    return qemu.run(exe, '-f', 'qed', *cmds(*script), IMG, cwd=d, env=env)


def differential(tmp_path, setup, script, same_bytes=True, clean=True):
    res = {}
    for tool in ('qemu', 'qimg'):
        d = str(tmp_path / tool)
        os.mkdir(d)
        setup(d)
        rc, out, err = run_tool(tool, d, script)
        rmap, mout, merr = qemu.qemu_img('map', '--output=json', IMG, cwd=d)
        assert rmap == 0 or not clean, merr
        res[tool] = dict(rc=rc, out=filter_io(out), err=err, map=(rmap, mout, merr),
                         file=read(os.path.join(d, IMG)), guest=guest(d) if clean else None,
                         dir=d)
        if tool == 'qimg' and clean:
            ok, detail = qemu.is_clean_by_qemu(IMG, cwd=d)
            assert ok, 'qemu-img check after qimg-io: %s' % detail
            # and qimg's own checker agrees with qemu-img's on it
            (rq, jq, _, _), (ri, ji, _, _) = qemu.check_both_json(d, d, IMG)
            assert (ri, qemu.qemu_part(ji)) == (rq, qemu.qemu_part(jq))
    q, i = res['qemu'], res['qimg']
    assert i['out'] == q['out'], 'stdout\nqemu-io:\n%s\nqimg-io:\n%s' % (q['out'], i['out'])
    assert i['err'] == q['err']
    assert i['rc'] == q['rc']
    assert i['map'] == q['map'], 'map differs\nqemu:\n%s\nqimg:\n%s' % (q['map'], i['map'])
    if same_bytes:
        assert i['guest'] == q['guest'], 'guest bytes differ'
        assert len(i['file']) == len(q['file'])
        assert i['file'] == q['file'], 'image files differ (cmp)'
    return q, i


# cluster size, table size, virtual size: the L2 span is cluster * cluster * table / 8
GEOMETRIES = {
    'cs4k-t2': (dict(cluster_size=4096, table_size=2), '12M'),     # L2 spans 4 MiB
    'cs4k-t4': (dict(cluster_size=4096, table_size=4), '16M'),
    'cs64k': ({}, '64M'),                                        # qemu's defaults
    'cs16k-t2': (dict(cluster_size=16384, table_size=2), '20M'),
}

SEQUENTIAL = [
    'write -P 0x11 0 64k',
    'write -P 0x12 64k 64k',
    'write -P 0x13 128k 200k',
    'read -P 0x12 64k 64k',
]

OVERLAPPING = [
    'write -P 0x21 4k 12k',
    'write -P 0x22 8k 12k',          # overwrites in place and allocates past it
    'write -P 0x23 100 300',         # inside one sector: read-modify-write
    'write -P 0x24 3000 5000',       # unaligned across a cluster boundary (4k clusters)
    'write -P 0x25 4M 4k',           # another L2 table for 4k clusters, table_size 2
    'write -P 0x26 4095k 3k',        # across the L2 boundary at 4 MiB
    'read -P 0x22 8k 12k',
    'read -P 0x23 100 300',
    'discard 0 64k',                 # QED has no discard: a no-op that succeeds
    'read -P 0x23 100 300',
]

ZEROES = [
    'write -P 0x31 0 256k',
    'write -z 0 64k',                # allocated: zeros written in place
    'write -z 1M 128k',              # unallocated: zero clusters (a new L2 for small tables)
    'write -z 300k 10k',             # unaligned: zero buffers around whole clusters
    'write -z 1000 2000',            # sector read-modify-write
    'write -z -u 3M 64k',
    'write -P 0x32 1M 4k',           # data into a zero cluster
    'read -P 0 300k 10k',
    'write -z 1M 128k',              # mixed zero / allocated run
]


@pytest.mark.parametrize('geo', sorted(GEOMETRIES))
@pytest.mark.parametrize('name,script', [('sequential', SEQUENTIAL),
                                         ('overlapping', OVERLAPPING),
                                         ('zeroes', ZEROES)])
def test_write_scripts(tmp_path, geo, name, script):
    opts, size = GEOMETRIES[geo]
    differential(tmp_path, plain(size, **opts), script)


def random_script(seed, size, cluster, zero=True):
    rng = random.Random(seed)
    out = []
    for _ in range(25):
        align = rng.choice([1, 512, cluster, cluster])
        off = rng.randrange(0, size // align) * align
        n = rng.choice([1, 512, 3000, cluster, 2 * cluster + 512, 5 * cluster]) \
            if align != 1 else rng.randrange(1, 3 * cluster)
        n = max(1, min(n, size - off))
        kind = rng.random()
        if kind < 0.65:
            out.append('write -P 0x%02x %d %d' % (rng.randrange(1, 256), off, n))
        elif kind < 0.9 and zero:
            out.append('write -z %d %d' % (off, n))
        else:
            out.append('read %d %d' % (off, n))
    return out


@pytest.mark.parametrize("seed", range(int(os.environ.get("QED_WRITE_SEEDS", "6"))))
def test_random_writes(tmp_path, seed):
    geo = sorted(GEOMETRIES)[seed % len(GEOMETRIES)]
    opts, size = GEOMETRIES[geo]
    cluster = opts.get('cluster_size', 65536)
    vsize = min(qemu_size(size), 6 * MIB)
    differential(tmp_path, plain(size, **opts), random_script(seed, vsize, cluster))


@pytest.mark.parametrize("seed", range(int(os.environ.get("QED_WRITE_SEEDS", "6"))))
def test_random_writes_backing(tmp_path, seed):
    """Over a raw backing file shorter than the image. No zero writes: a later partial
    write into a zero cluster would meet the deliberate difference (see the top)."""
    geo = sorted(GEOMETRIES)[seed % len(GEOMETRIES)]
    opts, size = GEOMETRIES[geo]
    cluster = opts.get('cluster_size', 65536)
    differential(tmp_path, prefilled('6M', backing=('4M', BACKING_FILL), **opts),
                 random_script(1000 + seed, 6 * MIB, cluster, zero=False))


def qemu_size(text):
    return int(text[:-1]) * MIB


BACKING_FILL = ('write -P 0xb1 0 1M', 'write -P 0xb2 1M 2M', 'write -P 0xb3 3M 1M')


@pytest.mark.parametrize('geo', ['cs4k-t2', 'cs64k'])
def test_backing_cow(tmp_path, geo):
    """Partial writes over a raw backing file copy its bytes around them (COW), with the
    backing file shorter than the image (zeros past its end)."""
    opts, _ = GEOMETRIES[geo]
    script = [
        'write -P 0x41 5000 3000',
        'write -P 0x42 1M 100',
        'write -P 0x43 65000 70000',
        'write -P 0x44 3M 8k',
        'write -P 0x45 5M 512',          # past the end of the 4 MiB backing file
        'write -z 2M 512k',              # zero clusters hide the backing data
        'write -P 0x46 2M 64k',          # whole-cluster data into a zero cluster
        'write -P 0x47 0 4k',
        'read -P 0xb1 8000 1000',
        'read -P 0 2M 512k',
    ]
    differential(tmp_path, prefilled('8M', backing=('4M', BACKING_FILL), **opts), script)


def test_backing_longer_than_image(tmp_path):
    """The COW tail of the last cluster reads the backing file past the image's end."""
    script = ['write -P 0x51 %d 512' % (3 * MIB - 512), 'write -P 0x52 0 512']
    differential(tmp_path, prefilled('3145728', backing=('4M', BACKING_FILL),
                                     cluster_size=4096 * 256), script)


def test_prefilled_image(tmp_path):
    """Writes into an image qemu-io already wrote (in place, new L2 tables, zero clusters)."""
    fill = ('write -P 0x61 0 1M', 'write -z 2M 1M', 'write -P 0x62 9M 64k')
    script = ['write -P 0x63 512k 1M', 'write -z 0 128k', 'write -P 0x64 2M 4k',
              'write -P 0x65 40M 4k', 'read -P 0x62 9M 64k']
    differential(tmp_path, prefilled('64M', fill), script)


@pytest.mark.parametrize('script', [
    ['truncate 8M', 'write -P 0x71 7M 1M', 'read -P 0x71 7M 1M'],
    ['truncate 1000000'],                          # not a multiple of 512
    ['truncate 2M'],                               # shrink
    ['truncate 4M'],                               # same size
    ['truncate 9999999999999'],                    # beyond what the L1 table maps
    ['truncate 4G', 'write -P 0x72 4095M 64k'],    # the largest size for cs64k t4: 4 TiB
    ['truncate 4T'],
    ['truncate 4398046511616'],                    # 4 TiB + 512
    ['write -P 0x74 4M 512', 'write -z 4M 512'],   # past the end: EIO before the driver
])
def test_truncate(tmp_path, script):
    differential(tmp_path, plain('4M'), script)


def test_truncate_over_longer_backing(tmp_path):
    """qemu's block layer wants zeroed growth over a longer backing file: QED refuses."""
    differential(tmp_path, prefilled('2M', backing=('4M', BACKING_FILL)),
                 ['truncate 3M', 'truncate 6M'])


def test_truncate_past_shorter_backing(tmp_path):
    differential(tmp_path, prefilled('4M', backing=('4M', BACKING_FILL)),
                 ['truncate 8M', 'write -P 0x73 5M 4k', 'read -P 0 6M 1M'])


def test_need_check_flag(tmp_path):
    """An allocating write sets QED_F_NEED_CHECK before anything else (no backing file),
    and the close clears it: after qemu-io the flag is clear in both files (the byte
    comparison covers it); here the flag is seen set mid-run by cutting qimg-io after the
    header write."""
    d = str(tmp_path)
    plain('4M')(d)
    env = dict(os.environ, QIMG_FAULT_AFTER_WRITES='1')
    rc, out, err = run_tool('qimg', d, ['write -P 0x11 0 4k'], env=env)
    assert rc == 86, (rc, out, err)
    features = int.from_bytes(read(os.path.join(d, IMG))[16:24], 'little')
    assert features & 2
    rc, out, err = run_tool('qimg', d, ['write -P 0x11 0 4k'])   # NEED_CHECK: opens
    assert rc == 0, err
    assert int.from_bytes(read(os.path.join(d, IMG))[16:24], 'little') & 2 == 0


def test_zero_cluster_cow_keeps_zeros(tmp_path):
    """Deliberate difference: a partial write into a zero cluster over a backing file."""
    script = ['write -z 0 64k', 'write -P 0xbb 4k 4k']
    q, i = differential(tmp_path, prefilled('4M', backing=('4M', BACKING_FILL)), script,
                        same_bytes=False)
    want = bytearray(b'\xb1' * 4 * MIB)
    want[0:64 * KIB] = bytes(64 * KIB)
    want[4 * KIB:8 * KIB] = b'\xbb' * 4 * KIB
    assert i['guest'][:1 * MIB] == bytes(want[:1 * MIB])
    assert q['guest'][:4 * KIB] == b'\xb1' * 4 * KIB       # qemu 7.2 brings backing data back
    assert len(i['file']) == len(q['file'])


def poke_l2_entry(value, need_check=False):
    """setup: a 4k-cluster image with one written cluster whose L2 entry is then value
    (and NEED_CHECK set, need_check)."""
    def setup(d):
        path = os.path.join(d, IMG)
        prefilled('12M', ('write -P 0x81 0 8k',), cluster_size=4096, table_size=2)(d)
        data = read(path)
        l1 = int.from_bytes(data[40:48], 'little')
        l2 = int.from_bytes(data[l1:l1 + 8], 'little')
        with open(path, 'r+b') as f:
            f.seek(l2 + 8)
            f.write(value.to_bytes(8, 'little'))
            if need_check:
                f.seek(16)
                f.write((int.from_bytes(data[16:24], 'little') | 2).to_bytes(8, 'little'))
    return setup


@pytest.mark.parametrize('value', [1 << 40, 4096 * 100000 + 17, 4097])
def test_hostile_l2_entry(tmp_path, value):
    """An L2 entry past the end of the file or unaligned: the write fails as in qemu
    (-EINVAL from qed_find_cluster), the other cluster is written, nothing else changes."""
    differential(tmp_path, poke_l2_entry(value),
                 ['write -P 0x82 4k 4k', 'write -P 0x83 0 4k', 'write -P 0x84 8k 4k'],
                 clean=False)


@pytest.mark.parametrize('value', [1 << 40, 4097])
def test_need_check_repaired_at_open(tmp_path, value):
    """NEED_CHECK set: a read-write open checks and fixes first (bdrv_qed_do_open), so the
    invalid entry is zeroed and the writes succeed; the leak stays (qemu never fixes it)."""
    q, i = differential(tmp_path, poke_l2_entry(value, need_check=True),
                        ['write -P 0x82 4k 4k', 'read -P 0x81 0 4k', 'write -P 0x84 8k 4k'],
                        clean=False)
    assert q['rc'] == 0 and 'failed' not in q['out']
    rc, js, out, err = qemu.check_json('qemu', IMG, cwd=i['dir'])
    assert rc == 3 and js['leaks'] == 1 and not js.get('corruptions'), out


def test_need_check_check_does_not_repair_at_open(tmp_path):
    """`qimg check -r` opens read-write but reports what it finds itself (BDRV_O_CHECK)."""
    d = str(tmp_path)
    poke_l2_entry(1 << 40, need_check=True)(d)
    rq = qemu.check('qemu', IMG, '-r', 'all', cwd=d)
    poke_l2_entry(1 << 40, need_check=True)(d)
    ri = qemu.check('qimg', IMG, '-r', 'all', cwd=d)
    assert ri == rq
    assert '1 corruptions' in rq[1], rq


# -- fault injection --------------------------------------------------------------------

FAULT_WORKLOAD = [
    'write -P 0x11 0 %d' % (3 * 4096 + 512),      # allocates, first L2 table
    'write -P 0x12 5M 4k',                         # another L2 table (4k clusters, t2)
    'write -P 0x13 2k 1k',                         # in place
    'write -z 4k 4k',                              # zeros in place
    'write -z 64k 8k',                             # zero clusters
    'write -P 0x15 %d 3000' % (20 * 4096 + 100),   # COW head and tail
    'flush',
    'write -P 0x16 64k 4k',                        # a whole zero cluster (see the top)
    'write -z 5M 4k',
    'write -P 0x17 9M 10k',                        # a third L2 table
    'truncate 16M',
    'write -P 0x18 15M 4k',
]


def fault_setup(backing):
    opts = dict(cluster_size=4096, table_size=2)
    if backing:
        return prefilled('12M', backing=('4M', BACKING_FILL), **opts)
    return plain('12M', **opts)


def reference_states(tmp_path, setup, script):
    """Guest bytes after each prefix of the workload, by the real qemu-io."""
    refs = []
    for k in range(len(script) + 1):
        d = str(tmp_path / ('ref%d' % k))
        os.mkdir(d)
        setup(d)
        if k:
            rc, out, err = run_tool('qemu', d, script[:k])
            assert rc == 0, err
        refs.append(guest(d))
    return refs


def same_prefix(a, b):
    n = min(len(a), len(b))
    return a[:n] == b[:n] and not any(a[n:]) and not any(b[n:])


@pytest.mark.parametrize('backing', [False, True], ids=['plain', 'backing'])
def test_fault_injection(tmp_path, backing):
    setup = fault_setup(backing)
    refs = reference_states(tmp_path, setup, FAULT_WORKLOAD)
    n = 1
    while True:
        d = str(tmp_path / ('cut%d' % n))
        os.mkdir(d)
        setup(d)
        env = dict(os.environ, QIMG_FAULT_AFTER_WRITES=str(n))
        rc, out, err = run_tool('qimg', d, FAULT_WORKLOAD, env=env)
        rcc, js, cout, cerr = qemu.check_json('qemu', IMG, cwd=d)
        assert rcc in (0, 3) and js is not None, (n, rcc, cout, cerr)
        assert not js.get('corruptions') and not js.get('check-errors'), (n, cout)
        # commands completed: each write prints one line; flush and truncate print none and
        # count as done once a later write printed its line (or the run completed)
        done = pending = 0
        lines = [ln for ln in out.splitlines() if ln.startswith('wrote')]
        for c in FAULT_WORKLOAD:
            if c.split()[0] in ('flush', 'truncate'):
                pending += 1
                continue
            if not lines:
                break
            lines.pop(0)
            done += pending + 1
            pending = 0
        if rc == 0:
            done = len(FAULT_WORKLOAD)
        got = guest(d)
        # the cut leaves the state after `done` commands or the one in flight
        # (flushes and truncates not yet known done may have run before the cut)
        ok = [k for k in range(done, done + pending + 2)
              if k < len(refs) and same_prefix(got, refs[k])]
        assert ok, 'cut after write %d: guest bytes match no allowed state (done %d)' % (
            n, done)
        if rc == 0:
            assert n > 5
            break
        assert rc == 86, (n, rc, out, err)
        n += 1
