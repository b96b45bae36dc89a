"""build/qimg-io (qemu-io's command line over qimg's block layer) vs the real qemu-io 7.2.

Each case runs the same qemu-io command line with both programs, each on its own copy of the
same image (same file name, in its own directory, so messages naming the file agree), and
requires the same exit code, stdout (timing lines filtered as qemu's iotests filter them),
stderr, guest bytes, file length and `qemu-img map --output=json -f raw` (the allocation,
not just the bytes: zero writes with and without -u, discards and truncates must leave the
same holes). qimg-io runs through a symlink named `qemu-io`, so "<prog>:" prefixes agree.

Random write scripts are seeded and deterministic; a failing seed reproduces with
`pytest tests/py/test_qimg_io.py -k 'seed7'`.
"""

import atexit
import contextlib
import os
import random
import re
import shutil
import subprocess
import tempfile

import pytest

import qemu

QIMG_IO = os.path.abspath(os.environ.get('QIMG_IO') or
                          os.path.join(os.path.dirname(qemu.QIMG), 'qimg-io'))

# iotests' _filter_qemu_io, and the same for -C's machine-readable line
TIMING = re.compile(r'[0-9]* ops; [0-9/:. sec]* \([0-9/.inf]* [EPTGMKiBbytes]*/sec and '
                    r'[0-9/.inf]* ops/sec\)')
TIMING_C = re.compile(r'^(-?[0-9]+),([0-9]+),[0-9]+:[0-9]{2}:[0-9]{2}\.[0-9]{2},'
                      r'[0-9.inf]+,[0-9.inf]+$', re.M)


def filter_io(out):
    out = TIMING.sub('X ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)', out)
    return TIMING_C.sub(r'\1,\2,TIME', out)


_alias = None


def qimg_io_alias():
    global _alias
    if _alias is None:
        d = tempfile.mkdtemp(prefix='qimgio-alias-')
        atexit.register(shutil.rmtree, d, True)
        _alias = os.path.join(d, 'qemu-io')
        os.symlink(QIMG_IO, _alias)
    return _alias


@pytest.fixture(scope='module', autouse=True)
def qimg_io_binary():
    if not os.access(QIMG_IO, os.X_OK):
        pytest.fail('qimg-io not found at %s (build it with `make`)' % QIMG_IO)


def raw_map(path):
    rc, out, err = qemu.qemu_img('map', '--output=json', '-f', 'raw', path)
    assert rc == 0, err
    return out


def file_state(path):
    if not os.path.exists(path):
        return None
    with open(path, 'rb') as f:
        data = f.read()
    return len(data), data, raw_map(path)


def run_both(tmp_path, args, setup, name='img.raw', env=None):
    """setup(path) builds the image in each directory; args are qemu-io's arguments, with
    the image name last (or not at all). Returns the qemu-io result after asserting that
    qimg-io's agrees."""
    res = {}
    for tool, exe in (('qemu', qemu.QEMU_IO), ('qimg', qimg_io_alias())):
        d = tmp_path / tool
        d.mkdir()
        setup(str(d / name))
        rc, out, err = qemu.run(exe, *args, cwd=str(d), env=env)
        res[tool] = (rc, filter_io(out), err, file_state(str(d / name)))
    q, i = res['qemu'], res['qimg']
    assert i[1] == q[1], 'stdout differs for %s\nqemu-io:\n%s\nqimg-io:\n%s' % (args, q[1], i[1])
    assert i[2] == q[2], 'stderr differs for %s\nqemu-io:\n%s\nqimg-io:\n%s' % (args, q[2], i[2])
    assert i[0] == q[0], 'exit code for %s: qemu-io %d, qimg-io %d' % (args, q[0], i[0])
    if q[3] is None:
        assert i[3] is None
    else:
        assert i[3][0] == q[3][0], 'file length: qemu-io %d, qimg-io %d' % (q[3][0], i[3][0])
        assert i[3][1] == q[3][1], 'guest bytes differ after %s' % (args,)
        assert i[3][2] == q[3][2], 'allocation differs after %s\nqemu-io:\n%s\nqimg-io:\n%s' % (
            args, q[3][2], i[3][2])
    return q


def raw_image(size, data=()):
    """setup: a raw image of size bytes (qemu-img create), then data [(off, byte, len)]."""
    def setup(path):
        qemu.qemu_img('create', '-q', '-f', 'raw', path, str(size), check=True)
        for off, byte, n in data:
            qemu.qemu_io('-f', 'raw', '-c', 'write -q -P %d %d %d' % (byte, off, n), path,
                         check=True)
    return setup


def cmds(*lines):
    out = []
    for line in lines:
        out += ['-c', line]
    return out


# -- random write scripts ----------------------------------------------------------------

def size_text(rng, v):
    """v in one of qemu-io's spellings that denote it exactly."""
    forms = [str(v), hex(v)]
    for suffix, unit in (('k', 1 << 10), ('K', 1 << 10), ('M', 1 << 20), ('G', 1 << 30)):
        if v and v % unit == 0:
            forms.append('%d%s' % (v // unit, suffix))
    if v % 512 == 0 and v:
        forms.append('%sk' % (v / 1024.0))     # e.g. 1.5k
    return rng.choice(forms)


def random_offset(rng, size):
    align = rng.choice([1, 512, 4096, 65536, 65536, 1 << 20])
    return rng.randrange(0, max(1, size // align + 1)) * align


def random_length(rng):
    align = rng.choice([1, 512, 4096, 65536])
    return rng.choice([0, 1, 1, 2, 3, 8, 17, 64, 200]) * align + rng.choice([0, 0, 0, 1, 511])


def random_script(seed):
    rng = random.Random(seed)
    size = rng.choice([1 << 20, 4 << 20, (3 << 20) + 512, 1000 * 1024 + 7])
    data = [(random_offset(rng, size) % size, rng.randrange(1, 256), rng.choice([512, 65536]))
            for _ in range(rng.randrange(0, 4))]
    data = [(o, b, min(n, size - o)) for o, b, n in data if size - o > 0]
    vsize = (size + 511) // 512 * 512
    lines = []
    for _ in range(rng.randrange(15, 35)):
        k = rng.random()
        off = random_offset(rng, vsize)
        n = random_length(rng)
        if rng.random() < 0.85 and off + n > vsize:      # mostly in range
            off = max(0, vsize - n - rng.choice([0, 0, 1, 512]))
        o, l = size_text(rng, off), size_text(rng, n)
        if k < 0.35:
            p = rng.choice(['', '-P %d ' % rng.randrange(256), '-P 0x%x ' % rng.randrange(256)])
            lines.append('write %s%s %s' % (p, o, l))
        elif k < 0.5:
            lines.append('write -z %s %s' % (o, l))
        elif k < 0.65:
            lines.append('write -z -u %s %s' % (o, l))
        elif k < 0.77:
            lines.append('discard %s %s' % (o, l))
        elif k < 0.87:
            lines.append('read -P %d %s %s' % (rng.choice([0, 0xcd, rng.randrange(256)]), o, l))
        elif k < 0.92:
            lines.append('flush')
        else:
            new = rng.choice([vsize, vsize + rng.randrange(1, 8) * 65536, vsize // 2,
                              vsize - 100, vsize + 1000])
            lines.append('truncate %s' % size_text(rng, new))
            vsize = (new + 511) // 512 * 512
    return size, data, lines


@pytest.mark.parametrize('seed', range(16), ids=lambda s: 'seed%d' % s)
def test_random_write_script(tmp_path, seed):
    size, data, lines = random_script(seed)
    run_both(tmp_path, ['-f', 'raw'] + cmds(*lines) + ['img.raw'], raw_image(size, data))


# -- allocation of each write-side operation ------------------------------------------------

FULL = [(0, 0x11, 4 << 20)]


@pytest.mark.parametrize('script', [
    ['write -z 0 64k', 'write -z 100k 3000', 'write -z 1M 1M'],
    ['write -z -u 0 64k', 'write -z -u 100k 3000', 'write -z -u 1M 1M'],
    ['discard 0 64k', 'discard 100k 3000', 'discard 1M 1M', 'discard 4095 2'],
    ['write -z -u 0 4M', 'write 4k 4k', 'write -z 64k 64k'],
    ['truncate 1000', 'read -P 0x11 0 1000', 'read -P 0 1000 24', 'write 1000 24'],
    ['truncate 0', 'truncate 5000', 'truncate 0', 'truncate 100'],
    ['truncate 1M', 'truncate -m falloc 2M', 'truncate -m full 3M', 'truncate -m metadata 4M'],
    ['truncate -m falloc 1M', 'truncate -m full 1k'],
    ['write -f 0 4k', 'write -f -z 8k 4k', 'flush', 'write -C 0 1', 'read -C 0 1',
     'discard -C 0 1', 'write -q 0 1', 'read -q -P 0xcd 0 1'],
], ids=lambda s: '|'.join(s).replace(' ', '_'))
def test_write_ops_allocation(tmp_path, script):
    run_both(tmp_path, ['-f', 'raw'] + cmds(*script) + ['img.raw'], raw_image(4 << 20, FULL))


def test_empty_file_grows_like_qemu(tmp_path):
    # file-posix writes the first block after growing an empty file
    run_both(tmp_path, ['-f', 'raw'] + cmds('truncate 1000', 'read -v 0 1024', 'truncate 0',
                                            'truncate 1M') + ['img.raw'], raw_image(0))


def test_probed_raw_aligns_writes(tmp_path):
    # no -f: qemu probes raw, warns, and turns unaligned writes into whole-sector ones
    run_both(tmp_path, cmds('write 1000 24', 'write -P 7 1 1', 'read -P 7 1 1', 'truncate 1001',
                            'write 1000 1') + ['img.raw'], raw_image(1000))


# -- sizes, arguments and messages -------------------------------------------------------------

@pytest.mark.parametrize('value', [
    '4.7M', '1.333333333333M', '0.9999999999k', '0x10k', '0x1B', '+1', '1.0', '1.k', '2b', '3B',
    '7E', '8E', '0x7fffffffffffffff', '0xffffffffffffffff', '0x10000000000000000',
    '99999999999999999999', '.5k', '1.5', '1e3', '1.5e1k', '0x1.5k', '0x', '00x10', 'inf',
    '-1', '1x', '1.5.k',
])
def test_size_syntax(tmp_path, value):
    # truncate shows the parsed value as the file's length; write shows the parse errors
    run_both(tmp_path, ['-f', 'raw'] + cmds('truncate ' + value, 'write -q 0 ' + value,
                                            'read -q ' + value + ' 0') + ['img.raw'],
             raw_image(1 << 20))


ERROR_SCRIPTS = [
    ['write 1x 4k', 'write 0 99999999999999999999', 'write 0 9E', 'write 0 3G', 'read 0 3G',
     'discard 0 3G', 'write -z 0 3G'],
    ['write -P 256 0 512', 'write -P 0x100 0 512', 'write -P -1 0 512', 'write -P abc 0 512',
     'write -P 010 0 1', 'read -P 8 0 1'],
    ['write -z -P 1 0 512', 'write -u 0 512', 'write -f -c 0 512', 'write -c 1 512',
     'write -c 512 1', 'write -z -c 512 512', 'write -c 0 64k'],
    ['write 0', 'write 0 1 2', 'write -x 0 1', 'writ 0 1', 'write -1 512', 'write 0 -1',
     'write', 'w 0 1', 'r 0 1', 'd 0 1', 'f', 't 1M'],
    ['write 0 2M', 'write 1020k 8k', 'read 1020k 8k', 'read 1M 0', 'read 2M 0', 'write 2M 0',
     'write 1M 0', 'discard 1020k 8k', 'write -z 1020k 8k', 'write 7E 1',
     'write 0x7fffffffffffffff 1'],
    ['truncate 0x7fffffffffffffff', 'truncate 9E', 'truncate -m off 1x', 'truncate -m bogus 1M',
     'truncate 1M 2M', 'truncate -x 1M', 'truncate -m falloc 1M 2M', 'truncate'],
    ['discard -x 0 1', 'discard 0 1 2', 'discard 1x 1', 'discard 0 1x', 'discard 0',
     'flush 1'],
    ['read 0 1 2', 'read -s 1 -P 0 0 1', 'read -l 2 -P 0 0 1', 'read -l 1 0 1',
     'read -s 1x -P 0 0 1', 'read -P 1 0 1', 'read -v 0 33', 'read -p 0 1'],
    ['sleep 1', 'sleep x', 'sleep -1', 'read -P 0 0 1'],
]


@pytest.mark.parametrize('script', ERROR_SCRIPTS, ids=lambda s: s[0].replace(' ', '_'))
def test_bad_arguments(tmp_path, script):
    run_both(tmp_path, ['-f', 'raw'] + cmds(*script) + ['img.raw'],
             raw_image(1 << 20, [(0, 0x41, 64)]))


OPEN_CASES = {  # name: (arguments, qemu-io's exit code)
    'read-only': (['-f', 'raw', '-r'] + cmds('write 0 4k', 'write -z 0 4k', 'discard 0 4k',
                                             'truncate 2M', 'flush', 'read 0 4k', 'write 1x 1',
                                             'write') + ['img.raw'], 1),
    'U-rw': (['-f', 'raw', '-U'] + cmds('write 0 4k') + ['img.raw'], 1),
    'U-ro': (['-f', 'raw', '-r', '-U'] + cmds('read 0 4k') + ['img.raw'], 0),
    'missing-f': (['-f', 'raw'] + cmds('read 0 4k') + ['missing.raw'], 1),
    'missing': (cmds('read 0 4k') + ['missing.raw'], 1),
    'bad-format': (['-f', 'qcow9'] + cmds('read 0 4k') + ['img.raw'], 1),
    'no-file': (['-f', 'raw'] + cmds('read 0 4k'), 1),
    'long-options': (['-f', 'raw', '--read-only', '--cmd', 'write 0 1', 'img.raw'], 1),
    'long-options-ok': (['--format', 'raw', '--cmd', 'write 0 1', 'img.raw'], 0),
}


@pytest.mark.parametrize('name', sorted(OPEN_CASES))
def test_open_errors(tmp_path, name):
    args, rc = OPEN_CASES[name]
    assert run_both(tmp_path, args, raw_image(1 << 20))[0] == rc


@pytest.mark.parametrize('args', [['-f', 'raw', '-c', 'read 0 1', 'a', 'b'], ['-x'], ['-h']],
                         ids=['two-files', 'bad-option', 'help'])
def test_usage(tmp_path, args):
    """qimg-io's usage lists only the options it has; its first line, the exit code and
    getopt's complaint are qemu-io's."""
    q = qemu.run(qemu.QEMU_IO, *args, cwd=str(tmp_path))
    i = qemu.run(qimg_io_alias(), *args, cwd=str(tmp_path))
    assert i[0] == q[0]
    assert i[1].splitlines()[0] == q[1].splitlines()[0]
    # getopt names the program by argv[0] as given: each by its own path
    assert i[2].replace(qimg_io_alias(), 'PROG') == q[2].replace(qemu.QEMU_IO, 'PROG')


# -- locks -----------------------------------------------------------------------------------

@pytest.fixture
def held_qcow2(tmp_path):
    """One qcow2 image per tool directory, each held open read-write by a real qemu-io."""
    with contextlib.ExitStack() as stack:
        for tool in ('qemu', 'qimg'):
            d = tmp_path / ('held-' + tool)
            d.mkdir()
            qemu.make_image(str(d / 'img.qcow2'), '1M')
            stack.enter_context(qemu.held_open(str(d / 'img.qcow2')))
        yield


@pytest.mark.parametrize('args', [
    ['-f', 'qcow2'] + cmds('read 0 4k'),
    ['-f', 'raw'] + cmds('write 0 4k'),
    ['-f', 'raw', '-r'] + cmds('read 0 4k'),
    ['-f', 'qcow2', '-r'] + cmds('read 0 4k'),
    ['-f', 'qcow2', '-r', '-U'] + cmds('read 0 4k'),
], ids=['qcow2-rw', 'raw-rw', 'raw-ro', 'qcow2-ro', 'qcow2-ro-U'])
def test_locked_by_qemu_io(tmp_path, held_qcow2, args):
    res = {}
    for tool, exe in (('qemu', qemu.QEMU_IO), ('qimg', qimg_io_alias())):
        d = str(tmp_path / ('held-' + tool))
        rc, out, err = qemu.run(exe, *(args + ['img.qcow2']), cwd=d)
        res[tool] = (rc, filter_io(out), err)
    assert res['qimg'] == res['qemu']
    if args[-2:] != ['-r', '-U'] and args[-3:-2] != ['-U']:
        assert 'Is another process using the image' in res['qemu'][2] or args[1] == 'raw'



def test_raw_holder_shares_resize(tmp_path):
    """A raw qemu-io writer shares everything, so truncate (which takes the resize lock)
    works beside it, as it does with qemu-io."""
    for tool, exe in (('qemu', qemu.QEMU_IO), ('qimg', qimg_io_alias())):
        d = tmp_path / tool
        d.mkdir()
        path = str(d / 'img.raw')
        qemu.qemu_img('create', '-q', '-f', 'raw', path, '1M', check=True)
        with qemu.held_open(path, fmt='raw'):
            rc, out, err = qemu.run(exe, '-f', 'raw', '-c', 'truncate 2M', '-c', 'write 1M 4k',
                                    path)
        assert (rc, err) == (0, ''), (tool, out, err)
        assert os.path.getsize(path) == 2 << 20


# -- qimg-io's own output ------------------------------------------------------------------------

def test_timing_line_is_qemu_io_format(tmp_path):
    """The unfiltered report lines have qemu-io's exact shape (so _filter_qemu_io works)."""
    p = str(tmp_path / 'img.raw')
    qemu.qemu_img('create', '-q', '-f', 'raw', p, '1M', check=True)
    rc, out, err = qemu.run(QIMG_IO, '-f', 'raw', '-c', 'write 0 64k', '-c', 'read 0 1',
                            '-c', 'discard 0 512', p)
    assert rc == 0 and err == ''
    lines = out.splitlines()
    assert lines[0] == 'wrote 65536/65536 bytes at offset 0'
    assert re.fullmatch(r'64 KiB, 1 ops; [0-9]{2}\.[0-9]{2} sec \([0-9.]+ [KMGT]?i?B(ytes)?'
                        r'/sec and [0-9]+\.[0-9]{4} ops/sec\)', lines[1]), lines[1]
    assert lines[2] == 'read 1/1 bytes at offset 0'
    assert re.fullmatch(r'1 bytes, 1 ops; .*', lines[3])
    assert lines[4] == 'discard 512/512 bytes at offset 0'
    assert len(lines) == 6
