"""Opening what is not an image (issue 10 section 3): FIFOs, directories, files without a
length (/proc/self/mem), devices, as the image, its backing file or its data file; backing
chains that are broken further down, loop, or are 1000 images deep; out of memory.

Both tools run in the same directory on the same input, qimg through a symlink named
`qemu-img` so that message prefixes match; exit code, stdout and stderr must be identical.
Every run has a timeout, so a hang fails the test instead of blocking it.

qemu-img blocks forever opening a FIFO that has no writer (and on a backing loop); qimg
refuses both at once. Those cases compare qimg's answer with what qemu-img prints when a
writer is attached (the FIFO then opens and is refused), or check qimg's documented message.
"""

import contextlib
import os
import resource
import stat
import struct
import subprocess
import sys

import pytest

import qemu

RUN_TIMEOUT = 30
ENV = {'TZ': 'UTC'}


def run(tool, cwd, *args, timeout=RUN_TIMEOUT, preexec=None):
    cmd = [qemu.tool_path(tool)] + [str(a) for a in args]
    e = dict(os.environ, LC_ALL='C', **ENV)
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=timeout, env=e, preexec_fn=preexec)
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def sanitized():
    """True when QIMG is an ASan/UBSan build (make asan): its memory use and stack frames
    are not the product's, so the memory-limit and stack-depth tests do not apply."""
    with open(qemu.QIMG, 'rb') as f:
        return b'__asan_init' in f.read()


needs_plain_build = pytest.mark.skipif('sanitized()', reason='sanitizer build')


def assert_same(cwd, *args):
    q = run('qemu', cwd, *args)
    i = run('qimg', cwd, *args)
    assert i[1] == q[1], 'stdout of %s differs\nqemu-img:\n%s\nqimg:\n%s' % (args, q[1], i[1])
    assert i[2] == q[2], 'stderr of %s differs\nqemu-img:\n%s\nqimg:\n%s' % (args, q[2], i[2])
    assert i[0] == q[0], 'exit code of %s: qemu-img %d, qimg %d' % (args, q[0], i[0])
    return q


@contextlib.contextmanager
def fifo_writer(path):
    """Holds the FIFO open read-write, so that a reader's open(2) returns at once (what a
    writer attached to it does for qemu-img)."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        yield
    finally:
        os.close(fd)


def create(d, name, *args, size='1M'):
    qemu.qemu_img('create', '-q', '-f', 'qcow2', *args, name, size, cwd=d, check=True)


def drop_backing_format(path):
    """Turns the backing-format extension into an unknown one (ignored by both tools), so
    the backing file's format is probed; qemu-img 7.2 no longer creates such images."""
    with open(path, 'r+b') as f:
        hdr = f.read(65536)
        off = struct.unpack('>I', hdr[100:104])[0]
        while True:
            magic, length = struct.unpack('>II', hdr[off:off + 8])
            if magic == 0:
                raise AssertionError('no backing format extension')
            if magic == 0xE2792ACA:
                f.seek(off)
                f.write(struct.pack('>I', 0x12345678))
                return
            off += 8 + ((length + 7) & ~7)


def with_data_file(d, name, target):
    """A qcow2 image whose external data file name is target (created with a placeholder
    name of the same length, then patched, so the extension keeps its size)."""
    ph = 'X' * len(target)
    create(d, name, '-o', 'data_file=%s' % ph)
    os.unlink(os.path.join(d, ph))
    p = os.path.join(d, name)
    data = open(p, 'rb').read()
    i = data.find(ph.encode())
    assert i > 0
    with open(p, 'r+b') as f:
        f.seek(i)
        f.write(target.encode())


# Non-images: (id, path relative to the test dir or absolute). 'p' is a FIFO, 'd' a
# directory; /proc/self/mem is a regular file whose length cannot be had; 'null' a
# character device (qemu's host_device driver: a 0-byte raw image): the test's own node of
# /dev/null's device, because both tools take OFD locks on the device file and a shard
# running beside this one would hold the shared /dev/null's (seen once in a full run).
TARGETS = [('fifo', 'p'), ('dir', 'd'), ('procmem', '/proc/self/mem'), ('devnull', 'null')]
COMMANDS = [('info',), ('info', '--backing-chain'), ('info', '--output=json'), ('check',),
            ('check', '-r', 'all'), ('check', '-r', 'leaks'), ('map',), ('map', '--output=json'),
            ('compare', 'q.qcow2'), ('compare', '-s', 'q.qcow2')]


def cmdline(cmd, f):
    if cmd[0] == 'compare':
        return cmd[:-1] + (cmd[-1], f)
    return cmd + (f,)


@pytest.fixture
def hostile(tmp_path):
    d = str(tmp_path)
    os.mkfifo(os.path.join(d, 'p'))
    os.mkdir(os.path.join(d, 'd'))
    try:
        os.mknod(os.path.join(d, 'null'), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:   # not root: the shared device itself
        os.symlink('/dev/null', os.path.join(d, 'null'))
    create(d, 'q.qcow2')
    return d


@pytest.mark.parametrize('cmd', COMMANDS, ids=lambda c: '_'.join(c).replace('-', ''))
@pytest.mark.parametrize('target', TARGETS, ids=lambda t: t[0])
@pytest.mark.parametrize('fmt', [(), ('-f', 'raw'), ('-f', 'qcow2')], ids=['probe', 'raw', 'qcow2'])
def test_image_is_not_a_file(hostile, target, cmd, fmt):
    args = cmdline(cmd[:1] + fmt + cmd[1:], target[1])
    if target[0] == 'fifo':
        with fifo_writer(os.path.join(hostile, 'p')):
            q = assert_same(hostile, *args)
        # no writer: qemu-img blocks in open(2); qimg answers as qemu does with a writer
        i = run('qimg', hostile, *args, timeout=10)
        assert i == q
    else:
        assert_same(hostile, *args)


@pytest.mark.parametrize('cmd', COMMANDS, ids=lambda c: '_'.join(c).replace('-', ''))
@pytest.mark.parametrize('target', TARGETS, ids=lambda t: t[0])
@pytest.mark.parametrize('bfmt', ['raw', 'qcow2', 'probed'])
def test_backing_is_not_a_file(hostile, target, cmd, bfmt):
    d = hostile
    if bfmt == 'probed':
        create(d, 't.qcow2', '-u', '-b', target[1], '-F', 'raw')
        drop_backing_format(os.path.join(d, 't.qcow2'))
    else:
        create(d, 't.qcow2', '-u', '-b', target[1], '-F', bfmt)
    args = cmdline(cmd, 't.qcow2')
    if target[0] == 'fifo':
        with fifo_writer(os.path.join(d, 'p')):
            q = assert_same(d, *args)
        i = run('qimg', d, *args, timeout=10)
        assert i == q
    else:
        assert_same(d, *args)


@pytest.mark.parametrize('cmd', COMMANDS, ids=lambda c: '_'.join(c).replace('-', ''))
@pytest.mark.parametrize('target', TARGETS, ids=lambda t: t[0])
def test_data_file_is_not_a_file(hostile, target, cmd):
    d = hostile
    with_data_file(d, 't.qcow2', target[1])
    args = cmdline(cmd, 't.qcow2')
    if target[0] == 'fifo':
        with fifo_writer(os.path.join(d, 'p')):
            q = assert_same(d, *args)
        i = run('qimg', d, *args, timeout=10)
        assert i == q
    else:
        assert_same(d, *args)


def test_info_never_opens_the_data_file(hostile):
    """qemu-img info reads the data file's name from the header and never opens it: a FIFO
    without a writer does not block it (datafile_fifo_hang.sh), and the name is shown."""
    d = hostile
    with_data_file(d, 't.qcow2', 'p')
    for out, shown in (([], '    data file: p\n'), (['--output=json'], '"data-file": "p"')):
        q = run('qemu', d, 'info', *out, 't.qcow2', timeout=10)
        i = run('qimg', d, 'info', *out, 't.qcow2', timeout=10)
        assert i == q and q[0] == 0
        assert shown in i[1]


def test_fifo_image_repro(hostile):
    """fifo_image.sh: a FIFO with a writer holding a qcow2 image is refused, not read as a
    0-byte raw image."""
    d = hostile
    with fifo_writer(os.path.join(d, 'p')):
        rc, out, err = assert_same(d, 'info', 'p')
    assert rc == 1 and out == ''
    assert err == "qemu-img: Could not open 'p': 'file' driver requires 'p' to be a regular file\n"


def test_datafile_fifo_check_repair(hostile):
    """datafile_fifo_hang.sh: check -r all on an image whose data file is a FIFO."""
    d = hostile
    with_data_file(d, 't.qcow2', 'p')
    rc, _, err = run('qimg', d, 'check', '-r', 'all', 't.qcow2', timeout=10)
    assert (rc, err) == (1, "qemu-img: Could not open 't.qcow2': 'file' driver requires 'p' "
                            "to be a regular file\n")
    with fifo_writer(os.path.join(d, 'p')):
        assert_same(d, 'check', '-r', 'all', 't.qcow2')


# -- backing chains --------------------------------------------------------------------------

CHAIN_COMMANDS = [('check',), ('check', '-r', 'all'), ('check', '-r', 'leaks'),
                  ('check', '--output=json'), ('map',), ('compare', 'q.qcow2'),
                  ('info', '--backing-chain')]


def _bad_grandparent(d, kind):
    if kind == 'missing':
        create(d, 'mid.qcow2', '-u', '-b', 'missing.qcow2', '-F', 'qcow2')
    elif kind == 'not-qcow2':
        with open(os.path.join(d, 'junk.qcow2'), 'wb') as f:
            f.write(b'junk' * 1000)
        create(d, 'mid.qcow2', '-u', '-b', 'junk.qcow2', '-F', 'qcow2')
    elif kind == 'bad-header':
        create(d, 'bad.qcow2')
        with open(os.path.join(d, 'bad.qcow2'), 'r+b') as f:
            f.seek(20)                        # cluster_bits = 8: below qemu's minimum
            f.write(struct.pack('>I', 8))
        create(d, 'mid.qcow2', '-u', '-b', 'bad.qcow2', '-F', 'qcow2')
    elif kind == 'unknown-format':
        # qemu-img create refuses an unknown backing format: write "raw", patch it
        create(d, 'base.qcow2')
        create(d, 'mid.qcow2', '-u', '-b', 'base.qcow2', '-F', 'raw')
        p = os.path.join(d, 'mid.qcow2')
        data = open(p, 'rb').read()
        i = data.find(b'raw\0')
        assert i > 0
        with open(p, 'r+b') as f:
            f.seek(i)
            f.write(b'xyz')
    elif kind == 'bad-data-file':
        create(d, 'base.qcow2', '-o', 'data_file=base.raw')
        os.unlink(os.path.join(d, 'base.raw'))
        create(d, 'mid.qcow2', '-u', '-b', 'base.qcow2', '-F', 'qcow2')
    create(d, 'top.qcow2', '-u', '-b', 'mid.qcow2', '-F', 'qcow2')


@pytest.mark.parametrize('cmd', CHAIN_COMMANDS, ids=lambda c: '_'.join(c).replace('-', ''))
@pytest.mark.parametrize('kind', ['missing', 'not-qcow2', 'bad-header', 'unknown-format',
                                  'bad-data-file'])
def test_check_opens_the_whole_chain(tmp_path, kind, cmd):
    """check_backing_chain.sh: a broken image below the first backing file fails check (and
    map, compare) as in qemu-img, exit 1, instead of "No errors"."""
    d = str(tmp_path)
    create(d, 'q.qcow2')
    _bad_grandparent(d, kind)
    rc, _, err = assert_same(d, *cmdline(cmd, 'top.qcow2'))
    if cmd[0] == 'info':
        # info opens each layer on its own, never a data file
        assert rc == (0 if kind == 'bad-data-file' else 1)
    else:
        assert rc == (2 if cmd[0] == 'compare' else 1)
        assert 'Could not open backing file: Could not open backing file: ' in err


def test_check_chain_repro(tmp_path):
    d = str(tmp_path)
    create(d, 'mid.qcow2', '-u', '-b', 'missing.qcow2', '-F', 'qcow2', size='64M')
    create(d, 'top.qcow2', '-u', '-b', 'mid.qcow2', '-F', 'qcow2', size='64M')
    rc, out, err = assert_same(d, 'check', 'top.qcow2')
    assert (rc, out) == (1, '')
    assert err == ("qemu-img: Could not open 'top.qcow2': Could not open backing file: Could not "
                   "open backing file: Could not open 'missing.qcow2': No such file or directory\n")


def create_backed(d, img, back):
    """img with backing file back (qcow2), also when back is img itself (which qemu-img
    create refuses: made with a placeholder name of the same length, then patched)."""
    if img != back:
        create(d, img, '-u', '-b', back, '-F', 'qcow2')
        return
    ph = 'Z' * len(back)
    create(d, img, '-u', '-b', ph, '-F', 'qcow2')
    p = os.path.join(d, img)
    data = open(p, 'rb').read()
    i = data.find(ph.encode())
    assert i > 0
    with open(p, 'r+b') as f:
        f.seek(i)
        f.write(back.encode())


LOOPS = {
    # name: list of (image, backing); the first image is the one opened
    'self': [('a.qcow2', 'a.qcow2')],
    'two': [('a.qcow2', 'b.qcow2'), ('b.qcow2', 'a.qcow2')],
    'below-top': [('t.qcow2', 'a.qcow2'), ('a.qcow2', 'b.qcow2'), ('b.qcow2', 'a.qcow2')],
    'via-path': [('a.qcow2', 'sub/b.qcow2'), ('sub/b.qcow2', '../a.qcow2')],
}
LOOP_MSG = {
    'self': "Could not open backing file: Backing file 'a.qcow2' creates an infinite loop.",
    'two': "Could not open backing file: Could not open backing file: Backing file 'a.qcow2' "
           "creates an infinite loop.",
    'below-top': "Could not open backing file: Could not open backing file: Could not open "
                 "backing file: Backing file 'a.qcow2' creates an infinite loop.",
    'via-path': "Could not open backing file: Could not open backing file: Backing file "
                "'sub/../a.qcow2' creates an infinite loop.",
}


@pytest.mark.parametrize('cmd', [('check',), ('check', '-r', 'all'), ('map',),
                                 ('map', '--output=json'), ('compare', 'q.qcow2'),
                                 ('compare', '-s', 'q.qcow2')],
                         ids=lambda c: '_'.join(c).replace('-', ''))
@pytest.mark.parametrize('loop', sorted(LOOPS))
def test_backing_loop_is_refused(tmp_path, loop, cmd):
    """qemu-img recurses on a backing loop until it runs out of resources (it hangs; with -r
    a loop back to the top image fails on its own write lock). qimg refuses the loop at
    once: exit 1 (compare: 2, its open error), one clear message."""
    d = str(tmp_path)
    os.mkdir(os.path.join(d, 'sub'))
    create(d, 'q.qcow2')
    for img, back in LOOPS[loop]:
        create_backed(d, img, back)
    top = LOOPS[loop][0][0]
    rc, out, err = run('qimg', d, *cmdline(cmd, top), timeout=10)
    assert rc == (2 if cmd[0] == 'compare' else 1)
    assert out == ''
    assert err == "qemu-img: Could not open '%s': %s\n" % (top, LOOP_MSG[loop])


def test_backing_loop_info_chain(tmp_path):
    """info --backing-chain detects loops itself in qemu-img: same message, exit 1."""
    d = str(tmp_path)
    for img, back in LOOPS['below-top']:
        create_backed(d, img, back)
    rc, _, err = assert_same(d, 'info', '--backing-chain', 't.qcow2')
    assert rc == 1 and 'infinite loop' in err


def test_repair_loop_back_to_top(tmp_path):
    """check -r of a loop back to the top image: qemu-img fails on its own lock (exit 1);
    qimg exits 1 too, naming the loop."""
    d = str(tmp_path)
    for img, back in LOOPS['two']:
        create_backed(d, img, back)
    q = run('qemu', d, 'check', '-r', 'all', 'a.qcow2')
    i = run('qimg', d, 'check', '-r', 'all', 'a.qcow2')
    assert q[0] == i[0] == 1
    assert 'infinite loop' in i[2]


# -- deep chains -----------------------------------------------------------------------------

def make_chain(d, depth, write_each=False):
    """c0 (64 KiB of 0x42 at 0) <- c1 <- ... <- c<depth>, built from one qemu-img template
    by patching the fixed-width backing name (qemu-img create per layer would take minutes).
    write_each: every layer has an L2 table and a data cluster (4 KiB of 0x17 at 0)."""
    create(d, 'c00000.qcow2', size='64M')
    qemu.io(os.path.join(d, 'c00000.qcow2'), 'write -P 0x42 0 64k', cwd=d)
    create(d, 't.qcow2', '-u', '-b', 'cXXXXX.qcow2', '-F', 'qcow2', size='64M')
    if write_each:
        # the template's backing file does not exist: write without opening it
        qemu.qemu_io('-c', 'write -P 0x17 0 4k', 'json:{"driver": "qcow2", "backing": null, '
                     '"file": {"driver": "file", "filename": "t.qcow2"}}', cwd=d, check=True)
    t = open(os.path.join(d, 't.qcow2'), 'rb').read()
    i = t.find(b'cXXXXX')
    assert i > 0
    # the template's non-zero 4 KiB blocks; the copies are sparse (16 KiB each on disk)
    blocks = [(o, t[o:o + 4096]) for o in range(0, len(t), 4096) if t[o:o + 4096].strip(b'\0')]
    assert any(o <= i < o + 4096 for o, _ in blocks)
    for k in range(1, depth + 1):
        name = b'c%05d' % (k - 1)
        with open(os.path.join(d, 'c%05d.qcow2' % k), 'wb') as f:
            for o, b in blocks:
                if o <= i < o + 4096:
                    b = b[:i - o] + name + b[i - o + 6:]
                f.seek(o)
                f.write(b)
            f.truncate(len(t))
    os.unlink(os.path.join(d, 't.qcow2'))
    return 'c%05d.qcow2' % depth


# Runs argv[1:] as a child of this small interpreter and prints its rusage peak RSS.
_RSS_LAUNCHER = (
    'import os, sys\n'
    'pid = os.fork()\n'
    'if pid == 0:\n'
    '    os.execv(sys.argv[1], sys.argv[1:])\n'
    '_, status, ru = os.wait4(pid, 0)\n'
    'sys.stderr.write("\\nmaxrss=%d\\n" % ru.ru_maxrss)\n'
    'sys.exit(os.waitstatus_to_exitcode(status))\n')


def peak_rss_kb(cwd, *args):
    """Runs qimg; returns (rc, stdout, peak RSS in KiB of that process alone).

    Linux carries a process's RSS high-water mark across exec (the memory of the process
    that forked it counts), so a child forked from pytest, which grows as a shard runs,
    would report pytest's size; qimg is forked from a fresh small interpreter instead."""
    cmd = [sys.executable, '-c', _RSS_LAUNCHER, qemu.tool_path('qimg')] + list(args)
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL)
    rss = int(p.stderr.decode().rsplit('maxrss=', 1)[1])
    return p.returncode, p.stdout.decode(), rss


@pytest.fixture(scope='module')
def chain1000(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('chain1000'))
    return d, make_chain(d, 1000)


@pytest.fixture(scope='module')
def chain1000w(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('chain1000w'))
    return d, make_chain(d, 1000, write_each=True)


def test_chain_1000_map_matches_qemu(chain1000w):
    """chain_depth.sh: qemu-img follows chains of 1000 images (and more); so does qimg."""
    d, top = chain1000w
    for out in ('human', 'json'):
        q = run('qemu', d, 'map', '--output=%s' % out, top, timeout=300)
        i = run('qimg', d, 'map', '--output=%s' % out, top, timeout=300)
        assert i == q and q[0] == 0


def test_chain_1000_check_compare(chain1000):
    d, top = chain1000
    rc, out, err = run('qimg', d, 'check', top, timeout=120)
    assert (rc, out, err) == (0, 'No errors were found on the image.\n'
                                 'Image end offset: 262144\n', '')
    rc, out, err = run('qimg', d, 'compare', top, 'c00000.qcow2', timeout=120)
    assert (rc, out, err) == (0, 'Images are identical.\n', '')
    rc, out, _ = run('qimg', d, 'compare', top, 'c00001.qcow2', timeout=120)
    assert (rc, out) == (0, 'Images are identical.\n')


def test_chain_1000_check_finds_broken_bottom(tmp_path):
    """A broken image 1000 levels down still fails check, with qemu-img's message."""
    d = str(tmp_path)
    top = make_chain(d, 1000)
    os.unlink(os.path.join(d, 'c00000.qcow2'))
    rc, out, err = run('qimg', d, 'check', top, timeout=120)
    assert (rc, out) == (1, '')
    assert err == ("qemu-img: Could not open '%s': " % top +
                   'Could not open backing file: ' * 1000 +
                   "Could not open 'c00000.qcow2': No such file or directory\n")


@needs_plain_build
@pytest.mark.parametrize('args', [('map',), ('map', '--output=json'), ('check',),
                                  ('compare', 'TOP', 'c00999.qcow2')], ids=lambda a: a[0])
def test_chain_1000_memory_is_bounded(chain1000w, args):
    """A 1000-deep chain in which every layer has an L2 table (64 KiB clusters, 64 MiB of
    tables in all): the L2 caches of all layers together hold at most 32 MiB, so qimg's
    peak RSS stays below 48 MiB (measured: map 37 MiB, check 5 MiB, compare 40 MiB;
    qemu-img 7.2: 264, 139 and 520 MiB)."""
    d, top = chain1000w
    args = [top if a == 'TOP' else a for a in args]
    if args[0] != 'compare':
        args.append(top)
    rc, _, rss = peak_rss_kb(d, *args)
    assert rc == 0
    assert rss < 48 * 1024, 'peak RSS %d KiB' % rss


def test_chain_2000(tmp_path):
    """Deeper than 1000: qemu-img 7.2 has no designed limit (map and check of 2000 and 4000
    images work, slowly; its compare dies of SIGSEGV from about 1090 images); qimg map and
    compare work."""
    d = str(tmp_path)
    top = make_chain(d, 2000)
    rc, out, _ = run('qimg', d, 'map', '--output=json', top, timeout=120)
    assert rc == 0
    assert out.startswith('[{ "start": 0, "length": 65536, "depth": 2000, "present": true, '
                          '"zero": false, "data": true, "offset": ')
    assert run('qimg', d, 'compare', top, 'c00000.qcow2', timeout=120)[:2] == \
        (0, 'Images are identical.\n')


def _nofile(n):
    def f():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return f


def test_chain_limit(tmp_path):
    """qimg follows at most 10000 backing files (a guest read descends the chain
    recursively; 10000 layers fit the stack with room to spare); one more is refused with a
    message, never a crash. Needs 10010 file descriptors."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 10100:
        pytest.skip('hard RLIMIT_NOFILE below 10100')
    d = str(tmp_path)
    top = make_chain(d, 10001)
    try:
        rc, out, err = run('qimg', d, 'compare', 'c10000.qcow2', 'c00000.qcow2',
                           timeout=300, preexec=_nofile(10100))
        assert (rc, out, err) == (0, 'Images are identical.\n', '')
        for cmd in (('map',), ('check',), ('compare', 'c00000.qcow2')):
            args = cmd + (top,) if cmd[0] != 'compare' else ('compare', top, 'c00000.qcow2')
            rc, out, err = run('qimg', d, *args, timeout=300, preexec=_nofile(10100))
            assert rc == (2 if cmd[0] == 'compare' else 1) and out == ''
            assert err == ("qemu-img: Could not open '%s': Backing chain too deep: more than "
                           "10000 backing files\n" % top)
        # a read that must reach the bottom image through all 10000 layers (a sanitizer
        # build's stack frames are several times larger: not run there)
        if sanitized():
            return
        with open(os.path.join(d, 'z.raw'), 'wb') as f:
            f.truncate(64 << 20)
        rc, out, err = run('qimg', d, 'compare', 'c10000.qcow2', 'z.raw', timeout=300,
                           preexec=_nofile(10100))
        assert (rc, out, err) == (1, 'Content mismatch at offset 0!\n', '')
    finally:
        for n in os.listdir(d):
            os.unlink(os.path.join(d, n))


# -- out of memory ---------------------------------------------------------------------------

def _limit_as(kib):
    def f():
        resource.setrlimit(resource.RLIMIT_AS, (kib * 1024, kib * 1024))
    return f


@needs_plain_build
def test_compare_out_of_memory_is_not_differ(tmp_path):
    """compare_oom_rc.sh: out of memory while comparing two identical files exits 4 (a read
    error), never 1 ("images differ")."""
    d = str(tmp_path)
    for n in ('a.raw', 'b.raw'):
        with open(os.path.join(d, n), 'wb') as f:
            f.write(b'\0' * (4 << 20))
    # the limits start where both images open (qimg info of each succeeds), so that they
    # reach the read phase whatever the binary's own size; an out-of-memory at open is
    # test_out_of_memory_exit_codes' case (exit 2)
    floor = next((k for k in range(4000, 32000, 250)
                  if all(run('qimg', d, 'info', n, preexec=_limit_as(k))[0] == 0
                         for n in ('a.raw', 'b.raw'))), None)
    assert floor, 'info never opened the images under 32000 KiB'
    seen = set()
    for kib in (floor + 500, floor + 1000, floor + 2000, floor + 4000, floor + 8000):
        rc, out, err = run('qimg', d, 'compare', 'a.raw', 'b.raw', preexec=_limit_as(kib))
        assert rc != 1, 'limit %d KiB: exit 1 with %r' % (kib, err)
        if 'out of memory' in err:
            assert rc == 4 and out == '', (kib, rc, out)
            seen.add(kib)
    assert seen, 'no limit made compare run out of memory'
    assert run('qimg', d, 'compare', 'a.raw', 'b.raw')[:2] == (0, 'Images are identical.\n')


@needs_plain_build
def test_out_of_memory_exit_codes(tmp_path):
    """Under growing memory limits every command either succeeds or fails with its own error
    code: info, map and check 1, compare 2 (open), 3 (block status) or 4 (read), never
    compare's 1."""
    d = str(tmp_path)
    create(d, 'big.qcow2', size='64G')
    qemu.io(os.path.join(d, 'big.qcow2'), 'write 0 1M', 'write 10G 1M', cwd=d)
    codes = {'info': {0, 1}, 'map': {0, 1}, 'check': {0, 1}, 'compare': {0, 2, 3, 4}}
    hit = set()
    # fine steps: the window between "the binary loads" and "map has what it needs" is a
    # few MiB wide and moves with the size of the binary
    for kib in list(range(4000, 12000, 100)) + list(range(12000, 40000, 4000)):
        for cmd in (['info'], ['map'], ['check'], ['compare', 'big.qcow2']):
            rc, _, err = run('qimg', d, *cmd, 'big.qcow2', preexec=_limit_as(kib))
            # the dynamic loader failing before main (exit 127) is not qimg's answer
            if 'error while loading shared libraries' in err or \
                    'cannot allocate TLS data structures for initial thread' in err:
                continue
            assert rc in codes[cmd[0]], '%s under %d KiB: exit %d: %s' % (cmd, kib, rc, err)
            if 'out of memory' in err:
                hit.add(cmd[0])
    assert {'map', 'compare'} <= hit


@needs_plain_build
def test_compare_out_of_memory_while_opening(tmp_path):
    """A 1 PiB image has a 16 MiB L1 table: with too little memory to load it, compare fails
    in its open (exit 2) and then, with a little more, in its reads (exit 4); never 1."""
    d = str(tmp_path)
    create(d, 'huge.qcow2', size='1P')
    seen = set()
    for kib in (30000, 50000, 70000):
        rc, out, err = run('qimg', d, 'compare', 'huge.qcow2', 'huge.qcow2',
                           preexec=_limit_as(kib))
        assert rc in (0, 2, 3, 4), (kib, rc, err)
        if 'out of memory' in err:
            seen.add(rc)
    assert 2 in seen
    # info loads the 16 MiB L1 table (read in place since the one table loader, so one
    # 16 MiB buffer, no longer two): 20 MB of address space cannot hold it
    rc, _, err = run('qimg', d, 'info', 'huge.qcow2', preexec=_limit_as(20000))
    assert rc == 1 and 'out of memory' in err
