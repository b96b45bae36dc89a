"""Hostile compressed clusters, judged by both rules of the one codec (format/qcow2_codec.c):
qemu's rule for guest reads (qimg compare agrees with qemu-img compare and with qemu-io) and the
deep check's stricter rule (a stream that would inflate past its cluster). qemu-img check never
decompresses, so it is clean on every image here."""
import struct
import zlib

import pytest

import qemu

CS = 65536


def _compressed_image(tmp_path, ctype, fill=0x5a):
    raw = str(tmp_path / 'g.raw')
    with open(raw, 'wb') as f:
        f.write(bytes([fill]) * CS)
    p = str(tmp_path / 'c.qcow2')
    qemu.qemu_img('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o',
                  'compression_type=%s' % ctype, raw, p, check=True)
    return raw, p


def _replace_stream(p, stream):
    """Overwrite the first cluster's compressed bytes (the descriptor stays as qemu wrote it)."""
    data = bytearray(open(p, 'rb').read())
    l1 = struct.unpack('>Q', data[40:48])[0]
    l2 = struct.unpack('>Q', data[l1:l1 + 8])[0] & 0x00fffffffffffe00
    e = struct.unpack('>Q', data[l2:l2 + 8])[0]
    assert e & (1 << 62)
    shift = 62 - (16 - 8)
    coff = e & ((1 << shift) - 1)
    sectors = ((e >> shift) & ((1 << (16 - 8)) - 1)) + 1
    csize = sectors * 512 - (coff & 511)
    assert len(stream) <= csize
    data[coff:coff + csize] = stream + bytes(csize - len(stream))
    open(p, 'wb').write(bytes(data))


def _raw_deflate(buf):
    """qemu's zlib settings: raw deflate, window 2^12, memLevel 9."""
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
    return c.compress(buf) + c.flush()


def _zstd_rle_frame(byte, n):
    """One zstd frame (single segment, 4-byte content size) holding one RLE block of n bytes."""
    return (struct.pack('<I', 0xFD2FB528) + bytes([(2 << 6) | (1 << 5)]) + struct.pack('<I', n)
            + struct.pack('<I', 1 | (1 << 1) | (n << 3))[:3] + bytes([byte]))


def _reads(p, raw):
    """qemu's rule three ways: qemu-io reads the pattern, qemu-img compare, qimg compare."""
    rc_io, out_io, _ = qemu.qemu_io('-r', '-f', 'qcow2', '-c', 'read -P 0x5a 0 64k', p)
    ok_io = rc_io == 0 and 'failed' not in out_io and 'Pattern verification' not in out_io
    q = qemu.qemu_img('compare', '-f', 'qcow2', '-F', 'raw', p, raw)
    m = qemu.run(qemu.qimg_as_qemu_img(), 'compare', '-f', 'qcow2', '-F', 'raw', p, raw)
    assert m == q
    return ok_io, q[0]


def _deep(p):
    assert qemu.qemu_img('check', p)[0] == 0
    assert qemu.qimg('check', p)[0] == 0
    rc, _, err = qemu.qimg('check', '--deep', p)
    return rc, err


def test_zlib_stream_longer_than_cluster(tmp_path):
    """Two clusters' worth of data in one stream: qemu reads the first cluster and is happy;
    --deep says the stream is longer than its cluster."""
    raw, p = _compressed_image(tmp_path, 'zlib')
    _replace_stream(p, _raw_deflate(b'\x5a' * (2 * CS)))
    assert _reads(p, raw) == (True, 0)
    rc, err = _deep(p)
    assert rc == 2 and 'DEEP compressed cluster' in err


def test_zlib_stream_exact(tmp_path):
    raw, p = _compressed_image(tmp_path, 'zlib')
    _replace_stream(p, _raw_deflate(b'\x5a' * CS))
    assert _reads(p, raw) == (True, 0)
    assert _deep(p)[0] == 0


def test_zlib_stream_short(tmp_path):
    """Half a cluster: qemu's read fails, --deep reports it."""
    raw, p = _compressed_image(tmp_path, 'zlib')
    _replace_stream(p, _raw_deflate(b'\x5a' * (CS // 2)))
    ok_io, rc_cmp = _reads(p, raw)
    assert not ok_io and rc_cmp == 4   # compare: "Error while reading offset 0 ..." 
    rc, err = _deep(p)
    assert rc == 2 and 'DEEP compressed cluster' in err


def test_zstd_several_frames(tmp_path):
    """qemu reads on across frames until the cluster is full: both rules accept."""
    raw, p = _compressed_image(tmp_path, 'zstd')
    _replace_stream(p, _zstd_rle_frame(0x5a, 1000) + _zstd_rle_frame(0x5a, CS - 1000))
    assert _reads(p, raw) == (True, 0)
    assert _deep(p)[0] == 0


def test_zstd_frame_longer_than_cluster(tmp_path):
    """One frame of two clusters: unfinished when the cluster is full, so qemu's read fails
    (and --deep reports it; before the one codec, the deep check let this through)."""
    raw, p = _compressed_image(tmp_path, 'zstd')
    _replace_stream(p, _zstd_rle_frame(0x5a, 2 * CS))
    ok_io, rc_cmp = _reads(p, raw)
    assert not ok_io and rc_cmp == 4   # compare: "Error while reading offset 0 ..." 
    rc, err = _deep(p)
    assert rc == 2 and 'DEEP compressed cluster' in err


@pytest.mark.parametrize('cut', [0, 5, 9])
def test_zstd_truncated(tmp_path, cut):
    """A frame cut short (nothing, inside the frame header, before the block), zeros after
    it: a failed read and a deep finding."""
    raw, p = _compressed_image(tmp_path, 'zstd')
    _replace_stream(p, _zstd_rle_frame(0x5a, CS)[:cut])
    ok_io, rc_cmp = _reads(p, raw)
    assert not ok_io and rc_cmp == 4   # compare: "Error while reading offset 0 ..." 
    rc, err = _deep(p)
    assert rc == 2 and 'DEEP compressed cluster' in err
