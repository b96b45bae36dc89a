"""qcow2 (and raw) writes: qimg-io against the real qemu-io 7.2 on random write scripts.

For every layout of writediff.LAYOUTS (the info test matrix) and a few seeds each, the same
seeded script (writes of many sizes and alignments, overwrites, write -z with and without
-u, discard, write -c, flush, truncate, over snapshots, compressed clusters and backing
data) runs with qemu-io on one copy of a qemu-img-created image and with qimg-io on another.
Then: guest bytes identical, the real `qemu-img check` clean on qimg's image (no leaks when
qemu's has none) with the same counters (allocated, fragmented, compressed clusters, image
end: the metadata is where qemu puts it), same exit status, stdout and stderr, and
`qemu-img map --output=json` identical including host offsets.

A failing case prints its seed, layout and the shortest failing script (delta-minimized),
with one command that reproduces it:
    python3 tests/py/writediff.py LAYOUT --script '...'
More seeds: QIMG_WRITEDIFF_SCALE=N (N times as many per layout).
"""

import os

import pytest

import qemu
import writediff
from writediff import KIB, MIB, LAYOUTS, SCALE

SEEDS = range(5 * SCALE)


@pytest.fixture(scope='module', autouse=True)
def qimg_io_binary():
    if not os.access(writediff.QIMG_IO, os.X_OK):
        pytest.fail('qimg-io not found at %s (build it with `make`)' % writediff.QIMG_IO)


def random_params():
    out = []
    for name in sorted(LAYOUTS):
        for seed in SEEDS:
            cid = 'random:%s:%d' % (name, seed)
            out.append(pytest.param(LAYOUTS[name], seed, id='%s-seed%d' % (name, seed),
                                    marks=writediff.pending_mark(cid)))
    return out


@pytest.mark.parametrize('layout,seed', random_params())
def test_random_script(tmp_path, layout, seed):
    cid = 'random:%s:%d' % (layout.name, seed)
    msg = writediff.check_seed(layout, seed, str(tmp_path),
                               shrink=writediff.pending_reason(cid) is None)
    assert msg is None, msg


# -- cases the harness found --------------------------------------------------------------------
# Minimized scripts of failures this harness found in the writer (the F numbers of the
# i11-difftest notes), kept as regression cases; random seeds move when the generator
# changes, these do not.

FOUND = {
    # an allocating write into a cluster whose host range was punched: qemu zeroes the new
    # cluster with fallocate (handle_alloc_space) and skips the zero copy-on-write
    'F2-cs2m': ('cs2m', ['discard 4194304 2M', 'write -P 165 4M 512']),
    'F2-cs64k': ('cs64k', ['write -P 241 1408k 193k', 'discard 1491456 130560',
                           'write -P 2 1441792 66048']),
    # a compressed cluster replaced mid-request: when qemu reuses its host cluster
    'F4-chain-extl2': ('chain-extl2', ['write -c -P 212 0 16k', 'write -P 171 0 64k']),
    # after an L1 growth: when qemu reuses the old L1 table's cluster
    'F5-rc64': ('rc64', ['truncate 2101248', 'write -c -P 89 2084864 4096',
                         'write -P 130 2088448 12800']),
}


@pytest.mark.parametrize('case', [pytest.param(k, id=k, marks=writediff.pending_mark(
    'found:' + k)) for k in sorted(FOUND)])
def test_found(tmp_path, case):
    name, script = FOUND[case]
    msg = writediff.check_seed(LAYOUTS[name], case, str(tmp_path), script=script,
                               shrink=writediff.pending_reason('found:' + case) is None)
    assert msg is None, msg


# -- truncate ------------------------------------------------------------------------------
# grow: a new L1 table when the old one is too small (512-byte clusters), writes past the
# old end; shrink: the clusters past the new end freed (and with snapshots qemu's answer),
# a size that is not a multiple of 512 (refused). While a kind is in writediff.PENDING_OPS,
# the random scripts leave it out on qcow2 and its case here is a strict expected failure.

TRUNCATE_LAYOUTS = ['raw', 'cs512', 'cs64k', 'compat010', 'extl2', 'snapshots', 'chain',
                    'datafile', 'datafile-raw', 'rc64', 'lazy', 'compressed']


def truncate_script(layout, kind):
    size, cs = layout.size, layout.cluster
    grown = size + 40 * MIB
    if kind == 'grow':
        return ['write -P 1 %d %d' % (size - cs, cs), 'truncate %d' % grown,
                'write -P 2 %d %d' % (size - 512, cs + 1024),
                'read -P 0 %d 4k' % (grown - 4096), 'truncate %d' % (grown + 100),
                'write -P 3 %d 1k' % (grown - 1024), 'truncate %d' % (grown + cs)]
    return ['write -P 1 %d %d' % (size - 2 * cs, 2 * cs), 'truncate %d' % (size // 2 + 512),
            'write -P 3 %d 1k' % (size // 2 - 512), 'truncate %d' % (size // 2 + 100),
            'truncate %d' % (size + cs), 'read -P 0 %d 512' % (size - 512),
            'write -P 4 %d 512' % (size // 2 + 1024), 'truncate %d' % (size // 4)]


def truncate_params():
    out = []
    for kind in ('grow', 'shrink'):
        for name in TRUNCATE_LAYOUTS:
            marks = writediff.pending_mark('truncate:%s:%s' % (kind, name))
            op = writediff.pending_op(LAYOUTS[name], 'truncate-' + kind)
            if not marks and op:
                marks = [pytest.mark.xfail(reason='PENDING_OPS: ' + op, strict=True)]
            out.append(pytest.param(LAYOUTS[name], kind, id='%s-%s' % (kind, name),
                                    marks=marks))
    return out


@pytest.mark.parametrize('layout,kind', truncate_params())
def test_truncate(tmp_path, layout, kind):
    pending = (writediff.pending_reason('truncate:%s:%s' % (kind, layout.name)) or
               writediff.pending_op(layout, 'truncate-' + kind))
    msg = writediff.check_seed(layout, 'truncate-' + kind, str(tmp_path),
                               script=truncate_script(layout, kind), shrink=not pending)
    assert msg is None, msg


# -- compressed writes of several clusters ---------------------------------------------------
# qemu compresses each cluster of a request in its own task, up to 8 in parallel, and places
# them in the order they finish (qcow2_co_pwritev_compressed_part): the host offsets are not
# deterministic, so these cases compare guest bytes, exit status, output, a clean check and
# the map less its offsets. Every target cluster is unallocated (an allocated one fails with
# EIO, and which of the parallel tasks then still ran is not deterministic either).

@pytest.mark.parametrize('name', ['cs4k', 'zstd', 'extl2-cs16k', 'snapshots', 'chain',
                                  'compat010-cs4k'])
def test_compressed_multi_cluster(tmp_path, name):
    layout = LAYOUTS[name]
    cs, far = layout.cluster, layout.size // 2 + 4 * layout.cluster
    script = ['write -c -P 0x61 %d %d' % (far, 8 * cs), 'write -P 0x62 %d %d' % (far + cs, 512),
              'write -c -P 0x63 %d %d' % (far + 16 * cs, 3 * cs),
              'write -z %d %d' % (far + 2 * cs, 2 * cs), 'discard %d %d' % (far + 17 * cs, cs),
              'write -P 0x64 %d %d' % (far + 18 * cs - 100, 200)]
    out = writediff.run_case(layout, script, str(tmp_path), exact_layout=False)
    assert out, writediff.repro_text(layout, 'compressed-multi', script, out, script)


# -- growth past the first refcount block and the refcount table's first cluster ------------
# 512-byte clusters: a refblock holds 4096 (1 bit) or 64 (64 bit) entries, so the first one
# is full at 2 MiB / 32 KiB of host file; the reftable's first cluster (64 refblocks) at
# 128 MiB / 2 MiB. The scripts pass both, then free and reallocate across the boundaries.
# qemu-io runs with -t unsafe: its default cache mode flushes at every cache dependency
# (10 s instead of 0.7 s for the 130 MiB write); the mode changes no allocation (the two
# files were measured byte-identical).

def _growth_layout(bits, size):
    name = 'growth-rc%d' % bits
    if name not in LAYOUTS:
        def build(d):
            writediff._create(d, 'img.qcow2', size, 'cluster_size=512',
                              'refcount_bits=%d' % bits)
            writediff._io(d, 'img.qcow2', 'write -P 0x11 0 4k')
        LAYOUTS[name] = writediff.Layout(name, build, size, cluster=512,
                                         data=((0, 4 * KIB),))
    return LAYOUTS[name]


GROWTH = {
    # refblock 1: 2 MiB, reftable cluster 1: 128 MiB of host file
    1: (160 * MIB, ['write -P 1 4k 3M', 'write -P 2 130M 512', 'discard 64k 64k',
                    'write -P 3 8M 70M', 'write -z -u 1M 1M', 'write -P 4 80M 60M',
                    'write -P 5 100k 200k', 'write -c -P 6 150M 512', 'flush',
                    'write -P 7 150M 100k', 'truncate 200M', 'write -P 8 190M 1M']),
    # refblock 1: 32 KiB, reftable cluster 1: 2 MiB of host file
    64: (8 * MIB, ['write -P 1 4k 40k', 'write -P 2 1M 512', 'discard 8k 4k',
                   'write -P 3 2M 2M', 'write -z -u 2100k 64k', 'write -c -P 4 7M 512',
                   'write -P 5 5M 100k', 'flush', 'truncate 16M', 'write -P 6 15M 1M']),
}


@pytest.mark.parametrize('bits', [pytest.param(b, id='rc%d' % b, marks=writediff.pending_mark(
    'growth:rc%d' % b)) for b in sorted(GROWTH)])
def test_refcount_growth(tmp_path, bits):
    size, script = GROWTH[bits]
    layout = _growth_layout(bits, size)
    script = writediff.drop_pending(layout, script)
    msg = writediff.check_seed(layout, 'growth', str(tmp_path), script=script,
                               qemu_args=['-t', 'unsafe'])
    assert msg is None, msg
    # the cases reach what they are for (on qemu's image, identical to qimg's by now)
    rc, j, text = writediff.img_check(layout, str(tmp_path / 'qemu'))
    end = j['image-end-offset']
    assert end > {1: 128, 64: 2}[bits] * MIB, text
    with open(str(tmp_path / 'qemu' / 'img.qcow2'), 'rb') as f:
        hdr = f.read(64)
    assert int.from_bytes(hdr[56:60], 'big') > 1, 'reftable did not grow'


# -- a qemu 7.2 corruption qimg must not copy ------------------------------------------------

@pytest.mark.parametrize('case', [pytest.param(
    0, id='cs4k', marks=writediff.pending_mark('compressed-reuse'))])
def test_compressed_reuse_after_free(tmp_path, case):
    """qemu 7.2 packs a compressed cluster into a host cluster it freed and reused as a data
    cluster (see writediff.avoid_qemu_compressed_reuse; found by this harness): its check
    then reports "ERROR OFLAG_COPIED data cluster ... refcount=2" and the data cluster is
    overwritten. qimg's allocator must start a new host cluster instead: clean check, every
    byte readable as written."""
    name = 'compressed-reuse'
    if name not in LAYOUTS:
        LAYOUTS[name] = writediff.Layout(name, writediff._plain(
            2 * MIB, 'cluster_size=4k', writes=('write -P 0x5a 0 100k',)), 2 * MIB,
            cluster=4 * KIB, data=((0, 100 * KIB),))
    layout = LAYOUTS[name]
    script = ['write -c -P 210 2040k 4k', 'write -P 147 2040k 4k', 'write -P 48 1M 4k',
              'write -c -P 100 2036k 4k']
    # qemu itself: the corruption (so the case stays meaningful)
    q = writediff.run_tool('qemu', layout, script, str(tmp_path))
    rc, j, text = writediff.img_check(layout, q[3])
    assert j and j.get('corruptions'), 'qemu 7.2 no longer corrupts: %s' % text
    i = writediff.run_tool('qimg', layout, script, str(tmp_path))
    assert i[0] == 0, i[1] + i[2]
    rc, j, text = writediff.img_check(layout, i[3])
    assert rc == 0 and not j.get('corruptions') and not j.get('leaks'), text
    rc, out, err = qemu.qemu_io('-f', 'qcow2', '-c', 'read -P 147 2040k 4k',
                                '-c', 'read -P 48 1M 4k', '-c', 'read -P 100 2036k 4k',
                                '-c', 'read -P 0x5a 0 100k', 'img.qcow2', cwd=i[3])
    assert rc == 0 and 'verification failed' not in out, out + err
