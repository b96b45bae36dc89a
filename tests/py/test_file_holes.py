"""Holes in the file under the format: qimg's map and compare vs real qemu-img 7.2.

qemu asks the protocol layer (file-posix: SEEK_DATA/SEEK_HOLE, byte granular) about a
qcow2 data range only when qcow2_detect_metadata_preallocation() fires (at least
max(real * 10 / 9, real + 2) refcounted clusters, real = allocated bytes / cluster size);
a raw image always asks it. A hole punched inside a data cluster then shows as a
data+zero range, and the part of an external data file past its end reads as zero.
Every case runs map (json and human), compare -s and compare against a raw copy made
before the holes were punched, with both tools, and requires identical results.
"""

import os
import shutil

import pytest

import qemu


def both(d, *args):
    q = qemu.run(qemu.tool_path('qemu'), *args, cwd=d)
    i = qemu.run(qemu.tool_path('qimg'), *args, cwd=d)
    assert i == q, '%s\nqemu-img: %r\nqimg:     %r' % (' '.join(args), q, i)
    return q


def punch(path, off, length):
    qemu.run('fallocate', '-p', '-o', str(off), '-l', str(length), path, check=True)


def assert_all_agree(d, name, fmt, ref='ref.raw'):
    out = both(d, 'map', '--output=json', '-f', fmt, name)
    both(d, 'map', '-f', fmt, name)
    both(d, 'compare', '-s', '-f', fmt, '-F', 'raw', name, ref)
    both(d, 'compare', '-f', fmt, '-F', 'raw', name, ref)
    both(d, 'compare', '-s', '-F', fmt, ref, name)
    return out[1]


def qcow2_with_data(d, size='1M', sparse_copy=True, **opts):
    p = os.path.join(d, 'a.qcow2')
    qemu.make_image(p, size, **opts)
    qemu.io(p, 'write -P 0x11 0 %s' % size)
    qemu.convert(p, os.path.join(d, 'ref.raw'), out_fmt='raw')
    # a plain cp keeps the file sparse (few allocated blocks: qemu's heuristic fires);
    # --sparse=never allocates every block (it does not)
    t = os.path.join(d, 't.qcow2')
    qemu.run('cp', '--sparse=always' if sparse_copy else '--sparse=never', p, t, check=True)
    return t


# (offset inside the file relative to the first data cluster at 0x50000, length)
HOLES = [(4096, 8192), (1, 100), (100, 5000), (4095, 4098), (0, 65536), (60000, 70000),
         (12345, 300000)]


@pytest.mark.parametrize('hole', HOLES, ids=['%d+%d' % h for h in HOLES])
@pytest.mark.parametrize('sparse_copy', [True, False], ids=['sparse', 'allocated'])
def test_qcow2_hole_in_data_cluster(tmp_path, hole, sparse_copy):
    d = str(tmp_path)
    t = qcow2_with_data(d, sparse_copy=sparse_copy)
    punch(t, 0x50000 + hole[0], hole[1])
    out = assert_all_agree(d, 't.qcow2', 'qcow2')
    if sparse_copy and hole[1] >= 8192:
        # a whole file-system block is gone: qemu reports it as data+zero
        assert '"zero": true, "data": true' in out


def test_qcow2_heuristic_threshold_equal(tmp_path):
    """7 refcounted clusters in a file holding 5: qemu's heuristic fires at equality."""
    d = str(tmp_path)
    p = os.path.join(d, 't.qcow2')
    qemu.make_image(p, '4M', cluster_size='2M', preallocation='metadata')
    qemu.io(p, 'write -P 137 3436544 757760', 'write -P 91 2056192 2138112')
    qemu.convert(p, os.path.join(d, 'ref.raw'), out_fmt='raw')
    out = assert_all_agree(d, 't.qcow2', 'qcow2')
    assert '"start": 0, "length": 2056192, "depth": 0, "present": true, "zero": true' in out


def test_qcow2_metadata_prealloc_data_to_eof(tmp_path):
    """Data reaching the end of the file stays data (EOF alone does not make it zero)."""
    d = str(tmp_path)
    p = os.path.join(d, 't.qcow2')
    qemu.make_image(p, '1M', cluster_size=65536, preallocation='metadata')
    qemu.io(p, 'write -P 111 856576 192000', 'write -P 28 857600 65536',
            'write -P 66 217600 830976')
    qemu.convert(p, os.path.join(d, 'ref.raw'), out_fmt='raw')
    out = assert_all_agree(d, 't.qcow2', 'qcow2')
    assert '"zero": false, "data": true' in out


RAW = [('aligned', 1 << 20, [(8192, 16384)]),
       ('unaligned-holes', 100000, [(5000, 20000), (70001, 3)]),
       ('odd-size', 72911, []),
       ('odd-size-holes', 72911, [(4096, 60000)]),
       ('hole-to-eof', 300000, [(200000, 100000)])]


@pytest.mark.parametrize('case', RAW, ids=[c[0] for c in RAW])
def test_raw_holes(tmp_path, case):
    _, size, holes = case
    d = str(tmp_path)
    p = os.path.join(d, 't.raw')
    with open(p, 'wb') as f:
        f.write(bytes((i * 7 + 1) & 0xff or 1 for i in range(size)))
    for off, length in holes:
        punch(p, off, length)
    qemu.convert(p, os.path.join(d, 'ref.raw'), '-f', 'raw', out_fmt='raw')
    assert_all_agree(d, 't.raw', 'raw')


def test_raw_truncated_trailing_hole(tmp_path):
    """A file ending in a hole inside its last sector: qemu's SEEK_DATA gives ENXIO and the
    zero run reaches the sector-rounded length (EOF), as in a converted copy."""
    d = str(tmp_path)
    p = os.path.join(d, 't.raw')
    qemu.make_image(p, '1M', fmt='raw')
    qemu.io(p, 'write -P 99 0 4096', fmt='raw')
    os.truncate(p, 72911)
    qemu.convert(p, os.path.join(d, 'ref.raw'), '-f', 'raw', out_fmt='raw')
    assert_all_agree(d, 't.raw', 'raw')


@pytest.mark.parametrize('dsize', [1221, 512, 65536 + 7, 0])
@pytest.mark.parametrize('sparse_copy', [True, False], ids=['sparse', 'allocated'])
def test_short_data_file(tmp_path, dsize, sparse_copy):
    """map_short_datafile.sh: an external data file shorter than its mapped clusters."""
    d = str(tmp_path)
    p = os.path.join(d, 't0.qcow2')
    qemu.make_image(p, '64M', data_file='d.raw')
    qemu.io(p, 'write -P 0x5a 0 1M')
    os.truncate(os.path.join(d, 'd.raw'), dsize)
    qemu.run('cp', '--sparse=always' if sparse_copy else '--sparse=never', p,
             os.path.join(d, 't.qcow2'), check=True)
    qemu.qemu_img('convert', '-O', 'raw', 't.qcow2', 'ref.raw', cwd=d, check=True)
    out = assert_all_agree(d, 't.qcow2', 'qcow2')
    if sparse_copy and dsize == 1221:
        assert out.startswith('[{ "start": 0, "length": 1221, ')
    for extra in ([], ['--output=json']):
        both(d, 'info', *extra, 't.qcow2')
    both(d, 'check', 't.qcow2')
    q = qemu.check_json('qemu', 't.qcow2', cwd=d)
    i = qemu.check_json('qimg', 't.qcow2', cwd=d)
    assert (i[0], qemu.qemu_part(i[1]), i[3]) == (q[0], qemu.qemu_part(q[1]), q[3])


def test_hole_free_data_few_probes(tmp_path):
    """Data without holes costs a SEEK_DATA/SEEK_HOLE pair per cache miss (qemu's
    block-status cache keeps the last data extent), not one per run: 16 runs of 2 MiB
    clusters stored in swapped pairs need 2 pairs, not 16."""
    if not shutil.which('strace'):
        pytest.skip('strace not installed')
    d = str(tmp_path)
    p = os.path.join(d, 'a.qcow2')
    qemu.make_image(p, '32M', cluster_size='2M')
    cmds = []
    for i in range(0, 16, 2):
        cmds += ['write -P 7 %dM 2M' % ((i + 1) * 2), 'write -P 8 %dM 2M' % (i * 2)]
    qemu.io(p, *cmds)
    t = os.path.join(d, 't.qcow2')
    qemu.run('cp', '--sparse=always', p, t, check=True)  # metadata clusters sparse: recurse
    qemu.convert(t, os.path.join(d, 'ref.raw'), out_fmt='raw')
    assert_all_agree(d, 't.qcow2', 'qcow2')
    # (LeakSanitizer cannot run under ptrace: an ASan build would exit 1)
    rc, out, err = qemu.run('strace', '-e', 'trace=lseek', qemu.QIMG, 'map',
                            '--output=json', t, env={'ASAN_OPTIONS': 'detect_leaks=0'})
    assert rc == 0
    seeks = [ln for ln in err.splitlines() if 'SEEK_DATA' in ln or 'SEEK_HOLE' in ln]
    assert 0 < len(seeks) <= 4, err
