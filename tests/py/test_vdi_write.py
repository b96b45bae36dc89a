"""VDI writes (src/block/vdi_write.c) against the real qemu-io 7.2.

Each case runs one qemu-io script on two copies of the same qemu-img-created VDI image, one
with the real qemu-io and one with qimg-io (through a symlink named qemu-io, so message
prefixes agree), and asserts: the same exit status, stdout (timings filtered as iotests do)
and stderr; identical file bytes (VDI writes are deterministic in qemu: new blocks are
appended in order, whole, zero-filled; header and map rewritten from memory); the same
`qemu-img map --output=json`; `qemu-img check` clean on both.

qemu's VDI has no write_zeroes: `write -z` (with or without -u) writes zero buffers and so
allocates blocks, as qimg does. It has no truncate either: `truncate` fails with "Image
format driver does not support resize", exit 1, image unchanged.

The cut cases kill qimg-io after each of its file writes (QIMG_FAULT_AFTER_WRITES=N): the
real qemu-img check must find the image clean and every guest byte must read as in a state
qemu-io reaches after a prefix of the workload (test_write_faults' rules). qimg writes the
header and the map sectors in one write when the map follows the header and the span is at
most 1 MiB (every image up to 128 GiB); beyond that it keeps qemu's two writes (header,
then map), and a cut between them leaves exactly what a cut qemu leaves: the header counts
one more block than the map names, which qemu's check reports as "allocated blocks
mismatch" (test_cut_between_header_and_map builds qemu's cut state and compares bytes).
"""

import os
import random
import shutil

import pytest

import qemu
import writediff
from writediff import KIB, MIB
import test_write_faults as twf


@pytest.fixture(scope='module', autouse=True)
def qimg_io_binary():
    if not os.access(writediff.QIMG_IO, os.X_OK):
        pytest.fail('qimg-io not found at %s (build it with `make`)' % writediff.QIMG_IO)


def _vdi(size, *opts, writes=()):
    def build(d):
        writediff._create(d, 'img.vdi', size, *opts, fmt='vdi')
        if writes:
            writediff._io(d, 'img.vdi', *writes, fmt='vdi')
    return build


def _layout(name, size, *opts, writes=()):
    return writediff.Layout('vdi-' + name, _vdi(size, *opts, writes=writes), size,
                            cluster=MIB, fmt='vdi', image='img.vdi', compressed=False)


# sizes not a multiple of the 1 MiB block; one with data written by qemu-io already; one
# large enough that the map spans more than 1 MiB (header and map written separately)
LAYOUTS = {
    'dyn-empty': _layout('dyn-empty', 5000 * KIB),
    'dyn-data': _layout('dyn-data', 7 * MIB + 512,
                        writes=('write -P 0x5a 1M 100k', 'write -P 0x5b 5M 3k')),
    'static': _layout('static', 5000 * KIB, 'static=on'),
    'big': _layout('big', 300 << 30),
}


def scripts(layout):
    size = layout.size
    s = {
        'sequential': ['write -P 0x11 0 1M', 'write -P 0x12 1M 1M', 'write -P 0x13 2M 512k',
                       'read -P 0x12 1M 1M'],
        # allocations out of guest order, one request spanning three blocks
        'spanning': ['write -P 0x21 %d 3000' % (size - 3000), 'write -P 0x22 700k 2500k',
                     'write -P 0x23 100 1', 'read -P 0x22 1M 1M'],
        'overlapping': ['write -P 0x31 1M 200k', 'write -P 0x32 1100k 200k',
                        'write -P 0x33 900k 300k', 'read -P 0x33 1M 100k',
                        'read -P 0x32 1200k 100k'],
        'zeroes': ['write -P 0x41 0 64k', 'write -z 32k 64k', 'write -z -u 2M 100k',
                   'write -z %d 512' % (size - 512), 'read -P 0 32k 64k', 'flush'],
        'truncate': ['write -P 0x51 0 4k', 'truncate %d' % (size + MIB), 'truncate 1M',
                     'write -P 0x52 4k 4k'],
        'random': random_script(layout, 7),
        'random2': random_script(layout, 23),
        # qemu's VDI has neither discard (a no-op that reports success) nor compressed writes
        'unsupported': ['write -P 0x81 0 4k', 'discard 0 1M', 'write -c -P 0x82 1M 1M',
                        'read -P 0x81 0 4k'],
    }
    if layout.size > 200 * MIB:
        s['far'] = ['write -P 0x61 %d 1M' % (size - 3 * MIB), 'write -P 0x62 200M 4k',
                    'write -P 0x63 0 512', 'write -z %d 2M' % (size // 2)]
    return s


def random_script(layout, seed, n=14):
    """Writes (pattern, zeroes, unaligned) and reads at random places, a flush."""
    rng = random.Random(seed)
    span = min(layout.size, 12 * MIB)
    out = []
    for i in range(n):
        length = rng.choice([1, 512, 4096, 65536, 300000, MIB, 2 * MIB + 512])
        length = min(length, span)
        off = rng.randrange(0, span - length + 1)
        if rng.random() < 0.5:
            off -= off % 512
        kind = rng.random()
        if kind < 0.6:
            out.append('write -P 0x%02x %d %d' % (0x70 + i, off, length))
        elif kind < 0.8:
            out.append('write -z %d %d' % (off, length))
        elif kind < 0.9:
            out.append('read %d %d' % (off, length))
        else:
            out.append('flush')
    return out


CASES = [(ln, sn) for ln in LAYOUTS for sn in scripts(LAYOUTS[ln])]


def read_file(d, layout):
    with open(os.path.join(d, layout.image), 'rb') as f:
        return f.read()


@pytest.mark.parametrize('lname,sname', CASES, ids=['%s-%s' % c for c in CASES])
def test_differential(tmp_path, lname, sname):
    layout = LAYOUTS[lname]
    script = scripts(layout)[sname]
    q = writediff.run_tool('qemu', layout, script, str(tmp_path))
    m = writediff.run_tool('qimg', layout, script, str(tmp_path))
    assert (m[0], m[1], m[2]) == (q[0], q[1], q[2]), 'qemu-io:\n%s%s\nqimg-io:\n%s%s' % (
        q[1], q[2], m[1], m[2])
    a, b = read_file(q[3], layout), read_file(m[3], layout)
    assert len(a) == len(b) and a == b, 'file bytes differ (sizes %d, %d)' % (len(a), len(b))
    assert writediff.img_map(layout, m[3]) == writediff.img_map(layout, q[3])
    for d in (q[3], m[3]):
        rc, j, text = writediff.img_check(layout, d)
        assert rc == 0 and not j.get('corruptions') and not j.get('leaks'), text


def test_truncate_message(tmp_path):
    """The exact qemu-io lines (both tools through writediff's alias run the same name)."""
    layout = LAYOUTS['dyn-empty']
    rc, out, err, d = writediff.run_tool('qimg', layout, ['truncate 8M'], str(tmp_path))
    assert rc == 1 and out == ''
    assert err == 'qemu-io: Image format driver does not support resize\n'
    base = read_file(writediff.base_image(layout), layout)
    assert read_file(d, layout) == base


def test_read_only(tmp_path):
    """-r: the write is refused before the driver, with qemu-io's message and status."""
    layout = LAYOUTS['dyn-data']
    res = []
    for tool in ('qemu', 'qimg'):
        d = os.path.join(str(tmp_path), tool)
        writediff.copy_image_dir(writediff.base_image(layout), d, sync=False)
        exe = qemu.QEMU_IO if tool == 'qemu' else writediff.qimg_io_alias()
        res.append(qemu.run(exe, '-r', '-f', 'vdi', '-c', 'write -P 1 0 4k', '-c',
                            'write -z 1M 4k', layout.image, cwd=d) + (read_file(d, layout),))
    assert res[0][0] == 1 and 'read-only' in res[0][2]
    assert res[1] == res[0]


def fault_workload(layout):
    size = layout.size
    return ['write -P 0x11 0 3000', 'write -P 0x12 2M 1500k', 'write -P 0x13 1k 1k',
            'write -z 4M 100k', 'flush', 'write -P 0x14 %d 512' % (size - 512),
            'write -z -u 512k 1M', 'write -P 0x15 100k 2M']


def judge(layout, script, refs, d, out):
    rc, j, text = writediff.img_check(layout, d)
    if rc != 0 or j is None or j.get('corruptions') or j.get('leaks'):
        return 'qemu-img check: rc %d %s' % (rc, text)
    lo, hi, what = twf.window(script, out)
    data, e = writediff.guest_bytes(layout, d)
    if data is None:
        return 'qemu-img convert failed: %s' % e
    states = refs[lo:hi + 1]
    for s in range(0, len(data), 512):
        if not any(data[s:s + 512] == r[s:s + 512] for r in states):
            return 'sector at %d in none of the states (%s)' % (s, what)
    return None


@pytest.mark.parametrize('lname', ['dyn-empty', 'dyn-data', 'static'])
def test_cut_at_every_write(tmp_path, lname):
    layout = LAYOUTS[lname]
    script = fault_workload(layout)
    refs = twf.references(layout, script, str(tmp_path))
    n, failures = 0, []
    while True:
        n += 1
        rc, out, err, d = writediff.run_tool('qimg', layout, script, str(tmp_path),
                                             env={'QIMG_FAULT_AFTER_WRITES': str(n)},
                                             sync=False)
        if rc != 86:
            break
        why = judge(layout, script, refs, d, out)
        if why:
            failures.append('cut after write %d: %s' % (n, why))
        assert n < 1000
    assert rc == 0, err
    assert n > len(script), 'the workload made fewer writes than commands'
    why = judge(layout, script, refs, d, out)
    assert not why and not failures, '\n'.join(failures + [why or ''])


def test_cut_between_header_and_map(tmp_path):
    """Map beyond 1 MiB: an allocating write is data, header, map (qemu's order and
    writes). Cut after the header: qemu's state too (its header write done, its map write
    not): identical bytes, and qemu's check reports the mismatch it reports for it."""
    layout = LAYOUTS['big']
    script = ['write -P 0x44 %d 4k' % (layout.size - 2 * MIB)]
    q = writediff.run_tool('qemu', layout, script, str(tmp_path))
    base = read_file(writediff.base_image(layout), layout)
    after = read_file(q[3], layout)
    bmap = 512
    bmap_len = ((layout.size // MIB) * 4 + 511) // 512 * 512
    cut_qemu = after[:bmap] + base[bmap:bmap + bmap_len] + after[bmap + bmap_len:]
    rc, out, err, d = writediff.run_tool('qimg', layout, script, str(tmp_path),
                                         env={'QIMG_FAULT_AFTER_WRITES': '2'})
    assert rc == 86
    assert read_file(d, layout) == cut_qemu
    rc, out, err = qemu.qemu_img('check', layout.image, cwd=d)
    assert rc == 2
    assert 'ERROR: allocated blocks mismatch, is 0, should be 1' in out + err
    # the guest still reads the old bytes; the next allocation does not reuse the block
    rc, out, err = qemu.qemu_io('-f', 'vdi', '-c', 'read -P 0 %d 1M' % (layout.size - 2 * MIB),
                                '-c', 'write -P 0x45 0 512', layout.image, cwd=d)
    assert rc == 0 and 'failed' not in out + err, out + err
    rc, out, err = qemu.qemu_img('map', '--output=json', layout.image, cwd=d)
    assert '"offset": %d' % (512 + bmap_len + MIB) in out, out   # block 1, not 0
    # cut after the data only: old header and map, check clean
    rc, out, err, d = writediff.run_tool('qimg', layout, script, str(tmp_path),
                                         env={'QIMG_FAULT_AFTER_WRITES': '1'})
    assert rc == 86
    assert writediff.img_check(layout, d)[0] == 0
    shutil.rmtree(d)


# Damaged maps (test_qed_vdi's VDI damage): both tools write the same bytes; qemu-img check
# reports the same on both results.
import test_qed_vdi as tqv  # noqa: E402

HOSTILE = ['dup', 'too_large', 'mismatch', 'discarded', 'map_past_eof']


def _hostile_layout(damage):
    def build(d):
        tqv.vdi_base(d, 'img.vdi')
        tqv.VDI_DAMAGE[damage](os.path.join(d, 'img.vdi'))
    return writediff.Layout('vdi-hostile-' + damage, build, 10 * MIB, cluster=MIB, fmt='vdi',
                            image='img.vdi', compressed=False)


@pytest.mark.parametrize('damage', HOSTILE)
def test_damaged_map(tmp_path, damage):
    layout = _hostile_layout(damage)
    script = ['write -P 0x91 2M 4k', 'write -P 0x92 5M 8k', 'write -P 0x93 0 512',
              'read -P 0x92 5M 8k', 'write -z 8M 1k']
    q = writediff.run_tool('qemu', layout, script, str(tmp_path))
    m = writediff.run_tool('qimg', layout, script, str(tmp_path))
    assert (m[0], m[1], m[2]) == (q[0], q[1], q[2]), 'qemu-io:\n%s%s\nqimg-io:\n%s%s' % (
        q[1], q[2], m[1], m[2])
    assert read_file(q[3], layout) == read_file(m[3], layout)
    cq = qemu.qemu_img('check', layout.image, cwd=q[3])
    cm = qemu.qemu_img('check', layout.image, cwd=m[3])
    assert cq == cm


def test_no_block_left(tmp_path):
    """Deliberate difference: blocks_allocated already at blocks_in_image with a block
    still unallocated (an inconsistent header). qemu allocates block index
    blocks_in_image anyway, which its own check then calls "too large"; qimg refuses the
    allocation (EIO) and leaves the file as it was. In-place writes still work."""
    def build(d):
        writediff._create(d, 'img.vdi', 3 * MIB, fmt='vdi')
        tqv.wr(os.path.join(d, 'img.vdi'), 0x184, '<I', 3)
    layout = writediff.Layout('vdi-full', build, 3 * MIB, cluster=MIB, fmt='vdi',
                              image='img.vdi', compressed=False)
    script = ['write -P 0x11 1M 4k']
    q = writediff.run_tool('qemu', layout, script, str(tmp_path))
    assert q[0] == 0
    rc, out, err = qemu.qemu_img('check', layout.image, cwd=q[3])
    assert rc == 2 and 'ERROR: block index 1 too large, is 3' in out + err, out + err
    m = writediff.run_tool('qimg', layout, script, str(tmp_path))
    assert m[0] == 1
    assert m[1] + m[2] == 'write failed: Input/output error\n'
    assert read_file(m[3], layout) == read_file(writediff.base_image(layout), layout)
