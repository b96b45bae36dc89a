"""Catalogue of guest-content images for the map / compare / read tests.

Every image is made by the real qemu-img / qemu-io inside a fresh directory:

    builder(dir) -> file name relative to dir (the tools run with cwd=dir, so
                    file names printed by map and compare are identical)

The catalogue covers data patterns (`write -P`), zero writes (`write -z`,
with and without unmap), discards, compressed images (`convert -c`, zlib
and zstd), backing chains 3 deep (qcow2 and raw bottoms, backing shorter
than the overlay, a backing file in a subdirectory), data_file and
data_file_raw, extended_l2 with partial subcluster writes, cluster sizes
from 512 bytes to 2 MiB, preallocation modes, v2 images, snapshots, L2
table boundaries and sparse or odd-sized raw files.
"""

import os

import qemu

K = 1024
M = 1024 * K
IMG = 'img.qcow2'

BUILDERS = {}


def image(name):
    def deco(fn):
        assert name not in BUILDERS, name
        BUILDERS[name] = fn
        return fn
    return deco


def _p(d, name=IMG):
    return os.path.join(d, name)


def _mixed(path, cs=64 * K, fmt='qcow2'):
    """Patterns (aligned and not), a zero write, an unmapping zero write over
    data, and a discard over data."""
    qemu.io(path,
            'write -P 0xaa 0 %d' % cs,
            'write -P 0xbb %d %d' % (cs + 1000, 3 * cs),          # unaligned start
            'write -P 0xcc %d 1536' % (8 * cs),                   # sub-cluster tail
            'write -z %d %d' % (10 * cs, 2 * cs),
            'write -P 0xdd %d %d' % (13 * cs, 2 * cs),
            'write -z -u %d %d' % (13 * cs, cs),                  # unmap half of it
            'write -P 0xee %d %d' % (16 * cs, 2 * cs),
            'discard %d %d' % (16 * cs, cs),
            'write -P 0x11 %d 512' % (20 * cs - 512),            # last sector region
            fmt=fmt)


@image('empty')
def _empty(d):
    qemu.make_image(_p(d), '1M')
    return IMG


@image('mixed-64k')
def _mixed64(d):
    qemu.make_image(_p(d), '2M')
    _mixed(_p(d))
    return IMG


for _cs in (512, 4 * K, 2 * M):
    def _mk(d, cs=_cs):
        qemu.make_image(_p(d), str(max(20 * cs, 2 * M)), cluster_size=cs)
        _mixed(_p(d), cs)
        return IMG
    image('mixed-cs%d' % _cs)(_mk)


@image('contiguous-and-fragmented')
def _frag(d):
    """Sequential writes (one host run, merges) and reversed writes (host
    offsets out of order, no merging)."""
    qemu.make_image(_p(d), '4M')
    qemu.io(_p(d), 'write -P 1 0 1M',
            'write -P 2 %d 64k' % (3 * M), 'write -P 3 %d 64k' % (2 * M + 512 * K),
            'write -P 4 %d 64k' % (2 * M))
    return IMG


@image('l2-boundaries')
def _l2(d):
    """3 GiB with 64k clusters: one L2 table covers 512 MiB; data spans the
    table boundaries, so runs must continue across tables."""
    qemu.make_image(_p(d), '3G')
    qemu.io(_p(d), 'write -P 5 %d 2M' % (512 * M - M), 'write -z %d 4M' % (1024 * M - 2 * M),
            'write -P 6 %d 64k' % (3 * 1024 * M - 64 * K))
    return IMG


@image('v2')
def _v2(d):
    qemu.make_image(_p(d), '2M', compat='0.10')
    _mixed(_p(d))
    return IMG


@image('snapshot')
def _snap(d):
    qemu.make_image(_p(d), '2M')
    qemu.io(_p(d), 'write -P 1 0 256k')
    qemu.snapshot_create(_p(d), 's1')
    qemu.io(_p(d), 'write -P 2 64k 64k', 'write -z 128k 64k')
    return IMG


for _prealloc in ('metadata', 'falloc', 'full'):
    def _mk(d, pa=_prealloc):
        qemu.make_image(_p(d), '4M', preallocation=pa)
        qemu.io(_p(d), 'write -P 7 64k 64k', 'write -z 1M 64k')
        return IMG
    image('prealloc-%s' % _prealloc)(_mk)


def _compressed(d, cs=64 * K, **opts):
    raw = _p(d, 'src.raw')
    qemu.make_image(raw, str(max(2 * M, 16 * cs)), fmt='raw')
    qemu.io(raw, 'write -P 0xaa 0 %d' % cs, 'write -P 0xbb %d %d' % (2 * cs, cs + 512),
            'write -P 0xcc %d %d' % (6 * cs, 3 * cs), fmt='raw')
    o = ['-c']
    if cs != 64 * K:
        opts['cluster_size'] = cs
    if opts:
        o += ['-o', ','.join('%s=%s' % (k, v) for k, v in opts.items())]
    qemu.convert(raw, _p(d), *o)
    os.unlink(raw)
    return IMG


@image('compressed-zlib')
def _cz(d):
    return _compressed(d)


@image('compressed-zstd')
def _czstd(d):
    return _compressed(d, compression_type='zstd')


@image('compressed-4k')
def _c4k(d):
    return _compressed(d, cs=4 * K)


@image('compressed-overwritten')
def _cover(d):
    """Compressed image where some clusters were rewritten uncompressed or zeroed."""
    _compressed(d)
    qemu.io(_p(d), 'write -P 0x33 64k 64k', 'write -z 0 32k')
    return IMG


@image('chain3')
def _chain3(d):
    """base (2M) <- mid (3M) <- top (4M): each layer overrides part of the one
    below, with data, zero writes and discards; the overlays are larger than
    their backing files."""
    qemu.make_image(_p(d, 'base.qcow2'), '2M')
    qemu.io(_p(d, 'base.qcow2'), 'write -P 1 0 1M', 'write -P 2 1536k 512k')
    qemu.make_image(_p(d, 'mid.qcow2'), '3M', backing='base.qcow2', backing_fmt='qcow2')
    qemu.io(_p(d, 'mid.qcow2'), 'write -P 3 128k 128k', 'write -z 512k 128k',
            'write -P 4 2560k 64k')
    qemu.make_image(_p(d, IMG), '4M', backing='mid.qcow2', backing_fmt='qcow2')
    qemu.io(_p(d), 'write -P 5 192k 128k', 'write -z 0 64k', 'write -P 6 3M 4k',
            'discard 1536k 64k')
    return IMG


@image('chain3-raw-base')
def _chain3raw(d):
    qemu.make_image(_p(d, 'base.raw'), '2M', fmt='raw')
    qemu.io(_p(d, 'base.raw'), 'write -P 1 0 768k', 'write -P 2 1M 64k', fmt='raw')
    qemu.make_image(_p(d, 'mid.qcow2'), '2M', backing='base.raw', backing_fmt='raw')
    qemu.io(_p(d, 'mid.qcow2'), 'write -P 3 64k 64k', 'write -z 256k 64k')
    qemu.make_image(_p(d, IMG), '2M', backing='mid.qcow2', backing_fmt='qcow2')
    qemu.io(_p(d), 'write -P 4 128k 64k')
    return IMG


@image('chain-subdir')
def _chainsub(d):
    """Backing file in a subdirectory, named relative to the overlay."""
    os.makedirs(os.path.join(d, 'sub'))
    qemu.make_image(_p(d, 'sub/base.qcow2'), '1M')
    qemu.io(_p(d, 'sub/base.qcow2'), 'write -P 1 0 256k')
    qemu.make_image(_p(d, IMG), '1M', backing='sub/base.qcow2', backing_fmt='qcow2')
    qemu.io(_p(d), 'write -P 2 64k 64k')
    return IMG


@image('backing-extl2')
def _bextl2(d):
    qemu.make_image(_p(d, 'base.qcow2'), '1M')
    qemu.io(_p(d, 'base.qcow2'), 'write -P 1 0 256k')
    qemu.make_image(_p(d, IMG), '1M', backing='base.qcow2', backing_fmt='qcow2',
                    extended_l2=True)
    qemu.io(_p(d), 'write -P 2 4k 4k', 'write -z 16k 2k', 'write -P 3 70k 1k')
    return IMG


@image('data-file')
def _df(d):
    qemu.make_image(_p(d), '2M', data_file='df.raw')
    qemu.io(_p(d), 'write -P 0xaa 0 64k', 'write -P 0xbb 200k 100k', 'write -z 1M 64k')
    return IMG


@image('data-file-raw')
def _dfraw(d):
    qemu.make_image(_p(d), '2M', data_file='df.raw', data_file_raw=True)
    qemu.io(_p(d), 'write -P 0xaa 0 64k', 'write -P 0xbb 200k 100k', 'write -z 1M 64k')
    return IMG


for _cs in (64 * K, 128 * K):
    def _mk(d, cs=_cs):
        qemu.make_image(_p(d), '2M', extended_l2=True, cluster_size=cs)
        sc = cs // 32
        qemu.io(_p(d), 'write -P 1 0 %d' % sc, 'write -P 2 %d %d' % (2 * sc, 3 * sc + 100),
                'write -z %d %d' % (8 * sc, sc), 'write -P 3 %d %d' % (cs, cs),
                'discard %d %d' % (cs + 4 * sc, 2 * sc), 'write -z %d %d' % (4 * cs, cs),
                'write -P 4 %d 512' % (6 * cs + 5 * sc))
        return IMG
    image('extl2-cs%d' % _cs)(_mk)


@image('extl2-zstd-compressed')
def _extl2c(d):
    return _compressed(d, extended_l2='on', compression_type='zstd')


@image('raw-sparse')
def _rawsparse(d):
    p = _p(d, 'img.raw')
    qemu.make_image(p, '4M', fmt='raw')
    qemu.io(p, 'write -P 1 64k 64k', 'write -P 2 1M 4k', 'write -P 3 4088k 8k', fmt='raw')
    return 'img.raw'


@image('raw-odd-size')
def _rawodd(d):
    """A raw file whose size is not a multiple of 512 (qemu rounds it up)."""
    with open(_p(d, 'img.raw'), 'wb') as f:
        f.write(b'\x01' * 1000 + b'\x00' * 1000 + b'\x02' * 77)
    return 'img.raw'


NAMES = sorted(BUILDERS)


def build(name, d):
    os.makedirs(d, exist_ok=True)
    return BUILDERS[name](d)
