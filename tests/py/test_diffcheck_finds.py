"""Mismatches with qemu-img found by scripts/diffcheck.py (random metadata damage, both
tools run on the same image), rebuilt here from images made by qemu-img so each stays
fixed: check (human and JSON), info and map must give qemu-img's exit code and lines."""

import os
import struct

import pytest

import qcow2poke
import qemu


def _v2_with_snapshot(d):
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '8M', compat='0.10')
    qemu.io(p, 'write -P 1 0 64k', 'write -P 3 5M 4k')
    qemu.snapshot_create(p, 'snap1')
    qemu.io(p, 'write -P 4 0 4k')
    return p


def snap_l1_offset_past_int64(d):
    """A snapshot L1 offset with bit 63 set: qemu counts the table (past EOF), its read
    fails the block layer's request check, and the check stops with an I/O error."""
    p = _v2_with_snapshot(d)
    with qcow2poke.open_image(p) as q:
        sn = q.snapshots()[0]
        q.set_snapshot_field(0, 'l1_table_offset', sn.l1_table_offset | (1 << 63))


def size_wraps_l1_count(d):
    """Virtual size 2^64-1: qemu's size_to_l1 wraps to 0, so the L1 checks pass and the
    open fails only on the size ("Could not refresh total sector count"); check used to
    stop at the decoder's "Image is too big" (info and map already agreed)."""
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '8M', refcount_bits=64)
    qemu.io(p, 'write -P 1 0 64k')
    with qcow2poke.open_image(p) as q:
        q.set_header('size', (1 << 64) - 1)


def size_wraps_l1_count_2m_clusters(d):
    """The same wrap with 2 MiB clusters (diffcheck seed 14): without the wrap 2^64 needs
    only 2^25 L1 entries, under INT_MAX, so qimg called the L1 table too small where
    qemu's wrapped count of 0 passes and the open fails on the size."""
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '8M', cluster_size=2 << 20)
    qemu.io(p, 'write -P 1 0 64k')
    with qcow2poke.open_image(p) as q:
        q.set_header('size', (1 << 64) - 1)


def data_file_name_starts_with_nul(d):
    """The data file name extension's first byte NUL (diffcheck seed 14): qemu reads the
    name as a C string, "", and its file driver refuses an empty name ("The 'file' block
    driver requires a file name"); qimg tried to open '' (No such file or directory)."""
    p = os.path.join(d, 'img.qcow2')
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'data_file=img.data', p, '8M',
                  cwd=d, check=True)
    qemu.io(p, 'write -P 1 0 64k', cwd=d)
    with qcow2poke.open_image(p) as q:
        off, _ = q.find_extension(qcow2poke.EXT_DATA_FILE)
        q.set_u8(off, 0)


def snap_long_name_l1_unaligned(d):
    """A snapshot whose 3000-byte name goes into check's "L1 table is not cluster aligned"
    line (diffcheck seed 15 read a 56 KiB name): qemu prints it whole, qimg cut the line
    at 1 KiB, newline and all."""
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '8M')
    qemu.io(p, 'write -P 1 0 64k')
    qemu.snapshot_create(p, 'snap1')
    with qcow2poke.open_image(p) as q:
        sn = q.snapshots()[0]
        # qemu names snapshots up to 255 bytes: the entry (the table's last, alone in its
        # cluster) gets a longer one in place
        id_size = q.u16(sn.offset + 12)
        q.pwrite(sn.offset + 40 + sn.extra_data_size + id_size, b'n' * 3000)
        q.set_snapshot_field(0, 'name_size', 3000)
        q.set_snapshot_field(0, 'l1_table_offset', sn.l1_table_offset + 8)


def snap_l1_offset_negative_no_eof_error(d):
    """Snapshot L1 offset 0xc2000000_0001f000: negative in qemu's int64 arithmetic, so its
    "exceeding the end of the file" test passes silently, and counting the table's cluster
    needs a refcount array of 2^42+ entries: "Check failed: Cannot allocate memory". qimg
    used to call it a reference past EOF and then fail the read (I/O error)."""
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '16M', cluster_size=4096)
    qemu.io(p, 'write -P 1 0 64k')
    qemu.snapshot_create(p, 'snap1')
    with qcow2poke.open_image(p) as q:
        sn = q.snapshots()[0]
        q.set_snapshot_field(0, 'l1_table_offset', sn.l1_table_offset | (0xc2 << 56))


def snap_l1_range_wraps(d):
    """A snapshot L1 range that wraps past 2^64 counts nothing in qemu (its loop runs from
    a high cluster to a low one); its read then fails the request check."""
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '16M', cluster_size=4096)
    qemu.io(p, 'write -P 1 0 64k')
    qemu.snapshot_create(p, 'snap1')
    with qcow2poke.open_image(p) as q:
        q.set_snapshot_field(0, 'l1_table_offset', (1 << 64) - 4096)
        q.set_snapshot_field(0, 'l1_size', 1024)


def _bitmap_image(d):
    """Two bitmaps, b0 (64 KiB granularity) and b1 (128 KiB); returns the file offsets of
    their directory entries."""
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '8M')
    qemu.io(p, 'write -P 1 0 64k')
    qemu.qemu_img('bitmap', '--add', p, 'b0', check=True)
    qemu.qemu_img('bitmap', '--add', '-g', '128k', p, 'b1', check=True)
    with qcow2poke.open_image(p) as q:
        ext, _ = q.find_extension(0x23852875)
        dir_size, dir_off = struct.unpack('>QQ', q.pread(ext + 8, 16))
        entries, pos = [], dir_off
        while pos < dir_off + dir_size:
            entries.append(pos)
            name_size, = struct.unpack('>H', q.pread(pos + 18, 2))
            pos += (24 + name_size + 7) & ~7
    return p, entries


def bitmap_table_larger_than_disk_needs(d):
    """b1's table says 248 entries where the disk needs 1: the directory passes qemu's
    constraints (the table covers the disk), the table entries read past it are zeros, and
    load_bitmap_data refuses the size: "Could not read bitmap 'b1' from image"."""
    p, entries = _bitmap_image(d)
    with qcow2poke.open_image(p) as q:
        q.set_u32(entries[1] + 8, 248)


def bitmap_duplicate_name(d):
    """b1 renamed b0: the second b0 fails "Bitmap already exists: b0" at open."""
    p, entries = _bitmap_image(d)
    with qcow2poke.open_image(p) as q:
        q.pwrite(entries[1] + 24, b'b0')


def bitmap_duplicate_name_in_use(d):
    """The same, with the second b0 marked in use: qemu skips it and opens the image."""
    p, entries = _bitmap_image(d)
    with qcow2poke.open_image(p) as q:
        q.pwrite(entries[1] + 24, b'b0')
        q.set_u32(entries[1] + 12, q.u32(entries[1] + 12) | 1)


def refblock_offset_past_int64(d):
    """Reftable entry 0 with bit 63 set: cluster-aligned, so qemu signals no corruption; its
    read fails the request check, so every refcount lookup prints "Input/output error"
    (qimg said "Invalid argument" and signalled an unaligned refblock)."""
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '8M', refcount_bits=64)
    qemu.io(p, 'write -P 1 0 64k')
    with qcow2poke.open_image(p) as q:
        q.set_rt(0, q.rt_entry(0) | (1 << 63))


def bitmap_table_offset_past_int64(d):
    """A bitmap table offset with bit 63 set passes qemu's directory constraints (aligned,
    non-zero); reading the table fails with "Input/output error" at open."""
    p, entries = _bitmap_image(d)
    with qcow2poke.open_image(p) as q:
        q.set_u64(entries[0], q.u64(entries[0]) | (1 << 63))


def bitmap_extra_data_size_wraps(d):
    """extra_data_size 0xfffffe00: qemu keeps the entry size in an int, which wraps
    negative, so the entry "fits" and qemu refuses its extra data (qimg said "Broken
    bitmap directory")."""
    p, entries = _bitmap_image(d)
    with qcow2poke.open_image(p) as q:
        q.set_u16(entries[1] + 18, 1)
        q.set_u32(entries[1] + 20, 0xfffffe00)


def aes_without_key(d):
    """crypt_method 1 (AES): without a key secret qemu opens it for info only; check, map and
    compare fail with "Parameter 'encrypt.key-secret' is required for cipher"."""
    p = os.path.join(d, 'img.qcow2')
    qemu.make_image(p, '8M')
    qemu.io(p, 'write -P 1 0 64k')
    with qcow2poke.open_image(p) as q:
        q.set_header('crypt_method', 1)


def luks_without_key(d):
    """A LUKS-encrypted image made by qemu-img: the same without the key secret."""
    p = os.path.join(d, 'img.qcow2')
    r = qemu.create_luks('-q', '-f', 'qcow2', '--object', 'secret,id=s0,data=pw',
                         '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=50',
                         p, '8M')
    if r[0] == 0:
        return
    raise AssertionError('qemu-img could not create a LUKS image: %r' % (r,))


CASES = [bitmap_extra_data_size_wraps, aes_without_key,
         refblock_offset_past_int64, bitmap_table_offset_past_int64,
         snap_l1_offset_past_int64, size_wraps_l1_count, size_wraps_l1_count_2m_clusters,
         data_file_name_starts_with_nul, snap_long_name_l1_unaligned,
         snap_l1_offset_negative_no_eof_error,
         snap_l1_range_wraps, bitmap_table_larger_than_disk_needs, bitmap_duplicate_name,
         bitmap_duplicate_name_in_use]


def _same(d, *args):
    rq = qemu.run(qemu.tool_path('qemu'), *args, 'img.qcow2', cwd=d)
    ri = qemu.run(qemu.qimg_as_qemu_img(), *args, 'img.qcow2', cwd=d)
    if args[:2] == ('check', '--output=json') and ri[0] == rq[0] and rq[1].strip():
        # qimg adds its findings array; qemu's fields must be equal
        assert qemu.qemu_part(qemu.parse_json(ri[1])) == qemu.qemu_part(qemu.parse_json(rq[1]))
        assert ri[2] == rq[2]
    else:
        assert ri == rq
    return rq


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.__name__)
def test_diffcheck_find(tmp_path, case):
    d = str(tmp_path)
    case(d)
    for args in (['check'], ['check', '--output=json'], ['info', '--output=json'],
                 ['map', '--output=json']):
        _same(d, *args)


def test_luks_without_crypto_header_info_works(tmp_path):
    """LUKS crypt method without its crypto header extension: check fails as qemu's
    ("Missing CRYPTO header for crypt method 2"); qemu-img 7.2 info crashes on it
    (SIGSEGV), qimg info prints the image."""
    d = str(tmp_path)
    luks_without_key(d)
    p = os.path.join(d, 'img.qcow2')
    with qcow2poke.open_image(p) as q:
        off = q.ext_header_offset(0x0537be77)
        q.set_u32(off, 0x0537be78)     # the crypto extension becomes an unknown one
    _same(d, 'check')
    rq = qemu.run(qemu.tool_path('qemu'), 'info', 'img.qcow2', cwd=d)
    ri = qemu.run(qemu.qimg_as_qemu_img(), 'info', 'img.qcow2', cwd=d)
    assert rq[0] != 0 and rq[0] != 1, rq            # qemu-img crashes
    assert ri[0] == 0 and 'file format: qcow2' in ri[1], ri


def test_luks_without_key(tmp_path):
    """A LUKS-encrypted image made by qemu-img, no key secret: check, map and compare fail
    as qemu-img's do (info with its LUKS details: tests/py/test_luks_info.py)."""
    d = str(tmp_path)
    luks_without_key(d)
    for args in (['check'], ['check', '--output=json'], ['map', '--output=json'],
                 ['compare', 'img.qcow2']):
        rq = _same(d, *args)
        assert rq[0] != 0 and 'key-secret' in rq[2]
