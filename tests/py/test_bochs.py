"""Bochs growing images (read-only driver) against the real qemu-img 7.2.

Images are built here byte by byte (header, catalog, per-extent bitmap and sectors), v1 and
v2, with unallocated extents, unset bitmap bits and damaged headers. qimg (as `qemu-img`)
and qemu-img must agree on info, map, compare, convert (target bytes) and every open error.
iotest 113 converts from a bochs image; qimg had no bochs driver ("Unknown driver")."""

import os
import struct

import pytest

import qemu

EXTENT = 4096  # 8 sectors per extent: one bitmap byte


def bochs(path, disk=64 * 1024, extent=EXTENT, v1=False, catalog=None, sectors=None,
          version=None, bitmap=512, magic=b'Bochs Virtual HD Image'):
    """catalog: list of block indexes (0xffffffff: unallocated); sectors: {guest sector:
    pattern byte} for allocated extents."""
    n_ext = -(-disk // extent)
    if catalog is None:
        catalog = [0xffffffff] * n_ext
    h = bytearray(512)
    h[0:len(magic)] = magic
    h[32:39] = b'Redolog'
    h[48:55] = b'Growing'
    struct.pack_into('<II', h, 64, version or (0x10000 if v1 else 0x20000), 512)
    struct.pack_into('<III', h, 72, len(catalog), bitmap, extent)
    struct.pack_into('<Q', h, 84 if v1 else 88, disk)
    data = bytearray(h) + b''.join(struct.pack('<I', c) for c in catalog)
    bitmap_blocks = 1 + (bitmap - 1) // 512
    per = bitmap_blocks + 1 + (extent - 1) // 512
    for gs, pat in (sectors or {}).items():
        idx, within = divmod(gs * 512, extent)
        blk = catalog[idx]
        base = 512 + 4 * len(catalog) + 512 * blk * per
        end = base + 512 * per
        if len(data) < end:
            data += bytes(end - len(data))
        s = within // 512
        data[base + s // 8] |= 1 << (s % 8)
        off = base + 512 * (bitmap_blocks + s)
        data[off:off + 512] = bytes([pat]) * 512
    with open(path, 'wb') as f:
        f.write(data)


def _both(tmp_path, args):
    res = []
    for tool in ('qemu', 'qimg'):
        r = qemu.run(qemu.tool_path(tool), *args, cwd=str(tmp_path))
        res.append(r)
    return res


GOOD = {
    'empty-v2': dict(),
    'empty-v1': dict(v1=True),
    'data-v2': dict(catalog=[1, 0xffffffff, 0] + [0xffffffff] * 13,
                    sectors={0: 0x11, 3: 0x22, 7: 0x33, 16: 0x44, 21: 0x55}),
    'data-v1': dict(v1=True, catalog=[0, 0xffffffff, 1] + [0xffffffff] * 13,
                    sectors={1: 0x66, 16: 0x77}),
    'odd-size': dict(disk=10 * 512 + 100, catalog=[0, 1, 0xffffffff],
                     sectors={2: 0x12, 9: 0x34}),
    'big-bitmap': dict(bitmap=1024, catalog=[0] + [0xffffffff] * 15, sectors={5: 0x9}),
}


@pytest.mark.parametrize('name', sorted(GOOD))
def test_bochs_reads_as_qemu(tmp_path, name):
    bochs(str(tmp_path / 'b.img'), **GOOD[name])
    for args in (['info', 'b.img'], ['info', '-f', 'bochs', '--output=json', 'b.img'],
                 ['map', 'b.img'], ['map', '--output=json', 'b.img'], ['check', 'b.img']):
        rq, ri = _both(tmp_path, args)
        assert ri == rq, args
    for fmt in ('raw', 'qcow2'):
        for tool in ('qemu', 'qimg'):
            rc, out, err = qemu.run(qemu.tool_path(tool), 'convert', '-O', fmt, 'b.img',
                                    '%s.%s' % (tool, fmt), cwd=str(tmp_path))
            assert (rc, out, err) == (0, '', '')
        with open(tmp_path / ('qemu.' + fmt), 'rb') as a, \
                open(tmp_path / ('qimg.' + fmt), 'rb') as b:
            assert a.read() == b.read()
    rq, ri = _both(tmp_path, ['compare', 'b.img', 'qemu.raw'])
    assert ri == rq and rq[0] == 0


BAD = {
    'version': dict(version=0x30000),
    'magic': dict(magic=b'Bochs Virtual HD Imagf'),
    'extent-small': dict(extent=256, disk=4096, catalog=[0xffffffff] * 16),
    'extent-pow2': dict(extent=3 * 512, disk=3 * 512, catalog=[0xffffffff]),
    'extent-large': dict(extent=16 << 20, disk=512, catalog=[0xffffffff]),
    'catalog-small': dict(catalog=[0xffffffff] * 3),
    'catalog-large': dict(disk=512, catalog=[0xffffffff] * 0x100001),
}


@pytest.mark.parametrize('name', sorted(BAD))
def test_bochs_open_errors_as_qemu(tmp_path, name):
    bochs(str(tmp_path / 'b.img'), **BAD[name])
    for args in (['info', '-f', 'bochs', 'b.img'], ['convert', '-f', 'bochs', 'b.img', 'o'],
                 ['info', 'b.img']):
        rq, ri = _both(tmp_path, args)
        assert ri == rq, args


def test_bochs_no_creation(tmp_path):
    """iotest 113: a bochs source converted to bochs: the source opens, then creation is
    refused."""
    bochs(str(tmp_path / 'b.img'), **GOOD['data-v2'])
    for args in (['convert', '-f', 'bochs', '-O', 'bochs', 'b.img', 'nbd://example.com'],
                 ['create', '-f', 'bochs', 'x.img', '1M']):
        rq, ri = _both(tmp_path, args)
        assert ri == rq, args
