"""`qimg bench` against the real qemu-img 7.2 bench.

Each case builds an image directory with the real qemu-img, copies it, runs `qemu-img bench
ARGS` in one copy and qimg (through a symlink named qemu-img, so the message prefix matches)
in the other, and requires the same exit status, stdout (the run time masked: "Run completed
in X seconds.") and stderr, and, after a write bench, byte-identical files: qemu's request
offsets, wrap-around and pattern bytes, and for qcow2 its cluster allocation. qemu's qcow2
allocation order with several requests in flight depends on timing, so qcow2 files are
compared byte for byte at depth 1 and by guest content (and a clean check) at depth 64.
The flush points of bench_cb's state machine are compared through the fdatasync calls strace
counts for drained flushes on raw images.
"""

import os
import re
import shutil

import pytest

import qemu

KIB, MIB = 1 << 10, 1 << 20

TIME = re.compile(r'^Run completed in \d+\.\d{3} seconds\.$', re.M)


def _norm(r):
    rc, out, err = r
    return rc, TIME.sub('Run completed in X seconds.', out), err


def _images(d):
    qemu.make_image(os.path.join(d, 'r'), size='1M', fmt='raw')
    qemu.make_image(os.path.join(d, 'q'), size='1M')


def _img(fmt, size='64M', **opts):
    def build(d):
        qemu.make_image(os.path.join(d, 'img'), size=size, fmt=fmt, **opts)
    return build


def _with_data(build, fmt='qcow2'):
    def b(d):
        build(d)
        qemu.io(os.path.join(d, 'img'), 'write -P 0x11 0 3M', 'write -P 0x22 40M 1M', fmt=fmt)
    return b


def _read_all(d):
    return {n: open(os.path.join(d, n), 'rb').read() for n in sorted(os.listdir(d))}


def _both(tmp_path, build, args):
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    a = qemu.copy_dir(str(orig), str(tmp_path / 'qemu'))
    b = qemu.copy_dir(str(orig), str(tmp_path / 'qimg'))
    ra = _norm(qemu.run(qemu.QEMU_IMG, 'bench', *args, cwd=a))
    rb = _norm(qemu.run(qemu.tool_path('qimg'), 'bench', *args, cwd=b))
    return a, b, ra, rb


# (id, bench args after `bench`) on the images r (raw, 1M) and q (qcow2, 1M)
MSG_CASES = [
    ('read-raw', ['-c', '10', '-f', 'raw', 'r']),
    ('read-probed', ['-c', '10', 'r']),
    ('read-qcow2', ['-c', '100', 'q']),
    ('count-0', ['-c', '0', '-f', 'raw', 'r']),
    ('hex-octal', ['-c', '0x10', '-d', '010', '-f', 'raw', 'r']),
    ('count-blank', ['-c', ' 3', '-f', 'raw', 'r']),
    ('count-trailing', ['-c', '3 ', '-f', 'raw', 'r']),
    ('count-bad', ['-c', 'x', 'r']),
    ('count-negative', ['-c', '-1', 'r']),
    ('depth-huge', ['-c', '3', '-d', '3000000000', 'r']),
    ('pattern-256', ['--pattern=256', 'r']),
    ('pattern-bad', ['--pattern=x', '-w', 'r']),
    ('flush-bad', ['-w', '--flush-interval=x', 'r']),
    ('flush-read', ['-c', '3', '--flush-interval=64', 'r']),
    ('flush-zero', ['-c', '3', '-f', 'raw', '--flush-interval=0', 'r']),
    ('flush-below-depth', ['-c', '5', '-d', '2', '-w', '--flush-interval=1', '-f', 'raw', 'r']),
    ('flush-line', ['-c', '5', '-d', '2', '-w', '--flush-interval=2', '-f', 'raw', 'r']),
    ('size-fraction', ['-c', '3', '-s', '1.5k', '-f', 'raw', 'r']),
    ('size-0', ['-s', '0', '-c', '3', '-f', 'raw', 'r']),
    ('size-range', ['-c', '3', '-s', '3G', 'r']),
    ('size-bad', ['-c', '3', '-s', 'x', 'r']),
    ('step-range', ['-c', '3', '-S', '3G', 'r']),
    ('offset-range', ['-c', '3', '-o', '9E', 'r']),
    ('offset-fraction', ['-c', '3', '-o', '1.5k', '-f', 'raw', 'r']),
    ('past-end', ['-c', '10', '-s', '2M', '-f', 'raw', 'r']),
    ('past-end-qcow2', ['-c', '10', '-s', '2M', 'q']),
    ('offset-at-end', ['-c', '10', '-o', '1M', '-f', 'raw', 'r']),
    ('wrap', ['-c', '10', '-S', '300000', '-f', 'raw', 'r']),
    ('wrap-unaligned', ['-c', '3', '-s', '512', '-S', '3000', '-f', 'raw', 'r']),
    ('aio-bad', ['-c', '10', '-i', 'foo', 'r']),
    ('aio-threads', ['-c', '3', '-i', 'threads', 'q']),
    ('aio-native-cached', ['-c', '10', '-n', 'r']),
    ('aio-native-missing', ['-n', 'nonexistent']),
    ('aio-native-qcow2', ['-n', '-f', 'qcow2', 'r']),
    ('aio-native-direct', ['-c', '10', '-n', '-t', 'none', '-f', 'raw', 'r']),
    ('aio-native-i', ['-c', '3', '-i', 'native', '-t', 'none', 'q']),
    ('io-uring', ['-c', '100', '-i', 'io_uring', '-f', 'raw', 'r']),
    ('cache-bad', ['-c', '10', '-t', 'foo', 'r']),
    ('cache-modes', ['-c', '3', '-t', 'directsync', '-t', 'unsafe', 'q']),
    ('share-write', ['-c', '3', '-w', '-U', '-f', 'raw', 'r']),
    ('share-write-missing', ['-w', '-U', 'nonexistent']),
    ('share-read', ['-c', '3', '-U', 'q']),
    ('quiet', ['-c', '3', '-q', 'q']),
    ('quiet-fail', ['-c', '3', '-q', '-f', 'qcow2', 'r']),
    ('wrong-fmt', ['-c', '3', '-f', 'qcow2', 'r']),
    ('unknown-fmt', ['-c', '3', '-f', 'foo', 'r']),
    ('missing', ['nonexistent']),
    ('two-files', ['r', 'q']),
    ('no-file', []),
    ('missing-arg', ['r', '-c']),
    ('unknown-opt', ['--foo', 'q']),
    ('write-probed', ['-c', '3', '-w', '--pattern=0x51', 'r']),
    ('no-drain-read', ['--no-drain', '-c', '3', 'q']),
]


@pytest.mark.parametrize('args', [c[1] for c in MSG_CASES], ids=[c[0] for c in MSG_CASES])
def test_bench_messages_like_qemu(tmp_path, args):
    a, b, ra, rb = _both(tmp_path, _images, args)
    assert rb == ra
    assert _read_all(b) == _read_all(a)


def test_bench_time_line(tmp_path):
    d = str(tmp_path)
    _images(d)
    rc, out, err = qemu.run(qemu.tool_path('qimg'), 'bench', '-c', '1000', '-f', 'raw', 'r',
                            cwd=d)
    assert (rc, err) == (0, '')
    lines = out.splitlines()
    assert lines[0] == ('Sending 1000 read requests, 4096 bytes each, 64 in parallel '
                        '(starting at offset 0, step size 4096)')
    assert TIME.match(lines[1]) and len(lines) == 2


# (id, build, write bench args; 'img' is the image): files byte-identical afterwards
WRITE_CASES = [
    ('raw-d1', _img('raw'), ['-w', '-c', '1000', '-d', '1', '-f', 'raw', 'img']),
    ('raw-d64', _img('raw'), ['-w', '-c', '3000', '-S', '100k', '-s', '1000', '-o', '3000',
                              '--pattern=0x55', '-f', 'raw', 'img']),
    ('raw-wrap', _img('raw'), ['-w', '-c', '500', '-S', '66048', '-s', '512',
                               '--pattern=7', '-f', 'raw', 'img']),
    # a request past the end ends the run: the writes before it are qemu's too
    ('raw-wrap-fail', _img('raw', size='1000448'),
     ['-w', '-c', '500', '-d', '1', '-S', '7777', '-s', '3000', '--pattern=7', '-f', 'raw',
      'img']),
    ('qcow2-d1-fail', _with_data(_img('qcow2')), ['-w', '-c', '800', '-d', '1', '-S', '90k',
                                                  '-s', '70k', '--pattern=0x33', 'img']),
    ('raw-io-uring', _img('raw'), ['-w', '-c', '2000', '-S', '33k', '-s', '8k', '-i',
                                   'io_uring', '--pattern=0xee', '-f', 'raw', 'img']),
    ('raw-native', _img('raw'), ['-w', '-c', '2000', '-S', '33k', '-n', '-t', 'none',
                                 '--pattern=0xef', '-f', 'raw', 'img']),
    ('raw-flush', _img('raw'), ['-w', '-c', '1000', '-S', '100k', '--flush-interval=100',
                                '-f', 'raw', 'img']),
    ('raw-flush-no-drain', _img('raw'), ['-w', '-c', '1000', '-S', '100k', '--no-drain',
                                         '--flush-interval=100', '-f', 'raw', 'img']),
    ('raw-writethrough', _img('raw'), ['-w', '-c', '100', '-d', '4', '-t', 'writethrough',
                                       '-f', 'raw', 'img']),
    ('qcow2-d1', _img('qcow2'), ['-w', '-c', '1000', '-d', '1', 'img']),
    ('qcow2-d1-sparse', _img('qcow2'), ['-w', '-c', '1000', '-d', '1', '-S', '1M', '-s', '8k',
                                        '--pattern=0x55', 'img']),
    ('qcow2-d1-unaligned', _img('qcow2', cluster_size=4096),
     ['-w', '-c', '5000', '-d', '1', '-S', '100k', '-s', '1000', '-o', '3000', 'img']),
    ('qcow2-d1-data', _with_data(_img('qcow2')), ['-w', '-c', '800', '-d', '1', '-S', '96k',
                                                  '-s', '32k', '--pattern=0x33', 'img']),
    ('qcow2-d1-c512', _img('qcow2', size='8M', cluster_size=512),
     ['-w', '-c', '3000', '-d', '1', '-S', '5000', '-s', '700', 'img']),
    ('qcow2-d1-extl2', _img('qcow2', extended_l2=True),
     ['-w', '-c', '1000', '-d', '1', '-S', '40k', '-s', '3k', 'img']),
    ('qcow2-d1-flush', _img('qcow2'), ['-w', '-c', '500', '-d', '1', '-S', '200k',
                                       '--flush-interval=7', 'img']),
    ('qed-d1', _img('qed'), ['-w', '-c', '1000', '-d', '1', '-S', '100k', 'img']),
    ('vdi-d1', _img('vdi'), ['-w', '-c', '1000', '-d', '1', '-S', '100k', 'img']),
    ('vdi-d4', _img('vdi'), ['-w', '-c', '1000', '-d', '4', '-S', '100k', 'img']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in WRITE_CASES],
                         ids=[c[0] for c in WRITE_CASES])
def test_bench_write_files_like_qemu(request, tmp_path, build, args):
    a, b, ra, rb = _both(tmp_path, build, args)
    assert ra[0] == (1 if request.node.callspec.id.endswith('-fail') else 0), ra
    assert rb == ra
    fa, fb = _read_all(a), _read_all(b)
    for n in fa:
        assert fb[n] == fa[n], n


@pytest.mark.parametrize('build,args', [
    (_img('qcow2'), ['-w', '-c', '2000', '-S', '70k', '-s', '8k', '--pattern=0x44', 'img']),
    (_with_data(_img('qcow2', cluster_size=4096)),
     ['-w', '-c', '3000', '-S', '9k', '-s', '5k', '--flush-interval=100', 'img']),
], ids=['qcow2-d64', 'qcow2-d64-c4k-flush'])
def test_bench_qcow2_depth_guest_like_qemu(tmp_path, build, args):
    a, b, ra, rb = _both(tmp_path, build, args)
    assert ra[0] == 0, ra
    assert rb == ra
    rc, out, err = qemu.qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2',
                                 os.path.join(a, 'img'), os.path.join(b, 'img'))
    assert rc == 0, out + err
    ok, detail = qemu.is_clean_by_qemu('img', cwd=b)
    assert ok, detail


def _fdatasyncs(tool, args, cwd):
    log = os.path.join(cwd, '..', 'strace.%s.log' % os.path.basename(cwd))
    # LeakSanitizer cannot run under ptrace (an ASan build of qimg, `make asan`)
    env = {'ASAN_OPTIONS': 'detect_leaks=0'}
    rc, out, err = qemu.run('strace', '-f', '-e', 'trace=fdatasync,fsync', '-o', log, tool,
                            'bench', *args, cwd=cwd, env=env)
    assert rc == 0, err
    with open(log) as f:
        return sum(1 for line in f if 'fdatasync(' in line or 'fsync(' in line)


@pytest.mark.skipif(shutil.which('strace') is None, reason='strace not installed')
@pytest.mark.parametrize('args', [
    ['-c', '1000', '-d', '8', '--flush-interval=100'],
    ['-c', '1003', '-d', '7', '--flush-interval=10'],
    ['-c', '64', '-d', '64', '--flush-interval=64'],
    ['-c', '20', '-d', '1', '-t', 'writethrough'],
    ['-c', '50', '-d', '4', '-t', 'unsafe', '--flush-interval=5'],
], ids=['every-100', 'every-10-odd', 'one-at-end', 'writethrough', 'unsafe'])
def test_bench_drained_flushes_like_qemu(tmp_path, args):
    """bench_cb drains the queue, then flushes when the requests not yet sent are a multiple
    of the interval: the same number of fdatasync calls as qemu's."""
    args = ['-w', '-f', 'raw'] + args + ['img']
    orig = tmp_path / 'orig'
    orig.mkdir()
    _img('raw', size='1M')(str(orig))
    a = qemu.copy_dir(str(orig), str(tmp_path / 'qemu'))
    b = qemu.copy_dir(str(orig), str(tmp_path / 'qimg'))
    assert _fdatasyncs(qemu.QIMG, args, b) == _fdatasyncs(qemu.QEMU_IMG, args, a)


def test_bench_depth_zero_refused(tmp_path):
    """qemu-img bench -d 0 sends nothing and waits forever; qimg refuses it (README)."""
    d = str(tmp_path)
    _images(d)
    rc, out, err = qemu.qimg('bench', '-d', '0', '-c', '3', '-f', 'raw', 'r', cwd=d)
    assert (rc, out, err) == (1, '', 'qimg: Invalid queue depth specified\n')
    rc, out, err = qemu.qimg('bench', '-d', '0', '-c', '0', '-f', 'raw', 'r', cwd=d)
    assert rc == 0 and out.startswith('Sending 0 read requests') and err == ''


def test_bench_empty_image(tmp_path):
    """qemu-img bench on an empty image divides by zero (SIGFPE); qimg fails the request."""
    d = str(tmp_path)
    qemu.make_image(os.path.join(d, 'z'), size='0', fmt='raw')
    rc, out, err = qemu.qimg('bench', '-c', '1', '-f', 'raw', 'z', cwd=d)
    assert rc == 1 and err == 'qimg: Failed request: Input/output error\n'
    assert out.startswith('Sending 1 read requests')


def test_help_lists_bench():
    rc, out, _ = qemu.qimg('--help')
    assert rc == 0
    assert [ln.split() for ln in out.splitlines() if ln.split()[:1] == ['bench']] == \
        [['bench']]
    rc, out, err = qemu.qimg('bench', '--help')
    assert (rc, err) == (0, '') and out.startswith('usage: ') and '--flush-interval' in out
