"""`qimg dd` against the real qemu-img 7.2 dd.

Each case builds the same source directory twice with the real qemu-img/qemu-io, runs
`qemu-img dd ARGS` in one copy and qimg (through a symlink named qemu-img, so the message
prefix matches) in the other, and requires the same exit status, stdout and stderr and
byte-identical files afterwards (vdi targets: their random UUIDs masked), plus a clean real
`qemu-img check` of qcow2/qed/vdi targets.
"""

import os
import shlex
import subprocess

import pytest

import qemu

KIB, MIB = 1 << 10, 1 << 20

# Source images: (name, format, size, qemu-io writes). Data, a zeroed range, holes, and a
# size that is not a multiple of 512 for raw.
WRITES = ['write -P 0x11 0 3000', 'write -P 0x22 600k 10k', 'write -z 64k 64k',
          'write -P 0x33 1000k 24k']


def _src_qcow2(d, name='s.qcow2', extra=()):
    p = os.path.join(d, name)
    qemu.make_image(p, '1M', fmt='qcow2', **dict(extra))
    qemu.io(p, *WRITES, fmt='qcow2')


def _src_qcow2_compressed(d):
    p = os.path.join(d, 'c.qcow2')
    _src_qcow2(d, 'plain.qcow2')
    qemu.qemu_img('convert', '-c', '-O', 'qcow2', os.path.join(d, 'plain.qcow2'), p,
                  check=True)


def _src_qcow2_backing(d):
    base = os.path.join(d, 'base.qcow2')
    _src_qcow2(d, 'base.qcow2')
    p = os.path.join(d, 'top.qcow2')
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p,
                  cwd=d, check=True)
    qemu.io(p, 'write -P 0x44 4k 8k', 'write -z 600k 4k', fmt='qcow2')
    assert os.path.exists(base)


def _src_raw(d):
    p = os.path.join(d, 's.raw')
    with open(p, 'wb') as f:
        f.truncate(MIB + 1234)
    qemu.io(p, *WRITES, 'write -P 0x55 1048576 1234', fmt='raw')


def _src_qed(d):
    p = os.path.join(d, 's.qed')
    qemu.make_image(p, '1M', fmt='qed')
    qemu.io(p, *WRITES, fmt='qed')


def _src_vdi(d):
    p = os.path.join(d, 's.vdi')
    qemu.make_image(p, '1M', fmt='vdi')
    qemu.io(p, *WRITES, fmt='vdi')


SOURCES = {
    'qcow2': ('s.qcow2', _src_qcow2),
    'qcow2v2': ('s.qcow2', lambda d: _src_qcow2(d, extra=[('compat', '0.10')])),
    'qcow2c': ('c.qcow2', _src_qcow2_compressed),
    'qcow2b': ('top.qcow2', _src_qcow2_backing),
    'raw': ('s.raw', _src_raw),
    'qed': ('s.qed', _src_qed),
    'vdi': ('s.vdi', _src_vdi),
}

TARGETS = ['raw', 'qcow2', 'qed', 'vdi']

OPERANDS = [
    '',
    'bs=64k',
    'bs=1000 count=5',
    'bs=4k skip=3',
    'bs=4k skip=2 count=5',     # qemu 7.2: count caps the size before skip: 3 blocks
    'bs=4k skip=5 count=5',     # skip == count: empty target, no message
    'count=0',
    'bs=512 skip=1k count=1k',  # suffixes are block counts
    'bs=1M skip=9',             # past the end: qemu's warning, empty target, exit 0
]


def _run(tool, d, argv):
    p = subprocess.run([tool, 'dd'] + argv, cwd=d, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def _files(d):
    return sorted(os.listdir(d))


def _same_file(a, b, name):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        ra, qb = bytearray(fa.read()), bytearray(fb.read())
    if len(qb) >= 512 and qb[0x40:0x44] == b'\x7f\x10\xda\xbe':
        # vdi: qemu writes random UUIDs (image, last snapshot)
        ra[0x188:0x1a8] = qb[0x188:0x1a8] = bytes(32)
    assert len(ra) == len(qb), name
    assert ra == qb, name


def _differential(tmp_path, build, argv, check_target=None):
    rd, qd = str(tmp_path / 'qemu'), str(tmp_path / 'qimg')
    for d in (rd, qd):
        os.makedirs(d)
        build(d)
    r = _run(qemu.QEMU_IMG, rd, argv)
    q = _run(qemu.qimg_as_qemu_img(), qd, argv)
    assert q == r
    assert _files(qd) == _files(rd)
    for name in _files(rd):
        _same_file(os.path.join(rd, name), os.path.join(qd, name), name)
    if check_target and os.path.exists(os.path.join(qd, check_target[0])):
        # and the file system's allocation (qimg allocates large writes first on ext4)
        t = check_target[0]
        assert qemu.allocated_extents(os.path.join(qd, t)) == \
            qemu.allocated_extents(os.path.join(rd, t))
    if check_target and os.path.exists(os.path.join(qd, check_target[0])):
        name, fmt = check_target
        if fmt != 'raw':
            rc, out, err = qemu.qemu_img('check', '-f', fmt, name, cwd=qd)
            assert rc == 0, (out, err)
    return r


@pytest.mark.parametrize('src', list(SOURCES))
@pytest.mark.parametrize('out_fmt', TARGETS)
def test_dd_formats(tmp_path, qimg_binary, src, out_fmt):
    name, build = SOURCES[src]
    argv = ['-O', out_fmt, 'if=' + name, 'of=out']
    r = _differential(tmp_path, build, argv, ('out', out_fmt))
    assert r[0] == 0


@pytest.mark.parametrize('operands', OPERANDS)
@pytest.mark.parametrize('out_fmt', ['raw', 'qcow2'])
def test_dd_operands(tmp_path, qimg_binary, operands, out_fmt):
    argv = ['-O', out_fmt] + shlex.split(operands) + ['if=s.qcow2', 'of=out']
    _differential(tmp_path, _src_qcow2, argv, ('out', out_fmt))


@pytest.mark.parametrize('operands', ['bs=512', 'bs=3000 skip=7', 'bs=64k count=3'])
@pytest.mark.parametrize('out_fmt', ['qed', 'vdi'])
def test_dd_operands_qed_vdi(tmp_path, qimg_binary, operands, out_fmt):
    argv = ['-O', out_fmt] + shlex.split(operands) + ['if=s.raw', 'of=out']
    _differential(tmp_path, _src_raw, argv, ('out', out_fmt))


def test_dd_block_larger_than_chunk(tmp_path, qimg_binary):
    """bs above qimg's 16 MiB copy piece: the pieces must leave qemu's layout."""
    def build(d):
        p = os.path.join(d, 's.qcow2')
        qemu.make_image(p, '40M', fmt='qcow2')
        qemu.io(p, 'write -P 0x66 0 1M', 'write -P 0x77 17M 100k', 'write -P 0x88 39M 1M',
                fmt='qcow2')
    argv = ['-O', 'qcow2', 'bs=17M', 'skip=0', 'if=s.qcow2', 'of=out']
    _differential(tmp_path, build, argv, ('out', 'qcow2'))


ERRORS = [
    '',
    'if=s.qcow2',
    'of=out',
    'foo',
    'foo=1 if=s.qcow2 of=out',
    '=x if=s.qcow2 of=out',
    'if=s.qcow2 of=out extra',
    'bs=0 if=s.qcow2 of=out',
    'bs=2G if=s.qcow2 of=out',
    'bs=x if=s.qcow2 of=out',
    'count=-1 if=s.qcow2 of=out',
    'skip=1Q if=s.qcow2 of=out',
    'skip=9E if=s.qcow2 of=out',     # past INT64_MAX: qemu's range message
    'skip=8E if=s.qcow2 of=out',
    'bs=4k skip=4E if=s.qcow2 of=out',  # skip * bs overflows: warning, empty target
    '-O foo if=s.qcow2 of=out',
    '-O bochs if=s.qcow2 of=out',
    '-f bad if=s.qcow2 of=out',
    '-f raw if=s.qcow2 of=out',
    '-U if=s.qcow2 of=out',
    '--force-share if=s.qcow2 of=out',
    'if=nonexist of=out',
    'if= of=out',
    'if=s.qcow2 of=',
    'if=s.qcow2 of=nodir/out',
    '-x',
    '-f',
    '-O',
    'if=s.qcow2 if=s.qcow2 of=out bs=1 bs=2 count=3',  # later operands win
    'if=s.qcow2 of=out -O qcow2',   # options after operands (getopt permutes)
]


@pytest.mark.parametrize('args', ERRORS)
def test_dd_messages(tmp_path, qimg_binary, args):
    _differential(tmp_path, _src_qcow2, shlex.split(args))


def test_dd_existing_target_replaced(tmp_path, qimg_binary):
    """of= an existing larger file: created anew (truncated) as qemu does."""
    def build(d):
        _src_qcow2(d)
        with open(os.path.join(d, 'out'), 'wb') as f:
            f.write(b'\xaa' * (3 * MIB))
    _differential(tmp_path, build, ['bs=4k', 'count=10', 'if=s.qcow2', 'of=out'])


def test_dd_source_in_use(tmp_path, qimg_binary):
    """A source held by a writer: refused without -U (qemu's lock message), copied with -U."""
    for tool, d in (('qemu', tmp_path / 'a'), ('qimg', tmp_path / 'b')):
        os.makedirs(d)
    rd, qd = str(tmp_path / 'a'), str(tmp_path / 'b')
    _src_qcow2(rd)
    _src_qcow2(qd)
    results = {}
    for tool, d in (('qemu', rd), ('qimg', qd)):
        with qemu.held_open(os.path.join(d, 's.qcow2')):
            results[tool] = (_run(qemu.tool_path(tool), d, ['if=s.qcow2', 'of=o1']),
                             _run(qemu.tool_path(tool), d, ['-U', 'if=s.qcow2', 'of=o2']))
    assert results['qimg'] == results['qemu']
    assert results['qemu'][0][0] == 1 and results['qemu'][1][0] == 0
    _same_file(os.path.join(rd, 'o2'), os.path.join(qd, 'o2'), 'o2')


@pytest.mark.parametrize('out_fmt', ['raw', 'qcow2'])
def test_dd_target_in_use(tmp_path, qimg_binary, out_fmt):
    """of= an image another process holds: qemu's lock message, exit 1, file untouched."""
    results = {}
    for tool in ('qemu', 'qimg'):
        d = str(tmp_path / tool)
        os.makedirs(d)
        _src_qcow2(d)
        held = os.path.join(d, 'held.qcow2')
        qemu.make_image(held, '1M')
        with open(held, 'rb') as f:
            before = f.read()
        with qemu.held_open(held):
            results[tool] = _run(qemu.tool_path(tool), d,
                                 ['-O', out_fmt, 'if=s.qcow2', 'of=held.qcow2'])
        with open(held, 'rb') as f:
            assert f.read() == before
    assert results['qimg'] == results['qemu']
    assert results['qemu'][0] == 1
