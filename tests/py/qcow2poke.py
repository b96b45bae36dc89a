"""qcow2poke: parse a qcow2 image and mutate single on-disk fields.

Written from the format description in the qemu digest (section 1).  All
integers are big-endian.  Every mutation is written straight to the file;
parsed state is refreshed where that matters (header, L1, reftable).

Typical use:

    with Qcow2(path) as q:
        ent = q.l2_entry_for_guest(0)          # (word, bitmap) of guest cluster 0
        q.set_l2_for_guest(0, 0)               # zero it -> leak
        q.set_refcount(q.host_cluster(0), 2)   # refcount of the data cluster
        q.set_header('incompatible_features', 0x20)
"""

import os
import struct

MAGIC = 0x514649FB

# name -> (offset, struct format)
HEADER_FIELDS = {
    'magic': (0, '>I'),
    'version': (4, '>I'),
    'backing_file_offset': (8, '>Q'),
    'backing_file_size': (16, '>I'),
    'cluster_bits': (20, '>I'),
    'size': (24, '>Q'),
    'crypt_method': (32, '>I'),
    'l1_size': (36, '>I'),
    'l1_table_offset': (40, '>Q'),
    'refcount_table_offset': (48, '>Q'),
    'refcount_table_clusters': (56, '>I'),
    'nb_snapshots': (60, '>I'),
    'snapshots_offset': (64, '>Q'),
    'incompatible_features': (72, '>Q'),
    'compatible_features': (80, '>Q'),
    'autoclear_features': (88, '>Q'),
    'refcount_order': (96, '>I'),
    'header_length': (100, '>I'),
    'compression_type': (104, '>B'),
}

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
COMPAT_LAZY_REFCOUNTS = 1 << 0
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

L1E_OFFSET_MASK = 0x00fffffffffffe00
L1E_RESERVED_MASK = 0x7f000000000001ff
L2E_OFFSET_MASK = 0x00fffffffffffe00
L2E_STD_RESERVED_MASK = 0x3f000000000001fe
REFT_OFFSET_MASK = 0xfffffffffffffe00
REFT_RESERVED_MASK = 0x1ff
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xe2792aca
EXT_FEATURE_TABLE = 0x6803f857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537be77
EXT_DATA_FILE = 0x44415441

# snapshot table entry fixed part: name -> (offset in entry, fmt)
SNAPSHOT_FIELDS = {
    'l1_table_offset': (0, '>Q'),
    'l1_size': (8, '>I'),
    'id_str_size': (12, '>H'),
    'name_size': (14, '>H'),
    'date_sec': (16, '>I'),
    'date_nsec': (20, '>I'),
    'vm_clock_nsec': (24, '>Q'),
    'vm_state_size': (32, '>I'),
    'extra_data_size': (36, '>I'),
    # extra data (present only if extra_data_size covers it)
    'vm_state_size_large': (40, '>Q'),
    'disk_size': (48, '>Q'),
    'icount': (56, '>Q'),
}

# bitmaps header extension data: name -> (offset in ext data, fmt)
BITMAP_EXT_FIELDS = {
    'nb_bitmaps': (0, '>I'),
    'reserved': (4, '>I'),
    'bitmap_directory_size': (8, '>Q'),
    'bitmap_directory_offset': (16, '>Q'),
}

# bitmap directory entry: name -> (offset in entry, fmt)
BITMAP_DIR_FIELDS = {
    'bitmap_table_offset': (0, '>Q'),
    'bitmap_table_size': (8, '>I'),
    'flags': (12, '>I'),
    'type': (16, '>B'),
    'granularity_bits': (17, '>B'),
    'name_size': (18, '>H'),
    'extra_data_size': (20, '>I'),
}


def align_up(n, a):
    return (n + a - 1) // a * a


class Snapshot:
    def __init__(self, index, offset, raw_fixed, id_str, name, entry_size):
        self.index = index
        self.offset = offset          # byte offset of the entry in the file
        self.entry_size = entry_size  # including padding
        self.id_str = id_str
        self.name = name
        for k, (o, fmt) in SNAPSHOT_FIELDS.items():
            if o + struct.calcsize(fmt) <= len(raw_fixed):
                setattr(self, k, struct.unpack_from(fmt, raw_fixed, o)[0])

    def __repr__(self):
        return ('Snapshot(#%d id=%r name=%r l1=0x%x/%d extra=%d)'
                % (self.index, self.id_str, self.name, self.l1_table_offset,
                   self.l1_size, self.extra_data_size))


class BitmapDirEntry:
    def __init__(self, index, offset, fields, name, entry_size):
        self.index = index
        self.offset = offset
        self.entry_size = entry_size
        self.name = name
        for k, v in fields.items():
            setattr(self, k, v)

    def __repr__(self):
        return ('Bitmap(#%d %r table=0x%x/%d flags=0x%x)'
                % (self.index, self.name, self.bitmap_table_offset,
                   self.bitmap_table_size, self.flags))


class Qcow2:
    def __init__(self, path, writable=True):
        self.path = path
        self.f = open(path, 'r+b' if writable else 'rb')
        self.reload()

    # -- context manager -------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.f:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None

    # -- raw io ----------------------------------------------------------
    def pread(self, off, n):
        self.f.seek(off)
        data = self.f.read(n)
        return data + b'\0' * (n - len(data))

    def pwrite(self, off, data):
        self.f.seek(off)
        self.f.write(data)
        self.f.flush()

    def read_fmt(self, off, fmt):
        return struct.unpack(fmt, self.pread(off, struct.calcsize(fmt)))[0]

    def write_fmt(self, off, fmt, val):
        self.pwrite(off, struct.pack(fmt, val))

    def u64(self, off):
        return self.read_fmt(off, '>Q')

    def u32(self, off):
        return self.read_fmt(off, '>I')

    def u16(self, off):
        return self.read_fmt(off, '>H')

    def u8(self, off):
        return self.read_fmt(off, '>B')

    def set_u64(self, off, v):
        self.write_fmt(off, '>Q', v & 0xffffffffffffffff)

    def set_u32(self, off, v):
        self.write_fmt(off, '>I', v & 0xffffffff)

    def set_u16(self, off, v):
        self.write_fmt(off, '>H', v & 0xffff)

    def set_u8(self, off, v):
        self.write_fmt(off, '>B', v & 0xff)

    def file_size(self):
        self.f.seek(0, os.SEEK_END)
        return self.f.tell()

    def truncate(self, size):
        self.f.truncate(size)

    # -- header ----------------------------------------------------------
    def reload(self):
        h = {}
        raw = self.pread(0, 112)
        for k, (o, fmt) in HEADER_FIELDS.items():
            h[k] = struct.unpack_from(fmt, raw, o)[0]
        if h['version'] < 3:
            h['incompatible_features'] = 0
            h['compatible_features'] = 0
            h['autoclear_features'] = 0
            h['refcount_order'] = 4
            h['header_length'] = 72
            h['compression_type'] = 0
        elif h['header_length'] <= 104:
            h['compression_type'] = 0
        self.h = h
        for k, v in h.items():
            setattr(self, k, v)
        cb = h['cluster_bits']
        if not 9 <= cb <= 30:
            cb = 16  # garbage header: keep something usable for raw pokes
        self.cluster_bits = cb
        self.cs = 1 << cb
        self.extended_l2 = bool(h['incompatible_features'] & INCOMPAT_EXTL2)
        self.data_file = bool(h['incompatible_features'] & INCOMPAT_DATA_FILE)
        self.l2_entry_size = 16 if self.extended_l2 else 8
        self.l2_entries = self.cs // self.l2_entry_size
        order = min(h['refcount_order'], 6)
        self.refcount_bits = 1 << order
        self.rb_entries = self.cs * 8 // self.refcount_bits
        self._parse_extensions()

    def header(self, name):
        o, fmt = HEADER_FIELDS[name]
        return self.read_fmt(o, fmt)

    def set_header(self, name, value):
        o, fmt = HEADER_FIELDS[name]
        self.write_fmt(o, fmt, value)
        self.reload()

    def set_incompat_bit(self, bit, on=True):
        v = self.header('incompatible_features')
        v = v | (1 << bit) if on else v & ~(1 << bit)
        self.set_header('incompatible_features', v)

    def set_autoclear_bit(self, bit, on=True):
        v = self.header('autoclear_features')
        v = v | (1 << bit) if on else v & ~(1 << bit)
        self.set_header('autoclear_features', v)

    def _parse_extensions(self):
        """Fill self.extensions = [(magic, data_offset, length)]."""
        self.extensions = []
        off = self.h['header_length'] if self.h['version'] >= 3 else 72
        end = self.h['backing_file_offset'] or self.cs
        while off + 8 <= end:
            magic, length = struct.unpack('>II', self.pread(off, 8))
            if magic == EXT_END:
                break
            if length > end - off - 8:
                break
            self.extensions.append((magic, off + 8, length))
            off += 8 + align_up(length, 8)

    def find_extension(self, magic):
        for m, off, length in self.extensions:
            if m == magic:
                return off, length
        return None

    def ext_header_offset(self, magic):
        """Byte offset of the 8-byte (magic, len) header of an extension."""
        e = self.find_extension(magic)
        return None if e is None else e[0] - 8

    def set_extension_length(self, magic, length):
        off = self.ext_header_offset(magic)
        self.set_u32(off + 4, length)
        self.reload()

    def add_raw_extension(self, magic, data):
        """Append an extension just before the END marker."""
        off = self.h['header_length'] if self.h['version'] >= 3 else 72
        for m, doff, length in self.extensions:
            off = doff + align_up(length, 8)
        blob = struct.pack('>II', magic, len(data)) + data
        blob += b'\0' * (align_up(len(blob), 8) - len(blob))
        self.pwrite(off, blob + b'\0' * 8)
        self.reload()

    # -- L1 --------------------------------------------------------------
    def l1_entry(self, i, l1_offset=None):
        base = self.l1_table_offset if l1_offset is None else l1_offset
        return self.u64(base + 8 * i)

    def set_l1(self, i, value, l1_offset=None):
        base = self.l1_table_offset if l1_offset is None else l1_offset
        self.set_u64(base + 8 * i, value)

    def l1_table(self, l1_offset=None, l1_size=None):
        base = self.l1_table_offset if l1_offset is None else l1_offset
        n = self.l1_size if l1_size is None else l1_size
        raw = self.pread(base, 8 * n)
        return list(struct.unpack('>%dQ' % n, raw))

    def l2_offset(self, l1_index, l1_offset=None):
        return self.l1_entry(l1_index, l1_offset) & L1E_OFFSET_MASK

    # -- L2 --------------------------------------------------------------
    def l2_entry(self, l2_offset, i):
        """Returns (word, bitmap); bitmap is None without extended L2."""
        off = l2_offset + self.l2_entry_size * i
        word = self.u64(off)
        bmp = self.u64(off + 8) if self.extended_l2 else None
        return word, bmp

    def set_l2(self, l2_offset, i, value=None, bitmap=None):
        off = l2_offset + self.l2_entry_size * i
        if value is not None:
            self.set_u64(off, value)
        if bitmap is not None:
            assert self.extended_l2, 'bitmap needs extended L2'
            self.set_u64(off + 8, bitmap)

    def l2_table(self, l2_offset):
        return [self.l2_entry(l2_offset, i) for i in range(self.l2_entries)]

    def guest_index(self, guest_offset):
        vc = guest_offset // self.cs
        return vc // self.l2_entries, vc % self.l2_entries

    def l2_location_for_guest(self, guest_offset, l1_offset=None):
        l1i, l2i = self.guest_index(guest_offset)
        l2 = self.l2_offset(l1i, l1_offset)
        if l2 == 0:
            raise ValueError('guest offset 0x%x has no L2 table' % guest_offset)
        return l2, l2i

    def l2_entry_for_guest(self, guest_offset, l1_offset=None):
        l2, i = self.l2_location_for_guest(guest_offset, l1_offset)
        return self.l2_entry(l2, i)

    def set_l2_for_guest(self, guest_offset, value=None, bitmap=None, l1_offset=None):
        l2, i = self.l2_location_for_guest(guest_offset, l1_offset)
        self.set_l2(l2, i, value, bitmap)

    def host_offset(self, guest_offset):
        """Host offset (cluster) of a normal guest cluster."""
        word, _ = self.l2_entry_for_guest(guest_offset)
        assert not word & OFLAG_COMPRESSED
        return word & L2E_OFFSET_MASK

    def host_cluster(self, guest_offset):
        return self.host_offset(guest_offset) >> self.cluster_bits

    # compressed descriptors (section 1.6)
    def compressed_masks(self):
        x = 62 - (self.cluster_bits - 8)
        return x, (1 << x) - 1, (1 << (self.cluster_bits - 8)) - 1

    def decode_compressed(self, word):
        x, off_mask, cnt_mask = self.compressed_masks()
        coffset = word & off_mask
        nb_sectors = ((word >> x) & cnt_mask) + 1
        csize = nb_sectors * 512 - (coffset & 511)
        return coffset, csize

    def encode_compressed(self, coffset, nb_sectors, copied=False):
        x, off_mask, cnt_mask = self.compressed_masks()
        v = OFLAG_COMPRESSED | (coffset & off_mask) | (((nb_sectors - 1) & cnt_mask) << x)
        if copied:
            v |= OFLAG_COPIED
        return v

    # -- refcounts -------------------------------------------------------
    def reftable_size(self):
        return self.refcount_table_clusters * self.cs // 8

    def rt_entry(self, i):
        return self.u64(self.refcount_table_offset + 8 * i)

    def set_rt(self, i, value):
        self.set_u64(self.refcount_table_offset + 8 * i, value)

    def _refcount_location(self, cluster):
        rti = cluster // self.rb_entries
        bi = cluster % self.rb_entries
        if rti >= self.reftable_size():
            raise ValueError('cluster %d beyond reftable' % cluster)
        rb = self.rt_entry(rti) & REFT_OFFSET_MASK
        if rb == 0:
            raise ValueError('cluster %d: refblock %d not allocated' % (cluster, rti))
        return rb, bi

    def get_refcount(self, cluster):
        try:
            rb, bi = self._refcount_location(cluster)
        except ValueError:
            return 0
        w = self.refcount_bits
        if w < 8:
            per = 8 // w
            byte = self.u8(rb + bi // per)
            return (byte >> ((bi % per) * w)) & ((1 << w) - 1)
        fmt = {8: '>B', 16: '>H', 32: '>I', 64: '>Q'}[w]
        return self.read_fmt(rb + bi * (w // 8), fmt)

    def set_refcount(self, cluster, value):
        rb, bi = self._refcount_location(cluster)
        w = self.refcount_bits
        assert 0 <= value < (1 << w), 'refcount %d does not fit %d bits' % (value, w)
        if w < 8:
            per = 8 // w
            off = rb + bi // per
            shift = (bi % per) * w
            mask = ((1 << w) - 1) << shift
            byte = (self.u8(off) & ~mask) | (value << shift)
            self.set_u8(off, byte)
            return
        fmt = {8: '>B', 16: '>H', 32: '>I', 64: '>Q'}[w]
        self.write_fmt(rb + bi * (w // 8), fmt, value)

    def refcounts(self, n=None):
        n = (self.file_size() + self.cs - 1) // self.cs if n is None else n
        return [self.get_refcount(c) for c in range(n)]

    # -- snapshots -------------------------------------------------------
    def snapshots(self):
        out = []
        off = self.snapshots_offset
        for i in range(self.nb_snapshots):
            fixed = self.pread(off, 40)
            extra = struct.unpack_from('>I', fixed, 36)[0]
            id_size, name_size = struct.unpack_from('>HH', fixed, 12)
            raw = self.pread(off, 40 + min(extra, 24))
            fixed = raw[:40] + raw[40:40 + extra]
            p = off + 40 + extra
            id_str = self.pread(p, id_size).decode('latin-1')
            name = self.pread(p + id_size, name_size).decode('latin-1')
            size = align_up(40 + extra + id_size + name_size, 8)
            out.append(Snapshot(i, off, fixed, id_str, name, size))
            off += size
        return out

    def snapshot_field_offset(self, index, field):
        sn = self.snapshots()[index]
        return sn.offset + SNAPSHOT_FIELDS[field][0]

    def set_snapshot_field(self, index, field, value):
        sn = self.snapshots()[index]
        o, fmt = SNAPSHOT_FIELDS[field]
        self.write_fmt(sn.offset + o, fmt, value)

    def snapshot_table_size(self):
        sns = self.snapshots()
        if not sns:
            return 0
        last = sns[-1]
        return last.offset + last.entry_size - self.snapshots_offset

    # -- bitmaps ---------------------------------------------------------
    def bitmap_ext(self):
        e = self.find_extension(EXT_BITMAPS)
        if e is None:
            return None
        off, _ = e
        return {k: self.read_fmt(off + o, fmt) for k, (o, fmt) in BITMAP_EXT_FIELDS.items()}

    def set_bitmap_ext_field(self, field, value):
        off, _ = self.find_extension(EXT_BITMAPS)
        o, fmt = BITMAP_EXT_FIELDS[field]
        self.write_fmt(off + o, fmt, value)

    def bitmaps(self):
        ext = self.bitmap_ext()
        if not ext:
            return []
        out = []
        off = ext['bitmap_directory_offset']
        for i in range(ext['nb_bitmaps']):
            raw = self.pread(off, 24)
            fields = {k: struct.unpack_from(fmt, raw, o)[0] for k, (o, fmt) in BITMAP_DIR_FIELDS.items()}
            name = self.pread(off + 24 + fields['extra_data_size'], fields['name_size']).decode('latin-1')
            size = align_up(24 + fields['extra_data_size'] + fields['name_size'], 8)
            out.append(BitmapDirEntry(i, off, fields, name, size))
            off += size
        return out

    def set_bitmap_dir_field(self, index, field, value):
        bm = self.bitmaps()[index]
        o, fmt = BITMAP_DIR_FIELDS[field]
        self.write_fmt(bm.offset + o, fmt, value)

    def bitmap_table(self, index):
        bm = self.bitmaps()[index]
        return [self.u64(bm.bitmap_table_offset + 8 * i) for i in range(bm.bitmap_table_size)]

    def set_bitmap_table_entry(self, index, i, value):
        bm = self.bitmaps()[index]
        self.set_u64(bm.bitmap_table_offset + 8 * i, value)

    # -- helpers ---------------------------------------------------------
    def cluster_offset(self, n):
        return n << self.cluster_bits

    def append_cluster(self, data=b''):
        """Append one zero-padded cluster at a cluster-aligned EOF; returns its offset.
        The refcount is NOT updated."""
        end = align_up(self.file_size(), self.cs)
        self.pwrite(end, data + b'\0' * (self.cs - len(data)))
        return end

    def describe(self):
        lines = ['version=%d cs=%d size=%d l1=0x%x/%d rt=0x%x/%d rb_bits=%d snaps=%d@0x%x '
                 'incompat=0x%x compat=0x%x autoclear=0x%x'
                 % (self.version, self.cs, self.size, self.l1_table_offset, self.l1_size,
                    self.refcount_table_offset, self.refcount_table_clusters,
                    self.refcount_bits, self.nb_snapshots, self.snapshots_offset,
                    self.incompatible_features, self.compatible_features,
                    self.autoclear_features)]
        for i, e in enumerate(self.l1_table()):
            if e:
                lines.append('L1[%d]=0x%x' % (i, e))
                l2 = e & L1E_OFFSET_MASK
                for j, (w, b) in enumerate(self.l2_table(l2)):
                    if w or b:
                        lines.append('  L2[%d]=0x%x%s' % (j, w, '' if b is None else ' bmp=0x%x' % b))
        lines.append('refcounts=%r' % self.refcounts())
        return '\n'.join(lines)


def open_image(path):
    return Qcow2(path)


if __name__ == '__main__':
    import sys
    with Qcow2(sys.argv[1], writable=False) as q:
        print(q.describe())
        for s in q.snapshots():
            print(s)
        for b in q.bitmaps():
            print(b)
