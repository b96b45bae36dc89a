"""The overlap guard of `check -r all` (repair/overlap.c; issue 10 section 1).

* snap_l1_oversize_data_loss.sh: a snapshot L1 table (l1_size 0x200000 at the active L1)
  spans the active L2 table and guest data. qemu-img's overlap check refuses the first fix
  ("overlaps with inactive L1 table"), rc 1, corrupt bit set, data intact. qimg: the same
  lines and rc, the same bytes on disk, plus which table is garbage.
* the same with an oversized *active* L1 (l1_size 0x400000).
* snap_l1_into_l2.sh: a snapshot L1 pointing at the active L2 table. qemu-img "repairs"
  8192 words of guest data into zero entries; qimg refuses (guest-data class), keeps every
  byte of the active image, names the snapshot whose L1 table is garbage.
* A property test: seeded random damage to the metadata of qemu-img-made images; after
  `qimg check -r all` no cluster that a surviving L2 entry maps as guest data (judged on the
  image before the repair) has changed.
"""

import os
import random
import shutil
import struct
import subprocess

from qcow2poke import Qcow2

L1E_MASK = 0x00fffffffffffe00
INCOMPAT_CORRUPT = 2


def _run(*cmd, cwd=None):
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def _qimg():
    return os.environ.get('QIMG') or os.path.join(os.path.dirname(__file__), '..', '..',
                                                  'build', 'qimg')


def _tool_lines(err):
    """stderr without the program-prefixed lines (qemu-img: / qimg:)."""
    return [l for l in err.splitlines() if not l.startswith(('qemu-img:', 'qimg:'))]


def _incompat(path):
    with open(path, 'rb') as f:
        f.seek(72)
        return struct.unpack('>Q', f.read(8))[0]


def _both(tmp_path, build):
    """Build the image with build(path), keep a raw copy of its guest data, then repair a
    copy with each tool. Returns (orig bytes, (rc, out, err) qemu, (rc, out, err) qimg)."""
    d = str(tmp_path)
    img = os.path.join(d, 'img.qcow2')
    build(img)
    rc, _, err = _run('qemu-img', 'convert', '-U', '-O', 'raw', img, os.path.join(d, 'pre.raw'))
    assert rc == 0, err
    shutil.copyfile(img, os.path.join(d, 'q.qcow2'))
    shutil.copyfile(img, os.path.join(d, 'i.qcow2'))
    rq = _run('qemu-img', 'check', '-r', 'all', 'q.qcow2', cwd=d)
    ri = _run(_qimg(), 'check', '-r', 'all', 'i.qcow2', cwd=d)
    with open(img, 'rb') as f:
        orig = f.read()
    return orig, rq, ri


def _same_guest(d, name):
    rc, out, err = _run('qemu-img', 'compare', '-U', 'pre.raw', name, cwd=d)
    return rc == 0, out + err


def _make_data_image(path):
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, '64M'], check=True)
    subprocess.run(['qemu-io', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x33 8M 64k', path],
                   check=True, stdout=subprocess.DEVNULL)


def _snap_l1_oversize(path):
    """snap_l1_oversize_data_loss.sh: a snapshot entry whose L1 table starts at the active
    L1 and has 0x200000 entries (16 MiB, within qemu's limit)."""
    _make_data_image(path)
    with open(path, 'r+b') as f:
        size = os.path.getsize(path)
        off = (size + 65535) // 65536 * 65536
        e = struct.pack('>QIHHIIQII', 0x30000, 0x200000, 1, 1, 0, 0, 0, 0, 0) + b'1x'
        e += b'\0' * ((-len(e)) % 8)
        f.seek(off)
        f.write(e)
        f.seek(60)
        f.write(struct.pack('>IQ', 1, off))


def _active_l1_oversize(path):
    _make_data_image(path)
    with open(path, 'r+b') as f:
        f.seek(36)
        f.write(struct.pack('>I', 0x400000))


def _snap_l1_into_l2(path):
    """snap_l1_into_l2.sh: snapshot 0's l1_table_offset := the active L2 table."""
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, '64M'], check=True)
    subprocess.run(['qemu-io', '-c', 'write -P 0x33 0 64k', path], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(['qemu-img', 'snapshot', '-c', 's1', path], check=True)
    with Qcow2(path) as q:
        l2 = q.l1_entry(0) & L1E_MASK
        q.set_snapshot_field(0, 'l1_table_offset', l2)


def _assert_refused_like_qemu(tmp_path, orig, rq, ri, klass):
    d = str(tmp_path)
    marking = ('qcow2: Marking image as corrupt: Preventing invalid write on metadata '
               '(overlaps with %s); further corruption events will be suppressed' % klass)
    # qemu-img: refused, rc 1, data intact, corrupt bit set (and nothing else changed)
    assert rq[0] == 1, rq[2][-2000:]
    assert marking in rq[2].splitlines()
    assert rq[2].splitlines()[-1] == 'qemu-img: Check failed: Input/output error'
    # qimg: byte for byte the same diagnostics and exit code ...
    assert ri[0] == 1, ri[2][-2000:]
    assert _tool_lines(ri[2]) == _tool_lines(rq[2])
    assert ri[2].splitlines()[-1] == 'qimg: Check failed: Input/output error'
    assert ri[1] == rq[1]
    # ... and the same file: the original with only the corrupt bit set
    with open(os.path.join(d, 'i.qcow2'), 'rb') as f:
        got_i = f.read()
    with open(os.path.join(d, 'q.qcow2'), 'rb') as f:
        got_q = f.read()
    assert got_i == got_q
    assert _incompat(os.path.join(d, 'i.qcow2')) == (struct.unpack('>Q', orig[72:80])[0]
                                                     | INCOMPAT_CORRUPT)
    assert got_i[:72] == orig[:72] and got_i[80:] == orig[80:]
    for name in ('q.qcow2', 'i.qcow2'):
        same, msg = _same_guest(d, name)
        assert same, (name, msg)


def test_snap_l1_oversize_refused_like_qemu(tmp_path):
    orig, rq, ri = _both(tmp_path, _snap_l1_oversize)
    _assert_refused_like_qemu(tmp_path, orig, rq, ri, 'inactive L1 table')
    # better than qemu: which table is garbage and what -r all would have to drop
    expl = [l for l in ri[2].splitlines() if l.startswith('qimg: snapshot 1 (x)')]
    assert len(expl) == 1, ri[2][-3000:]
    assert 'its L1 table at 0x30000 (2097152 entries) lies on the active L1 table' in expl[0]
    assert 'guest data clusters of the active image' in expl[0]
    assert '-r all would have to discard this snapshot' in expl[0]


def test_active_l1_oversize_refused_like_qemu(tmp_path):
    orig, rq, ri = _both(tmp_path, _active_l1_oversize)
    _assert_refused_like_qemu(tmp_path, orig, rq, ri, 'active L1 table')
    expl = [l for l in ri[2].splitlines() if l.startswith('qimg: the active L1 table')]
    assert len(expl) == 1, ri[2][-3000:]
    assert 'from entry 8192 on' in expl[0] and 'no guest data is lost' in expl[0], expl


def test_snap_l1_into_l2_keeps_active_data(tmp_path):
    d = str(tmp_path)
    orig, rq, ri = _both(tmp_path, _snap_l1_into_l2)
    # qemu-img overwrites the active image's data with zero-cluster entries
    assert rq[2].count('Repairing offset=33333333333200') == 8192
    assert not _same_guest(d, 'q.qcow2')[0]
    # qimg refuses the first such write: rc 1, active data intact, corrupt bit set
    assert ri[0] == 1, ri[2][-2000:]
    lines = ri[2].splitlines()
    assert lines[:3] == [
        'ERROR found l2 entry with reserved bits set: 3333333333333333',
        'Repairing offset=33333333333200: Preallocated cluster is not properly aligned; '
        'L2 entry corrupted.',
        'qcow2: Marking image as corrupt: Preventing invalid write on guest data (cluster '
        '0x50000: it holds guest offset 0x0 of the active image); further corruption events '
        'will be suppressed'], lines
    assert lines[3] == 'ERROR: Overlap check failed'
    assert lines[4].startswith('qimg: snapshot 1 (s1): its L1 table at 0x40000 (1 entries) '
                               'lies on 1 active L2 table, so it is not a real L1 table'), lines
    assert lines[-1] == 'qimg: Check failed: Input/output error'
    same, msg = _same_guest(d, 'i.qcow2')
    assert same, msg
    with open(os.path.join(d, 'i.qcow2'), 'rb') as f:
        got = f.read()
    assert got[:72] == orig[:72] and got[80:] == orig[80:]
    assert _incompat(os.path.join(d, 'i.qcow2')) & INCOMPAT_CORRUPT


def test_refusal_journaled_and_dry_run_writes_nothing(tmp_path):
    """The corrupt bit that a refusal sets is journaled (undo restores the file), and a dry
    run of the same repair writes nothing."""
    d = str(tmp_path)
    img = os.path.join(d, 'img.qcow2')
    _snap_l1_into_l2(img)
    with open(img, 'rb') as f:
        orig = f.read()
    rc, out, err = _run(_qimg(), 'check', '-r', 'all', '--dry-run', 'img.qcow2', cwd=d)
    assert rc == 1 and 'Preventing invalid write on guest data' in err, err
    with open(img, 'rb') as f:
        assert f.read() == orig
    rc, out, err = _run(_qimg(), 'check', '-r', 'all', '--journal', 'j.db', 'img.qcow2', cwd=d)
    assert rc == 1, err
    assert _incompat(img) & INCOMPAT_CORRUPT
    rc, out, err = _run(_qimg(), 'undo', 'j.db', 'img.qcow2', cwd=d)
    assert rc == 0, out + err
    with open(img, 'rb') as f:
        assert f.read() == orig


# --- the property: a repair never writes a guest data cluster ----------------------------

def _guest_clusters(path, snaps):
    """Clusters that L2 entries of the active L1 and of the given snapshots' L1 tables map
    as guest data, read from the image at path (aligned NORMAL/ZERO_ALLOC entries and
    compressed ranges, inside the file). snaps: [(l1_offset, l1_size)]."""
    out = set()
    with Qcow2(path, writable=False) as q:
        cs, cb, fsize = q.cs, q.cluster_bits, q.file_size()
        if q.data_file:
            return out
        tables = [(q.l1_table_offset, q.l1_size)] + list(snaps)
        cmask = (1 << (62 - (cb - 8))) - 1
        seen = set()
        for l1off, l1n in tables:
            n = max(0, min(l1n, (fsize - l1off) // 8 if l1off < fsize else 0, 1 << 22))
            for l1e in (q.l1_table(l1off, n) if n else []):
                l2 = l1e & L1E_MASK
                if not l2 or l2 >= fsize or l2 in seen:
                    continue
                seen.add(l2)
                raw = q.pread(l2, cs).ljust(cs, b'\0')
                for i in range(q.l2_entries):
                    e = struct.unpack_from('>Q', raw, i * q.l2_entry_size)[0]
                    if not e:
                        continue
                    if e & (1 << 62):   # compressed
                        host = e & cmask
                        nsec = ((e >> (62 - (cb - 8))) & ((1 << (cb - 8)) - 1)) + 1
                        end = (host & ~511) + nsec * 512
                        out.update(range(host >> cb, min((end - 1) >> cb, fsize >> cb) + 1))
                        continue
                    off = e & L1E_MASK
                    if off and not off & (cs - 1) and off < fsize:
                        out.add(off >> cb)
    return out


def _snapshots(path, cap=1000):
    """[(l1 offset, l1 size, id, disk size or None)] of the first cap table entries (a
    damaged nb_snapshots can say 4 billion)."""
    out = []
    with Qcow2(path, writable=False) as q:
        off, fsize = q.snapshots_offset, q.file_size()
        for _ in range(min(q.nb_snapshots, cap)):
            off = (off + 7) & ~7
            if off + 40 > fsize:
                break
            l1, l1n, ids, names = struct.unpack('>QIHH', q.pread(off, 16))
            extra = struct.unpack('>I', q.pread(off + 36, 4))[0]
            disk = struct.unpack('>Q', q.pread(off + 48, 8))[0] if extra >= 16 else None
            ident = q.pread(off + 40 + extra, ids)
            out.append((l1, l1n, ident, disk))
            off += 40 + extra + ids + names
    return out


def _surviving_snapshots(pre, post):
    """The pre-repair snapshots (l1 offset, entries to read) that the repaired table still
    lists (same L1 offset and id), with an aligned L1 table."""
    with Qcow2(pre, writable=False) as q:
        cs, span, size = q.cs, q.cs * q.l2_entries, q.size
    keep = {(l1, ident) for l1, _, ident, _ in _snapshots(post)}
    out = []
    for l1, n, ident, disk in _snapshots(pre):
        if (l1, ident) not in keep or l1 & (cs - 1):
            continue
        if n > 1 << 22:   # too large: qemu's check skips it; read what its disk needs
            n = min(n, ((disk if disk is not None else size) + span - 1) // span)
        out.append((l1, n))
    return out


def _changed(pre, post, cs, clusters):
    """Which of the given clusters differ between the two files (zeros past EOF)."""
    out = []
    with open(pre, 'rb') as fa, open(post, 'rb') as fb:
        for k in sorted(clusters):
            fa.seek(k * cs)
            fb.seek(k * cs)
            if fa.read(cs).ljust(cs, b'\0') != fb.read(cs).ljust(cs, b'\0'):
                out.append(k)
    return out


def _bases(d):
    """A few qemu-img-made images: data + internal snapshots, a 4 KiB-cluster image with
    several L2 tables, a compressed v2 image."""
    imgs = []
    p = os.path.join(d, 'base_snap.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', p, '64M'], check=True)
    subprocess.run(['qemu-io', '-c', 'write -P 0x33 0 256k', '-c', 'write -P 0x44 8M 64k', p],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(['qemu-img', 'snapshot', '-c', 's1', p], check=True)
    subprocess.run(['qemu-io', '-c', 'write -P 0x55 64k 64k', '-c', 'write -P 0x66 32M 128k', p],
                   check=True, stdout=subprocess.DEVNULL)
    imgs.append(p)
    p = os.path.join(d, 'base_4k.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', p,
                    '16M'], check=True)
    subprocess.run(['qemu-io', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0x22 4M 32k',
                    '-c', 'write -P 0x23 12M 8k', p], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(['qemu-img', 'snapshot', '-c', 'a', p], check=True)
    subprocess.run(['qemu-io', '-c', 'write -P 0x24 4M 4k', p], check=True,
                   stdout=subprocess.DEVNULL)
    imgs.append(p)
    src = os.path.join(d, 'src.raw')
    with open(src, 'wb') as f:
        for i in range(64):
            f.write(bytes([i + 1]) * 8192 + b'\0' * 8192)
    p = os.path.join(d, 'base_comp.qcow2')
    subprocess.run(['qemu-img', 'convert', '-c', '-O', 'qcow2', '-o', 'compat=0.10', src, p],
                   check=True)
    imgs.append(p)
    return imgs


def _metadata_words(q):
    """File offsets of 8-byte metadata words worth damaging, by kind."""
    words = {'header': [24, 32, 40, 48, 56, 60, 64]}
    l1 = [q.l1_table_offset + 8 * i for i in range(min(q.l1_size, 8))]
    words['l1'] = l1
    l2s = [e & L1E_MASK for e in q.l1_table(None, min(q.l1_size, 8)) if e & L1E_MASK]
    words['l2'] = [l2 + q.l2_entry_size * i for l2 in l2s for i in range(0, q.l2_entries, 7)
                   if q.u64(l2 + q.l2_entry_size * i)]
    words['reftable'] = [q.refcount_table_offset + 8 * i for i in range(4)]
    sns = q.snapshots()
    words['snapshot'] = [s.offset + o for s in sns for o in (0, 8)]
    words['snap_l1'] = [s.l1_table_offset + 8 * i for s in sns for i in range(min(s.l1_size, 4))]
    return words


def _damage(rng, path):
    """One to three seeded mutations of metadata words: random values, bit flips, and
    pointers at other clusters of the file (data, tables), the damage that makes tables
    overlap. Returns a description."""
    did = []
    with Qcow2(path) as q:
        words = _metadata_words(q)
        kinds = [k for k, v in words.items() if v]
        nclusters = max(1, q.file_size() // q.cs)
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(kinds)
            off = rng.choice(words[kind])
            old = q.u64(off)
            how = rng.randrange(6)
            if how == 0:
                new = old ^ (1 << rng.randrange(64))
            elif how == 1:
                new = rng.randrange(nclusters) * q.cs | (old & (0xff << 56))
            elif how == 2:   # unaligned pointer (a preallocated zero cluster's shape)
                new = (rng.randrange(nclusters) * q.cs + 512 * rng.randrange(1, 8)) | 1
            elif how == 3:
                new = rng.getrandbits(64)
            elif how == 4:   # a size field: small or huge (l1_size, nb_snapshots, ...)
                new = (old & 0xffffffff00000000) | rng.choice([0, 1, 2, 0x10000, 0x200000,
                                                               0x400000, 0xffffffff])
            else:
                new = old & ~(1 << 63) if old >> 63 else old | (1 << 63)
            q.set_u64(off, new)
            did.append('%s@0x%x:%x->%x' % (kind, off, old, new))
    return ' '.join(did)


def test_repair_never_writes_guest_data(tmp_path):
    d = str(tmp_path)
    rng = random.Random(20240610)
    bases = _bases(d)
    n_cases = 0
    for base in bases:
        for i in range(100):
            pre = os.path.join(d, 'pre.qcow2')
            img = os.path.join(d, 'img.qcow2')
            shutil.copyfile(base, pre)
            what = _damage(rng, pre)
            shutil.copyfile(pre, img)
            rc, out, err = _run(_qimg(), 'check', '-r', 'all', 'img.qcow2', cwd=d)
            assert rc in (0, 1, 2, 3), (what, rc, err[-2000:])
            with Qcow2(pre, writable=False) as q:
                cs = q.cs
            data = _guest_clusters(pre, _surviving_snapshots(pre, img)) - {0}  # header: header
            bad = _changed(pre, img, cs, data)
            assert not bad, ('%s: wrote guest data clusters %s\n%s' %
                             (what, [hex(k * cs) for k in bad[:8]], err[-3000:]))
            n_cases += 1
    assert n_cases == 3 * 100


def _l2_entry_maps_its_table(path):
    """An active L2 entry (guest offset 8 MiB) that maps its own L2 table as data, with
    COPIED set: the table's cluster has two owners (diffcheck seed 13, plain64k-13-172)."""
    _make_data_image(path)
    with Qcow2(path) as q:
        l2 = q.l1_entry(0) & L1E_MASK
        q.set_l2(l2, (8 << 20) // q.cs, l2 | (1 << 63))


def test_cluster_with_two_owners_refused(tmp_path):
    d = str(tmp_path)
    orig, rq, ri = _both(tmp_path, _l2_entry_maps_its_table)
    # qemu-img: raises the table's refcount to 2 and clears COPIED in the table itself,
    # which is the guest data of 8 MiB: the guest reads other bytes there afterwards
    assert rq[0] == 0, rq
    assert 'Repairing OFLAG_COPIED data cluster: l2_entry=8000000000040000 refcount=2' in rq[2], rq
    assert not _same_guest(d, 'q.qcow2')[0]
    # qimg: refuses the L2 table write (guest data), says which two owners collide
    assert ri[0] == 1, ri
    assert ('qcow2: Marking image as corrupt: Preventing invalid write on guest data '
            '(cluster 0x40000: it holds guest offset 0x800000 of the active image); further '
            'corruption events will be suppressed') in ri[2].splitlines(), ri[2]
    assert ('ERROR: Could not write L2 table; metadata overlap check failed: Input/output '
            'error') in ri[2].splitlines(), ri[2]
    assert ('qimg: cluster 0x40000 is an L2 table being fixed and guest data (it holds guest '
            'offset 0x800000 of the active image): one of the two is garbage') in ri[2], ri[2]
    assert ri[2].splitlines()[-1] == 'qimg: Check failed: Input/output error'
    same, msg = _same_guest(d, 'i.qcow2')
    assert same, msg
    with open(os.path.join(d, 'i.qcow2'), 'rb') as f:
        got = f.read()
    assert got[:72] == orig[:72] and got[80:] == orig[80:]
