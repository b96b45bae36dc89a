"""Differential tests for `compare`: qimg vs real qemu-img 7.2 — same exit
code, same stdout (messages, mismatch offsets, progress) and same stderr.

Both tools run with cwd = the image directory and relative names; qimg runs
through a symlink named `qemu-img` so message prefixes agree.
"""

import os
import shutil

import pytest

import guest_images
import injector
import qemu
from conftest import case_params

K = 1024
M = 1024 * K


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """name -> (dir, filename, raw name): the catalogue image plus its
    `qemu-img convert -O raw` (guest content) in the same directory."""
    root = tmp_path_factory.mktemp('cmp-images')
    cache = {}

    def get(name):
        if name not in cache:
            d = str(root / name)
            f = guest_images.build(name, d)
            qemu.qemu_img('convert', '-O', 'raw', f, 'guest.raw', cwd=d, check=True)
            cache[name] = (d, f, 'guest.raw')
        return cache[name]
    return get


def both(d, *args):
    q = qemu.run(qemu.tool_path('qemu'), 'compare', *args, cwd=d)
    i = qemu.run(qemu.tool_path('qimg'), 'compare', *args, cwd=d)
    return q, i


def assert_same(q, i):
    assert i[1] == q[1], 'stdout differs\nqemu-img:\n%r\nqimg:\n%r' % (q[1], i[1])
    assert i[2] == q[2], 'stderr differs\nqemu-img:\n%s\nqimg:\n%s' % (q[2], i[2])
    assert i[0] == q[0], 'exit code: qemu-img %d, qimg %d' % (q[0], i[0])


def flip(path, off):
    with open(path, 'r+b') as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x5a]))


# -- identical content, any pair of formats ---------------------------------

@pytest.mark.parametrize('name', guest_images.NAMES)
def test_compare_with_guest_raw(built, name):
    d, f, raw = built(name)
    for args in ((f, raw), (raw, f), ('-s', f, raw), ('-s', raw, f), (f, f), ('-s', f, f)):
        q, i = both(d, *args)
        assert_same(q, i)
    assert q[0] == 0 and q[1] == 'Images are identical.\n'


@pytest.mark.parametrize('name', ['mixed-64k', 'chain3', 'extl2-cs65536', 'compressed-zlib',
                                  'data-file', 'mixed-cs512'])
def test_compare_reconverted_qcow2(built, name):
    """Same content, different layout: qcow2 with 4k clusters and a
    compressed one (strict mode tells them apart by status words)."""
    d, f, _ = built(name)
    for out, extra in (('re4k.qcow2', ['-o', 'cluster_size=4096']), ('rec.qcow2', ['-c'])):
        if not os.path.exists(os.path.join(d, out)):
            qemu.qemu_img('convert', '-O', 'qcow2', *extra, f, out, cwd=d, check=True)
        for args in ((f, out), ('-s', f, out), (out, f)):
            assert_same(*both(d, *args))


# -- one differing byte -----------------------------------------------------

@pytest.mark.parametrize('where', ['start', 'middle', 'last', 'unallocated', 'zero-region',
                                   'sector-end'])
@pytest.mark.parametrize('name', ['mixed-64k', 'chain3', 'extl2-cs131072', 'compressed-zstd',
                                  'data-file-raw', 'raw-sparse'])
def test_compare_one_byte(built, name, where, tmp_path):
    d, f, raw = built(name)
    size = os.path.getsize(os.path.join(d, raw))
    off = {'start': 0, 'middle': size // 2 + 1000, 'last': size - 1,
           'unallocated': min(size - 1, 1900 * K), 'zero-region': 10 * 64 * K + 4,
           'sector-end': 64 * K + 511}[where]
    shutil.copy(os.path.join(d, raw), str(tmp_path / 'diff.raw'))
    flip(str(tmp_path / 'diff.raw'), off)
    dd = str(tmp_path / 'diff.raw')
    for args in ((f, dd), (dd, f), ('-s', f, dd), ('-q', f, dd)):
        q, i = both(d, *args)
        assert_same(q, i)
    assert q[0] == 1


def test_compare_one_byte_both_qcow2(tmp_path):
    d = str(tmp_path)
    for n in ('a.qcow2', 'b.qcow2'):
        qemu.make_image(os.path.join(d, n), '4M')
        qemu.io(os.path.join(d, n), 'write -P 1 0 3M')
    qemu.io(os.path.join(d, 'b.qcow2'), 'write -P 2 1000 1')
    assert_same(*both(d, 'a.qcow2', 'b.qcow2'))
    qemu.io(os.path.join(d, 'b.qcow2'), 'write -P 1 1000 1', 'write -P 9 %d 1' % (3 * M - 1))
    assert_same(*both(d, 'a.qcow2', 'b.qcow2'))
    assert_same(*both(d, '-s', 'a.qcow2', 'b.qcow2'))


# -- sizes ------------------------------------------------------------------

@pytest.mark.parametrize('tail', ['none', 'zero-write', 'data', 'data-then-zero', 'raw-data'])
def test_compare_size_mismatch(tmp_path, tail):
    d = str(tmp_path)
    small, big = os.path.join(d, 'small.qcow2'), os.path.join(d, 'big.qcow2')
    qemu.make_image(small, '1M')
    qemu.io(small, 'write -P 3 0 64k')
    if tail == 'raw-data':
        big = os.path.join(d, 'big.raw')
        qemu.make_image(big, '3M', fmt='raw')
        qemu.io(big, 'write -P 3 0 64k', 'write -P 4 %d 512' % (2 * M + 4096), fmt='raw')
    else:
        qemu.make_image(big, '3M')
        qemu.io(big, 'write -P 3 0 64k')
        if tail == 'zero-write':
            qemu.io(big, 'write -z 1536k 64k')
        elif tail == 'data':
            qemu.io(big, 'write -P 4 1500000 1')
        elif tail == 'data-then-zero':
            qemu.io(big, 'write -P 0 1M 1M', 'write -P 4 %d 1' % (3 * M - 1))
    b = os.path.basename(big)
    for args in (('small.qcow2', b), (b, 'small.qcow2'), ('-s', 'small.qcow2', b),
                 ('-q', b, 'small.qcow2')):
        assert_same(*both(d, *args))


# -- strict mode quirks -----------------------------------------------------

def test_compare_unallocated_vs_zero(tmp_path):
    d = str(tmp_path)
    qemu.make_image(os.path.join(d, 'a.qcow2'), '1M')
    qemu.make_image(os.path.join(d, 'b.qcow2'), '1M')
    qemu.io(os.path.join(d, 'b.qcow2'), 'write -P 0 64k 64k')
    qemu.make_image(os.path.join(d, 'c.qcow2'), '1M')
    qemu.io(os.path.join(d, 'c.qcow2'), 'write -z 64k 64k')
    for x, y in (('a', 'b'), ('a', 'c'), ('b', 'c')):
        for s in ((), ('-s',)):
            assert_same(*both(d, *s, x + '.qcow2', y + '.qcow2'))


def test_compare_strict_eof_quirk(tmp_path):
    d = str(tmp_path)
    qemu.make_image(os.path.join(d, 'a.qcow2'), '1M')
    qemu.make_image(os.path.join(d, 'b.qcow2'), '1M')
    qemu.io(os.path.join(d, 'a.qcow2'), 'write -P 1 0 64k')
    qemu.io(os.path.join(d, 'b.qcow2'), 'write -P 1 0 64k', 'write -P 2 960k 64k')
    assert_same(*both(d, '-s', 'a.qcow2', 'b.qcow2'))
    assert_same(*both(d, 'a.qcow2', 'b.qcow2'))


# -- progress ---------------------------------------------------------------

def test_compare_progress(tmp_path):
    """-p prints qemu's "    (x.xx/100%)\\r" lines; the values depend on the
    step sizes, so they match only if the steps are qemu's."""
    d = str(tmp_path)
    for n in ('a.qcow2', 'b.qcow2'):
        qemu.make_image(os.path.join(d, n), '64M')
        qemu.io(os.path.join(d, n), 'write -P 1 0 9M', 'write -z 20M 5M',
                'write -P 2 33M 1M', 'write -P 3 60M 3M')
    qemu.qemu_img('convert', '-O', 'raw', 'a.qcow2', 'a.raw', cwd=d, check=True)
    qemu.make_image(os.path.join(d, 'big.qcow2'), '100M')
    for args in (('-p', 'a.qcow2', 'b.qcow2'), ('-p', 'a.qcow2', 'a.raw'),
                 ('-p', '-q', 'a.qcow2', 'b.qcow2'), ('-p', 'a.qcow2', 'big.qcow2'),
                 ('-p', '-s', 'a.qcow2', 'a.raw')):
        assert_same(*both(d, *args))


# -- errors -----------------------------------------------------------------

@pytest.mark.parametrize('args', [
    (), ('a.qcow2',), ('a.qcow2', 'a.qcow2', 'a.qcow2'), ('-x', 'a.qcow2', 'a.qcow2'),
    ('-f',), ('a.qcow2', 'nonexistent'), ('nonexistent', 'a.qcow2'),
    ('-T', 'bogus', 'a.qcow2', 'a.qcow2'), ('-T', 'none', 'nonexistent', 'a.qcow2'),
    ('-f', 'nosuchfmt', 'a.qcow2', 'a.qcow2'), ('-F', 'qcow2', 'a.qcow2', 'a.raw'),
    ('-f', 'raw', 'a.qcow2', 'a.raw'), ('-f', 'raw', '-F', 'raw', 'a.qcow2', 'a.raw'),
    ('-U', '-T', 'writethrough', 'a.qcow2', 'a.raw'), ('-q', 'a.qcow2', 'nonexistent'),
])
def test_compare_errors(tmp_path, args):
    d = str(tmp_path)
    qemu.make_image(os.path.join(d, 'a.qcow2'), '1M')
    qemu.io(os.path.join(d, 'a.qcow2'), 'write -P 1 0 64k')
    qemu.qemu_img('convert', '-O', 'raw', 'a.qcow2', 'a.raw', cwd=d, check=True)
    assert_same(*both(d, *args))


@pytest.mark.parametrize('case', case_params(injector.ALL))
def test_compare_injector(case, image_factory):
    """Corrupt metadata: the same exit code and messages (3 for a failed
    allocation query, 4 for a failed read), never a crash."""
    d, f = image_factory(case)
    assert_same(*both(d, f, f))
    assert_same(*both(d, '-s', f, f))


BLKDEBUG_CONF = '[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce ="off"\n'


@pytest.mark.parametrize('args', [
    # iotest 074: the first guest data read arms the rule, the read fails
    ['blkdebug:bd.conf:t.qcow2', 't2.qcow2'],
    ['t2.qcow2', 'blkdebug:bd.conf:t.qcow2'],
    ['blkdebug:bd.conf:t.qcow2', 'empty.qcow2'],
    ['blkdebug::t.qcow2', 't2.qcow2'],
    ['-f', 'raw', '-F', 'raw', 'blkdebug:bd.conf:r.raw', 'r.raw'],
    ['blkdebug:nonexist.conf:t.qcow2', 't2.qcow2'],
    ["json:{'driver':'qcow2','file':{'driver':'blkdebug','inject-error':[{'event':"
     "'read_aio','errno':'28'}],'image':{'driver':'file','filename':'t.qcow2'}}}", 't2.qcow2'],
    ["json:{'driver':'qcow2','file':{'driver':'blkdebug','inject-error':[{'event':"
     "'read_aio','errno':'28','once':'on'}],'image':{'driver':'file','filename':'t.qcow2'}}}",
     't.qcow2'],
], ids=lambda a: ' '.join(a)[:50])
def test_compare_blkdebug(tmp_path, args):
    d = str(tmp_path)
    with open(os.path.join(d, 'bd.conf'), 'w') as f:
        f.write(BLKDEBUG_CONF)
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', 't.qcow2', '1G',
                  cwd=d, check=True)
    shutil.copy(os.path.join(d, 't.qcow2'), os.path.join(d, 't2.qcow2'))
    qemu.io(os.path.join(d, 't.qcow2'), 'write -P 102 512 512', fmt='qcow2', cwd=d)
    qemu.qemu_img('create', '-q', '-f', 'qcow2', 'empty.qcow2', '0', cwd=d, check=True)
    qemu.qemu_img('create', '-q', '-f', 'raw', 'r.raw', '1M', cwd=d, check=True)
    assert_same(*both(d, *args))


@pytest.mark.parametrize('args', [
    ['-f', 'qcow2', '--image-opts', 'driver=qcow2,file.filename=b.qcow2',
     'driver=qcow2,file.filename=c.qcow2'],
    ['-F', 'qcow2', '--image-opts', 'driver=qcow2,file.filename=b.qcow2',
     'driver=qcow2,file.filename=c.qcow2'],
    ['--image-opts', 'driver=qcow2,file.filename=b.qcow2', 'driver=qcow2,file.filename=c.qcow2'],
    ['--image-opts', 'file.filename=b.qcow2', 'json:{"file.filename":"b.qcow2"}'],
    ['json:{"driver":"qcow2","file.filename":"b.qcow2"}', 'c.qcow2'],
], ids=lambda a: ' '.join(a)[:50])
def test_compare_image_opts(tmp_path, args):
    d = str(tmp_path)
    qemu.qemu_img('create', '-q', '-f', 'qcow2', 'b.qcow2', '1M', cwd=d, check=True)
    qemu.qemu_img('create', '-q', '-f', 'qcow2', 'c.qcow2', '2M', cwd=d, check=True)
    assert_same(*both(d, *args))
