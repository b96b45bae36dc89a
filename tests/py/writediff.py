"""Differential write harness: the same random qemu-io script run by the real qemu-io and by
build/qimg-io on two copies of the same qemu-img-created image, then compared.

Used by test_write_differential.py and test_write_faults.py, and runnable by hand to
reproduce a failure in one command:

    python3 tests/py/writediff.py LAYOUT SEED             # run, and minimize if it fails
    python3 tests/py/writediff.py LAYOUT --script 'write 0 4k; discard 0 512'
    python3 tests/py/writediff.py --list                  # layouts

Environment: QIMG_IO (default build/qimg-io beside $QIMG), QEMU_IO, QEMU_IMG as in qemu.py.
Setting QIMG_IO to the real qemu-io checks the harness itself: every case must pass, which
is how the determinism claims in the comments below were measured.
"""

import atexit
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import qemu  # noqa: E402

QIMG_IO = os.path.abspath(os.environ.get('QIMG_IO') or
                          os.path.join(os.path.dirname(qemu.QIMG), 'qimg-io'))

# The tests' size knob: 1 (CI, well under 4 minutes on 2 cores) .. N (longer local runs:
# more seeds per layout, denser fault cuts). QIMG_WRITEDIFF_SCALE=4 python3 -m pytest ...
SCALE = max(1, int(os.environ.get('QIMG_WRITEDIFF_SCALE', '1') or 1))

KIB, MIB = 1 << 10, 1 << 20

# iotests' _filter_qemu_io (the timing line of every read/write/discard)
TIMING = re.compile(r'[0-9]* ops; [0-9/:. sec]* \([0-9/.inf]* [EPTGMKiBbytes]*/sec and '
                    r'[0-9/.inf]* ops/sec\)')


def filter_io(out):
    return TIMING.sub('X ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)', out)


# -- layouts ---------------------------------------------------------------------------------
# The matrix of tests/py/test_info.py's CASES (cluster sizes 512 B..2 MiB, compat 0.10/1.1,
# refcount_bits 1..64, extended_l2, zstd, lazy_refcounts, backing chains, data_file,
# data_file_raw, internal snapshots, compressed clusters, persistent bitmaps, metadata
# preallocation, an empty image, a dirty and a corrupt one, raw), each built by the real
# qemu-img/qemu-io with some data already in place, so scripts overwrite allocated clusters,
# clusters shared with snapshots, compressed clusters and backing data.

class Layout:
    def __init__(self, name, build, size, cluster=64 * KIB, fmt='qcow2', image='img.qcow2',
                 subclusters=False, compressed=True, backing=(), data=(), lazy=False):
        self.name = name
        self.build = build          # build(dir) creates `image` (and its other files) in dir
        self.size = size            # virtual size at creation
        self.cluster = cluster
        self.fmt = fmt
        self.image = image
        self.subclusters = subclusters
        self.compressed = compressed    # qemu can write compressed clusters (no data_file)
        self.backing = backing      # guest ranges the backing chain provides [(off, len)]
        self.data = data            # guest ranges the build wrote into the image [(off, len)]
        self.lazy = lazy            # lazy_refcounts=on: may be left dirty by a crash

    def __repr__(self):
        return self.name


def _io(d, name, *cmds, fmt='qcow2'):
    qemu.io(os.path.join(d, name), *cmds, fmt=fmt, cwd=d)


def _create(d, name, size, *opts, backing=None, backing_fmt='qcow2', fmt='qcow2'):
    args = ['create', '-q', '-f', fmt]
    if backing:
        args += ['-b', backing, '-F', backing_fmt]
    if opts:
        args += ['-o', ','.join(opts)]
    qemu.qemu_img(*args, name, str(size), cwd=d, check=True)


def _plain(size, *opts, writes=None):
    """qcow2 with options; by default data in the first, a middle and the last part."""
    def build(d):
        _create(d, 'img.qcow2', size, *opts)
        w = writes if writes is not None else (
            'write -P 0x5a 0 100k', 'write -P 0x5b %d 3k' % (size // 2 - 1024),
            'write -z %d 64k' % (size // 4), 'write -P 0x5c %d 2k' % (size - 2048))
        if w:
            _io(d, 'img.qcow2', *w)
    return build


def _data_ranges(size):
    return ((0, 100 * KIB), (size // 2 - 1024, 3 * KIB), (size - 2048, 2048))


def _snapshots(d):
    _create(d, 'img.qcow2', 4 * MIB, 'cluster_size=4k')
    _io(d, 'img.qcow2', 'write -P 1 0 256k', 'write -P 3 1M 64k')
    qemu.qemu_img('snapshot', '-c', 'first', 'img.qcow2', cwd=d, check=True)
    _io(d, 'img.qcow2', 'write -P 2 64k 64k')
    qemu.qemu_img('snapshot', '-c', 'second', 'img.qcow2', cwd=d, check=True)


def _chain(top_opts, base_opts=()):
    def build(d):
        os.makedirs(os.path.join(d, 'chain'), exist_ok=True)
        _create(d, 'chain/base.qcow2', 2 * MIB, *base_opts)
        _io(d, 'chain/base.qcow2', 'write -P 1 0 1M')
        _create(d, 'chain/mid.qcow2', 2 * MIB, *base_opts, backing='base.qcow2')
        _io(d, 'chain/mid.qcow2', 'write -P 2 64k 64k', 'write -z 512k 64k')
        _create(d, 'img.qcow2', 3 * MIB, *top_opts, backing='chain/mid.qcow2')
        _io(d, 'img.qcow2', 'write -P 3 40k 6k')
    return build


def _chain_raw(d):
    with open(os.path.join(d, 'base.raw'), 'wb') as f:
        f.write(b'\x07' * 100000)
    _create(d, 'img.qcow2', 1 * MIB, 'cluster_size=4k', backing='base.raw', backing_fmt='raw')


def _data_file(raw):
    def build(d):
        opts = ['data_file=img.data'] + (['data_file_raw=on'] if raw else [])
        _create(d, 'img.qcow2', 2 * MIB, *opts)
        _io(d, 'img.qcow2', 'write -P 3 64k 64k', 'write -P 4 1000k 5k')
    return build


def _everything(d):
    _create(d, 'img.qcow2', 4 * MIB, 'extended_l2=on', 'compression_type=zstd',
            'lazy_refcounts=on', 'refcount_bits=64', 'cluster_size=32k')
    _io(d, 'img.qcow2', 'write -P 3 0 100k', 'write -c 128k 32k')
    qemu.qemu_img('snapshot', '-c', 'snap1', 'img.qcow2', cwd=d, check=True)
    _io(d, 'img.qcow2', 'write -P 4 8k 3k')


def _compressed(d):
    _create(d, 'src.qcow2', 2 * MIB, 'cluster_size=4k')
    _io(d, 'src.qcow2', 'write -P 9 0 200k', 'write -P 8 1M 20k')
    qemu.qemu_img('convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=4k', 'src.qcow2',
                  'img.qcow2', cwd=d, check=True)
    os.unlink(os.path.join(d, 'src.qcow2'))


def _bitmaps(d):
    _create(d, 'img.qcow2', 2 * MIB, 'cluster_size=4k')
    _io(d, 'img.qcow2', 'write -P 1 0 64k')
    qemu.qemu_img('bitmap', '--add', 'img.qcow2', 'bm0', cwd=d, check=True)
    qemu.qemu_img('bitmap', '--add', '-g', '128k', 'img.qcow2', 'bm-disabled', cwd=d,
                  check=True)
    qemu.qemu_img('bitmap', '--disable', 'img.qcow2', 'bm-disabled', cwd=d, check=True)


def _dirty(d):
    """A lazy_refcounts image left dirty by a crashed qemu-io (its `abort` command): the
    refcounts of the last writes are missing, and a read-write open repairs them first."""
    _create(d, 'img.qcow2', 2 * MIB, 'lazy_refcounts=on', 'cluster_size=4k')
    _io(d, 'img.qcow2', 'write -P 1 0 64k')
    qemu.qemu_io('-f', 'qcow2', '-c', 'write -P 2 1M 20k', '-c', 'write -P 3 32k 8k',
                 '-c', 'abort', 'img.qcow2', cwd=d)
    with open(os.path.join(d, 'img.qcow2'), 'rb') as f:
        f.seek(72)
        assert int.from_bytes(f.read(8), 'big') & 1, 'qemu-io abort left no dirty bit'


def _corrupt(d):
    _plain(MIB, writes=('write -P 0x5a 0 64k',))(d)
    with open(os.path.join(d, 'img.qcow2'), 'r+b') as f:
        f.seek(72)
        f.write((2).to_bytes(8, 'big'))


def _raw(d):
    qemu.qemu_img('create', '-q', '-f', 'raw', 'img.raw', str(4 * MIB), cwd=d, check=True)
    _io(d, 'img.raw', 'write -P 1 4k 60k', 'write -P 2 1M 100k', fmt='raw')


def _layouts():
    L = []

    def add(name, build, size, **kw):
        L.append(Layout(name, build, size, **kw))

    add('raw', _raw, 4 * MIB, cluster=4096, fmt='raw', image='img.raw', compressed=False,
        data=((4 * KIB, 60 * KIB), (MIB, 100 * KIB)))
    for cs, size in ((512, MIB), (4 * KIB, 2 * MIB), (64 * KIB, 4 * MIB),
                     (2 * MIB, 12 * MIB)):
        name = 'cs%s' % (cs if cs < KIB else '%dk' % (cs // KIB) if cs < MIB else '2m')
        add(name, _plain(size, 'cluster_size=%d' % cs), size, cluster=cs,
            data=_data_ranges(size))
    add('compat010', _plain(2 * MIB, 'compat=0.10'), 2 * MIB, data=_data_ranges(2 * MIB))
    add('compat010-cs4k', _plain(2 * MIB, 'compat=0.10', 'cluster_size=4k'), 2 * MIB,
        cluster=4 * KIB, data=_data_ranges(2 * MIB))
    # refcount widths on 4 KiB clusters: a refblock then covers 32768 (1 bit) .. 512 (64 bit)
    # clusters, so the wide ones allocate new refblocks inside a script
    for bits in (1, 2, 4, 8, 32, 64):
        add('rc%d' % bits, _plain(2 * MIB, 'refcount_bits=%d' % bits, 'cluster_size=4k'),
            2 * MIB, cluster=4 * KIB, data=_data_ranges(2 * MIB))
    add('extl2', _plain(2 * MIB, 'extended_l2=on'), 2 * MIB, subclusters=True,
        data=_data_ranges(2 * MIB))
    add('extl2-cs16k', _plain(2 * MIB, 'extended_l2=on', 'cluster_size=16k'), 2 * MIB,
        cluster=16 * KIB, subclusters=True, data=_data_ranges(2 * MIB))
    add('zstd', _plain(2 * MIB, 'compression_type=zstd', 'cluster_size=4k'), 2 * MIB,
        cluster=4 * KIB, data=_data_ranges(2 * MIB))
    add('lazy', _plain(2 * MIB, 'lazy_refcounts=on', 'cluster_size=4k'), 2 * MIB,
        cluster=4 * KIB, data=_data_ranges(2 * MIB), lazy=True)
    add('snapshots', _snapshots, 4 * MIB, cluster=4 * KIB,
        data=((0, 256 * KIB), (MIB, 64 * KIB)))
    add('chain', _chain(['cluster_size=4k']), 3 * MIB, cluster=4 * KIB,
        backing=((0, MIB),), data=((40 * KIB, 6 * KIB),))
    add('chain-extl2', _chain(['extended_l2=on', 'cluster_size=16k']), 3 * MIB,
        cluster=16 * KIB, subclusters=True, backing=((0, MIB),), data=((40 * KIB, 6 * KIB),))
    add('chain-compat010', _chain(['compat=0.10', 'cluster_size=4k'], ['compat=0.10']),
        3 * MIB, cluster=4 * KIB, backing=((0, MIB),), data=((40 * KIB, 6 * KIB),))
    add('chain-raw', _chain_raw, MIB, cluster=4 * KIB, backing=((0, 100000),))
    add('datafile', _data_file(False), 2 * MIB, compressed=False,
        data=((64 * KIB, 64 * KIB), (1000 * KIB, 5 * KIB)))
    add('datafile-raw', _data_file(True), 2 * MIB, compressed=False,
        data=((64 * KIB, 64 * KIB), (1000 * KIB, 5 * KIB)))
    add('compressed', _compressed, 2 * MIB, cluster=4 * KIB,
        data=((0, 200 * KIB), (MIB, 20 * KIB)))
    add('bitmaps', _bitmaps, 2 * MIB, cluster=4 * KIB, data=((0, 64 * KIB),))
    add('prealloc', _plain(2 * MIB, 'preallocation=metadata', 'cluster_size=4k'), 2 * MIB,
        cluster=4 * KIB, data=_data_ranges(2 * MIB))
    add('empty', _plain(2 * MIB, writes=()), 2 * MIB)
    add('dirty', _dirty, 2 * MIB, cluster=4 * KIB, lazy=True,
        data=((0, 64 * KIB), (MIB, 20 * KIB)))
    add('corrupt', _corrupt, MIB, data=((0, 64 * KIB),))
    add('everything', _everything, 4 * MIB, cluster=32 * KIB, subclusters=True,
        data=((0, 160 * KIB),), lazy=True)
    return {l.name: l for l in L}


LAYOUTS = _layouts()

# What qimg's qcow2 writer does not do yet, so the lead can see it and remove entries as the
# writer lands. Pending cases are strict expected failures (pytest xfail(strict=True)): the
# day one passes, pytest reports XPASS(strict) as a failure, and its entry must go.
#
# PENDING_OPS: kinds of qemu-io commands (writediff.op_kinds: the command word, or
# truncate-grow / truncate-shrink; KIND@LAYOUT for one layout only) left out of the scripts
# on qcow2 layouts (raw keeps them); test_write_differential.py::test_truncate has them as
# strict expected failures.
PENDING_OPS = {
}
# PENDING: single test cases, by id ('random:LAYOUT:SEED', 'found:NAME', 'growth:rcN',
# 'fault:LAYOUT', 'fault:LAYOUT:SEED', 'compressed-reuse', 'truncate:KIND:LAYOUT'; a last
# part '*' for all of a group, e.g. 'random:dirty:*'), one line each: what fails (F numbers:
# the reports in the i11-difftest notes).
PENDING = {
}


def pending_op(layout, kind):
    """The PENDING_OPS reason for a kind of command on a layout, or None."""
    if layout.fmt != 'qcow2':
        return None
    return PENDING_OPS.get(kind) or PENDING_OPS.get(kind + '@' + layout.name)


def pending_reason(case_id):
    """PENDING's reason for a case id, or for its group ('random:LAYOUT:*')."""
    return PENDING.get(case_id) or PENDING.get(case_id.rsplit(':', 1)[0] + ':*')


def pending_mark(case_id):
    """pytest marks for a case: strict xfail when it is listed in PENDING."""
    import pytest
    r = pending_reason(case_id)
    return [pytest.mark.xfail(reason='PENDING: ' + r, strict=True)] if r else []


# -- random scripts ---------------------------------------------------------------------------

def _size_text(rng, v):
    forms = [str(v)]
    for suffix, unit in (('k', KIB), ('M', MIB)):
        if v and v % unit == 0:
            forms.append('%d%s' % (v // unit, suffix))
    return rng.choice(forms)


def random_script(layout, seed, ncmds=None):
    """A seeded list of qemu-io commands for layout (deterministic for (layout, seed))."""
    rng = random.Random('%s/%d' % (layout.name, seed))
    cs = layout.cluster
    sub = cs // 32 if layout.subclusters else cs
    vsize = layout.size
    hot = [o for o, _ in layout.data + layout.backing] + [0, vsize // 2, vsize - cs]
    lines = []
    for _ in range(ncmds or rng.randrange(12, 30)):
        # an offset: near data already there (overwrites, copy-on-write from backing), at
        # a (sub)cluster boundary, or anywhere; aligned to one of the write path's grains
        align = rng.choice([1, 512, 512, 4096, sub, cs, cs])
        base = rng.choice(hot + [rng.randrange(0, vsize)] * 2)
        off = max(0, base + rng.randrange(-3, 4) * rng.choice([sub, cs, 512]))
        off = off // align * align
        n = rng.choice([1, 512, 4096, sub, cs, 2 * cs, 3 * cs + 512, 5 * sub, 200 * KIB,
                        rng.randrange(1, 300 * KIB)])
        n = n + rng.choice([0, 0, 0, 512, -512, 1, 100]) if n > 512 else n
        # up to 4 clusters, and with small clusters across several L2 tables
        n = max(1, min(n, 2 * MIB + 512, max(4 * cs, 256 * KIB)))
        if rng.random() < 0.9 and off + n > vsize:         # mostly in range
            off = max(0, (vsize - n) // 512 * 512)
        o, l = _size_text(rng, off), _size_text(rng, n)
        k = rng.random()
        if k < 0.36:
            lines.append('write -P %d %s %s' % (rng.randrange(1, 256), o, l))
        elif k < 0.48:
            lines.append('write -z %s %s' % (o, l))
        elif k < 0.60:
            lines.append('write -z -u %s %s' % (o, l))
        elif k < 0.72:
            lines.append('discard %s %s' % (o, l))
        elif k < 0.84:
            # compressed: one cluster at a cluster offset, now and then the image's last
            # (partial) cluster, a short one (EINVAL) or one over an allocated cluster
            # (EIO). Never more than one cluster: qemu compresses each cluster of a request
            # in its own task, up to 8 in parallel (qcow2_co_pwritev_compressed_part), and
            # places them in the order the tasks finish, so a multi-cluster compressed
            # write has no deterministic layout (measured: two qemu-io runs of one script
            # gave different maps, and different guest bytes when one cluster failed)
            co, cn = off // cs * cs, rng.choice([cs, cs, cs, 512])
            if rng.random() < 0.15:
                co = (vsize - 1) // cs * cs
                cn = vsize - co
            lines.append('write -c -P %d %s %s' % (rng.randrange(1, 256), _size_text(rng, co),
                                                   _size_text(rng, cn)))
        elif k < 0.90:
            lines.append('flush')
        elif k < 0.95:
            lines.append('read -P 0 %s %s' % (o, l))
        else:
            new = rng.choice([vsize + cs, vsize + 3 * MIB // 2, vsize - cs, vsize // 2 + 512,
                              vsize + 100])
            new = max(512, new)
            lines.append('truncate %s' % _size_text(rng, new))
            if new % 512 == 0:
                vsize = new
    return avoid_qemu_compressed_reuse(lines)


def op_kinds(script, size):
    """The kinds of each command, as PENDING_OPS names them: the command word, and for
    truncate also 'truncate-grow' or 'truncate-shrink' (by the size the script has there)."""
    out = []
    for c in script:
        w = c.split()
        kinds = {w[0]}
        if w[0] == 'truncate':
            new = parse_size(w[-1])
            kinds.add('truncate-shrink' if new < size else 'truncate-grow')
            if new % 512 == 0:
                size = new
        out.append(kinds)
    return out


def drop_pending(layout, script):
    """script less the commands of a kind in PENDING_OPS (qcow2 layouts only)."""
    if layout.fmt != 'qcow2' or not PENDING_OPS:
        return list(script)
    out, size = [], layout.size
    for c in script:
        kinds = op_kinds([c], size)[0]
        kinds |= {k + '@' + layout.name for k in kinds}
        if kinds & set(PENDING_OPS):
            continue
        out.append(c)
        w = c.split()
        if w[0] == 'truncate' and parse_size(w[-1]) % 512 == 0:
            size = parse_size(w[-1])
    return out


def case_script(layout, seed):
    """The script the random test runs for (layout, seed): random_script less the
    PENDING_OPS commands on qcow2 layouts."""
    return drop_pending(layout, random_script(layout, seed))


def parse_size(t):
    mult = {'k': KIB, 'M': MIB}.get(t[-1], 1)
    return int(t[:-1] if mult > 1 else t) * mult


def avoid_qemu_compressed_reuse(lines):
    """Turns a compressed write into a plain one where qemu 7.2 would corrupt the image.

    qemu 7.2 keeps packing compressed clusters into the host cluster of the last one
    (s->free_byte_offset, qcow2_alloc_bytes) even after that host cluster was freed (its
    compressed clusters overwritten, zeroed, discarded or truncated away) and handed out
    again as a data cluster: the next compressed write lands inside that data cluster
    (qemu-img check: "ERROR OFLAG_COPIED data cluster: ... refcount=2", guest data
    overwritten). Found by this harness; shortest form, on cs4k: write -c -P 210 2040k 4k;
    write -P 147 2040k 4k; write -P 48 1M 4k; write -c -P 100 2036k 4k.
    So no compressed write follows a command that touched an earlier compressed write's
    range in the same process (a rule that every sub-script keeps, so the minimizer
    cannot bring the bug back); test_write_differential checks qimg on the sequence
    itself. Only the oracle is avoided here: qimg must not have the bug."""
    out, written, tainted = [], [], False
    for c in lines:
        w = c.split()
        if w[0] == 'truncate':
            new = parse_size(w[-1])
            tainted = tainted or any(o + n > new for o, n in written)
        elif w[0] in ('write', 'discard'):
            o, n = parse_size(w[-2]), parse_size(w[-1])
            if '-c' in w:
                if tainted:
                    c = c.replace('write -c ', 'write ')
                else:
                    written.append((o, n))
                    out.append(c)
                    continue
            tainted = tainted or any(o < a + b and a < o + n for a, b in written)
        out.append(c)
    return out


# -- running one case --------------------------------------------------------------------------

_tmp_root = None
_bases = {}


def tmp_root():
    global _tmp_root
    if _tmp_root is None:
        _tmp_root = tempfile.mkdtemp(prefix='writediff-')
        atexit.register(shutil.rmtree, _tmp_root, True)
    return _tmp_root


def qimg_io_alias():
    """qimg-io through a symlink named qemu-io, so "qemu-io:" message prefixes agree."""
    p = os.path.join(tmp_root(), 'alias', 'qemu-io')
    if not os.path.exists(p):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(QIMG_IO, p)
    return p


def base_image(layout):
    """The layout's image directory, built once per process by the real qemu-img."""
    if layout.name not in _bases:
        d = os.path.join(tmp_root(), 'base', layout.name)
        os.makedirs(d)
        layout.build(d)
        _bases[layout.name] = d
    return _bases[layout.name]


def copy_image_dir(src, dst, sync=True):
    """Copies an image directory file by file, keeping the holes (the sparseness of the
    qemu-img-created files: holes read as zero in map) and fsyncing each copy. Both matter
    for determinism: shutil's copy makes every byte data, and ext4 answers SEEK_HOLE over a
    range just zeroed with FALLOC_FL_ZERO_RANGE by whether the copy's pages were still
    under writeback (measured: qemu-io against itself gave two maps of one raw script)."""
    os.makedirs(dst)
    for name in sorted(os.listdir(src)):
        a, b = os.path.join(src, name), os.path.join(dst, name)
        if os.path.isdir(a):
            copy_image_dir(a, b, sync)
            continue
        with open(a, 'rb') as fa, open(b, 'wb') as fb:
            size = os.fstat(fa.fileno()).st_size
            off = 0
            while off < size:
                try:
                    data = os.lseek(fa.fileno(), off, os.SEEK_DATA)
                except OSError:         # ENXIO: only a hole up to the end
                    break
                hole = os.lseek(fa.fileno(), data, os.SEEK_HOLE)
                fa.seek(data)
                fb.seek(data)
                left = hole - data
                while left:
                    chunk = fa.read(min(left, 4 * MIB))
                    fb.write(chunk)
                    left -= len(chunk)
                off = hole
            fb.truncate(size)
            if sync:
                fb.flush()
                os.fsync(fb.fileno())


def io_args(layout, script):
    args = ['-f', layout.fmt]
    for c in script:
        args += ['-c', c]
    return args + [layout.image]


def run_tool(tool, layout, script, workdir, env=None, qemu_args=(), sync=True):
    """Copies the base image to workdir/tool and runs the script there; (rc, out, err, dir).
    qemu_args: extra options for the real qemu-io only (e.g. -t unsafe); sync=False skips
    the copy's fsync (when no map is compared)."""
    d = os.path.join(workdir, tool)
    shutil.rmtree(d, True)
    copy_image_dir(base_image(layout), d, sync)
    if tool == 'qemu':
        cmd = [qemu.QEMU_IO] + list(qemu_args)
    else:
        cmd = [qimg_io_alias()]
    rc, out, err = qemu.run(*(cmd + io_args(layout, script)), cwd=d, env=env)
    return rc, filter_io(out), err, d


def img_map(layout, d):
    rc, out, err = qemu.qemu_img('map', '--output=json', '-f', layout.fmt, layout.image, cwd=d)
    return (json.loads(out) if rc == 0 else None), err.strip()


def img_check(layout, d):
    rc, j, out, err = qemu.check_json('qemu', layout.image, cwd=d)
    return rc, j, (out + err).strip()


def guest_bytes(layout, d):
    """The guest view as raw bytes (qemu-img convert, run in the image's directory: a
    relative data_file name is resolved against the working directory, so two copies cannot
    be opened by one `qemu-img compare`)."""
    rc, out, err = qemu.qemu_img('convert', '-f', layout.fmt, '-O', 'raw', layout.image,
                                 'guest.out', cwd=d)
    if rc != 0:
        return None, (out + err).strip()
    p = os.path.join(d, 'guest.out')
    with open(p, 'rb') as f:
        data = f.read()
    os.unlink(p)
    return data, ''


def compare_guest(layout, da, db):
    """None when the guest bytes are identical, else what differs."""
    a, aerr = guest_bytes(layout, da)
    assert a is not None, 'qemu-img convert of qemu-io\'s image failed: %s' % aerr
    b, berr = guest_bytes(layout, db)
    if b is None:
        return 'qemu-img convert of qimg-io\'s image failed: %s' % berr
    if len(a) != len(b):
        return 'virtual size: qemu-io %d, qimg-io %d' % (len(a), len(b))
    if a == b:
        return None
    i = next(k for k in range(0, len(a), 512) if a[k:k + 512] != b[k:k + 512])
    i += next(k for k in range(512) if a[i + k] != b[i + k])
    j = i
    while j < len(a) and a[j] != b[j]:
        j += 1
    return 'guest bytes differ at %d..%d (qemu-io %s.., qimg-io %s..)' % (
        i, j, a[i:i + 8].hex(), b[i:i + 8].hex())


def bitmaps(layout, d):
    """The persistent dirty bitmaps of a qcow2 image as {name: (flags, granularity bits,
    bits as bytes)}, read from the file (the qcow2 spec's bitmaps extension); {} without.
    qemu sets the bits of every written range in an enabled bitmap and stores the bitmaps
    when it closes the image; where they are stored is compared by the check counters."""
    out = {}
    if layout.fmt != 'qcow2':
        return out
    with open(os.path.join(d, layout.image), 'rb') as f:
        h = f.read(4096)
        cbits = int.from_bytes(h[20:24], 'big')
        cs = 1 << cbits
        size = int.from_bytes(h[24:32], 'big')
        if int.from_bytes(h[4:8], 'big') < 3:
            return out
        pos = int.from_bytes(h[100:104], 'big')          # header_length
        ext = None
        while pos + 8 <= len(h):
            t, n = int.from_bytes(h[pos:pos + 4], 'big'), int.from_bytes(h[pos + 4:pos + 8], 'big')
            if t == 0:
                break
            if t == 0x23852875:
                ext = h[pos + 8:pos + 8 + n]
            pos += 8 + (n + 7) // 8 * 8
        if ext is None:
            return out
        nb = int.from_bytes(ext[0:4], 'big')
        dsize, doff = int.from_bytes(ext[8:16], 'big'), int.from_bytes(ext[16:24], 'big')
        f.seek(doff)
        dirb = f.read(dsize)
        p = 0
        for _ in range(nb):
            toff = int.from_bytes(dirb[p:p + 8], 'big')
            tsize = int.from_bytes(dirb[p + 8:p + 12], 'big')
            flags = int.from_bytes(dirb[p + 12:p + 16], 'big')
            gbits = dirb[p + 17]
            nlen = int.from_bytes(dirb[p + 18:p + 20], 'big')
            extra = int.from_bytes(dirb[p + 20:p + 24], 'big')
            name = dirb[p + 24 + extra:p + 24 + extra + nlen].decode('utf-8', 'replace')
            p += (24 + extra + nlen + 7) // 8 * 8
            f.seek(toff)
            table = f.read(8 * tsize)
            bits = bytearray()
            for i in range(tsize):
                e = int.from_bytes(table[8 * i:8 * i + 8], 'big')
                off = e & 0x00fffffffffffe00
                if off:
                    f.seek(off)
                    bits += f.read(cs)
                else:
                    bits += (b'\xff' if e & 1 else b'\0') * cs
            nbits = (size + (1 << gbits) - 1) >> gbits
            out[name] = (flags, gbits, bytes(bits[:(nbits + 7) // 8]))
    return out


class Outcome:
    """The differences between the two runs: failures = [(kind, text)] in a fixed order."""
    KINDS = ('guest', 'check', 'rc', 'output', 'map', 'layout', 'bitmaps')

    def __init__(self):
        self.failures = []

    def fail(self, kind, text):
        self.failures.append((kind, text))

    def kinds(self):
        return [k for k, _ in self.failures]

    def __bool__(self):
        return not self.failures

    def text(self):
        return '\n'.join('[%s] %s' % f for f in self.failures)


def _first_diff(a, b):
    la, lb = a.splitlines(), b.splitlines()
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else '<none>'
        y = lb[i] if i < len(lb) else '<none>'
        if x != y:
            return 'line %d: qemu-io %r, qimg-io %r' % (i + 1, x, y)
    return 'same lines'


def _map_diff(a, b):
    if a is None or b is None:
        return 'map failed: qemu %s, qimg %s' % (a is None, b is None)
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            return 'entry %d: qemu %s, qimg %s' % (i, json.dumps(x), json.dumps(y))
    return 'same'


def _bm_text(b):
    if b is None:
        return 'none'
    flags, gbits, bits = b
    ones = [i for i in range(len(bits) * 8) if bits[i // 8] >> (i % 8) & 1]
    return 'flags %#x, granularity 2^%d, %d bits set (first %s)' % (
        flags, gbits, len(ones), ones[:4])


def run_case(layout, script, workdir, qemu_args=(), exact_layout=True):
    """Runs the script with both tools and compares; returns an Outcome. exact_layout=False
    (where qemu's own layout is not deterministic) skips the check counters and the map's
    host offsets."""
    res = Outcome()
    q = run_tool('qemu', layout, script, workdir, qemu_args=qemu_args)
    i = run_tool('qimg', layout, script, workdir)
    diff = compare_guest(layout, q[3], i[3])
    if diff:
        res.fail('guest', diff)
    if layout.fmt == 'qcow2':
        qrc, qj, qtext = img_check(layout, q[3])
        irc, ij, itext = img_check(layout, i[3])
        # the harness itself must start from qemu's clean result
        assert qrc == 0 and qj and not qj.get('corruptions') and not qj.get('check-errors'), \
            'qemu-io left an image that qemu-img check does not pass: %s' % qtext
        if ij is None or irc not in (0, 3) or ij.get('corruptions') or ij.get('check-errors'):
            res.fail('check', 'qemu-img check of qimg-io\'s image: rc %d %s' % (irc, itext))
        elif ij.get('leaks') and not qj.get('leaks'):
            res.fail('check', 'qimg-io\'s image leaks (qemu-io\'s does not): %s' % itext)
        elif exact_layout:
            # the metadata layout (L2 tables, refblocks, reftable) is where qemu puts it
            qc, ic = qemu.check_counts(qj), qemu.check_counts(ij)
            if qc != ic:
                res.fail('layout', 'qemu-img check counters differ: qemu %s, qimg %s' % (
                    json.dumps(qc, sort_keys=True), json.dumps(ic, sort_keys=True)))
    if q[0] != i[0]:
        res.fail('rc', 'exit status: qemu-io %d, qimg-io %d' % (q[0], i[0]))
    if q[1] != i[1]:
        res.fail('output', 'stdout differs, %s' % _first_diff(q[1], i[1]))
    if q[2] != i[2]:
        res.fail('output', 'stderr differs, %s' % _first_diff(q[2], i[2]))
    qm, qerr = img_map(layout, q[3])
    im, ierr = img_map(layout, i[3])
    assert qm is not None, 'qemu-img map of qemu-io\'s image failed: %s' % qerr
    qb, ib = bitmaps(layout, q[3]), bitmaps(layout, i[3])
    if qb != ib:
        diff = sorted(k for k in set(qb) | set(ib) if qb.get(k) != ib.get(k))
        res.fail('bitmaps', 'persistent bitmaps differ: %s' % '; '.join(
            '%s: qemu %s, qimg %s' % (k, _bm_text(qb.get(k)), _bm_text(ib.get(k)))
            for k in diff))
    if not exact_layout and im is not None:
        qm = [{k: v for k, v in e.items() if k != 'offset'} for e in qm]
        im = [{k: v for k, v in e.items() if k != 'offset'} for e in im]
    if qm != im and not _same_but_file_zero(qm, im):
        res.fail('map', 'qemu-img map --output=json differs, %s' % _map_diff(qm, im))
    return res


def _pieces(m, cuts):
    """The map's attributes on each piece between consecutive cuts (offsets moved along)."""
    out, k = [], 0
    for a, b in zip(cuts, cuts[1:]):
        while m[k]['start'] + m[k]['length'] <= a:
            k += 1
        e = dict(m[k])
        if 'offset' in e:
            e['offset'] += a - e['start']
        e['start'], e['length'] = a, b - a
        out.append(e)
    return out


def _same_but_file_zero(qm, im):
    """True when the two maps differ only in the "zero" flag of data ranges mapped to the same
    host offsets. That flag comes from the host file system (SEEK_HOLE inside an allocated
    cluster), and ext4 answers it by its own timing: a small write into a ZERO_RANGE'd
    cluster is sometimes reported as 100 KiB of data and a hole, sometimes as all data
    (seen under load, same system calls in the same order from both tools). The guest bytes
    are compared separately, so zero:true there is known to read as zeros."""
    if not qm or not im:
        return False
    if qm[-1]['start'] + qm[-1]['length'] != im[-1]['start'] + im[-1]['length']:
        return False
    cuts = sorted({e['start'] for e in qm + im} | {qm[-1]['start'] + qm[-1]['length']})
    for x, y in zip(_pieces(qm, cuts), _pieces(im, cuts)):
        if x == y:
            continue
        if not (x.get('data') and y.get('data') and 'offset' in x and 'offset' in y):
            return False
        if {k: v for k, v in x.items() if k != 'zero'} != \
                {k: v for k, v in y.items() if k != 'zero'}:
            return False
    return True


def minimize(layout, script, kind, workdir, budget_s=None, qemu_args=()):
    """Drops commands while the case still fails with `kind` (a simple delta minimizer:
    chunks of halving size, then single commands, until nothing more can go)."""
    budget_s = budget_s if budget_s is not None else 60 * SCALE
    t0 = time.time()
    cur = list(script)

    def fails(s):
        return kind in run_case(layout, s, workdir, qemu_args).kinds()

    chunk = max(1, len(cur) // 2)
    while chunk >= 1 and time.time() - t0 < budget_s:
        i, changed = 0, False
        while i < len(cur) and time.time() - t0 < budget_s:
            cand = cur[:i] + cur[i + chunk:]
            if cand and fails(cand):
                cur, changed = cand, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return cur


def shell_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def repro_text(layout, seed, script, outcome, minimal):
    """The assertion message: seed, layout, the failures, the shortest failing script and
    one command that reproduces it."""
    lines = ['layout %s, seed %s: %d commands, qimg-io differs from qemu-io' % (
        layout.name, seed, len(script)), outcome.text(),
        'shortest failing script (%d commands, still failing with [%s]):' % (
            len(minimal), outcome.kinds()[0])]
    lines += ['    ' + c for c in minimal]
    lines.append('reproduce: python3 tests/py/writediff.py %s --script %s' % (
        layout.name, shell_quote('; '.join(minimal))))
    lines.append('   or: python3 tests/py/writediff.py %s %s' % (layout.name, seed))
    return '\n'.join(lines)


# failing cases minimized per process (each up to 60 s x SCALE): a broad regression then
# costs minutes, not hours; the rest print their whole script
_minimize_left = 4 * SCALE


def check_seed(layout, seed, workdir, script=None, qemu_args=(), shrink=True):
    """Runs layout/seed (or a given script); returns None or the assertion message.
    shrink=False skips the minimizer (expected failures: fail fast)."""
    script = script if script is not None else case_script(layout, seed)
    out = run_case(layout, script, workdir, qemu_args)
    if out:
        return None
    global _minimize_left
    if not shrink or _minimize_left <= 0:
        return repro_text(layout, seed, script, out, script) + (
            '' if not shrink else '\n(not minimized: the run\'s minimizer budget is spent)')
    _minimize_left -= 1
    minimal = minimize(layout, script, out.kinds()[0], workdir, qemu_args=qemu_args)
    mout = run_case(layout, minimal, workdir, qemu_args)
    msg = repro_text(layout, seed, script, out, minimal)
    if mout.failures:
        msg += '\nthe shortest script gives:\n' + mout.text()
    return msg


def main(argv):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('layout', nargs='?')
    p.add_argument('seed', nargs='?', type=int)
    p.add_argument('--script', help="commands separated by ';'")
    p.add_argument('--list', action='store_true')
    p.add_argument('--keep', action='store_true', help='keep the work directory')
    a = p.parse_args(argv)
    if a.list or not a.layout:
        print('\n'.join(sorted(LAYOUTS)))
        return 0
    layout = LAYOUTS[a.layout]
    script = [c.strip() for c in a.script.split(';') if c.strip()] if a.script else None
    if script is None and a.seed is None:
        p.error('give a seed or --script')
    if script is None:
        script = case_script(layout, a.seed)
    work = tempfile.mkdtemp(prefix='writediff-case-')
    print('script:\n    ' + '\n    '.join(script))
    msg = check_seed(layout, a.seed, work, script)
    print(msg or 'same result as qemu-io')
    print('base image: %s\nlast run: %s/{qemu,qimg}' % (base_image(layout), work))
    if a.keep:
        atexit.unregister(shutil.rmtree)
    else:
        shutil.rmtree(work, True)
    return 1 if msg else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
