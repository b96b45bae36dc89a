"""`qimg bitmap` against the real qemu-img 7.2 bitmap.

Each case builds an image directory with the real qemu-img/qemu-io (v3 images with and
without bitmaps, cluster sizes, granularities, dirty data written before, bitmaps left in use
by a killed qemu-io, a second image as a merge source), copies it, runs `qemu-img bitmap ARGS`
in one copy and qimg (through a symlink named qemu-img, so the message prefix matches) in the
other, and requires the same exit status, stdout and stderr (qemu's auto-generated node name
"#block1NN" carries two random digits, which are masked), byte-identical files afterwards,
identical `qemu-img info` and a clean real `qemu-img check`.

The fault cases cut qimg (QIMG_FAULT_AFTER_WRITES=N) after each write of --add and --merge
and require real qemu-img check to find no corruption in what is left. --dry-run writes
nothing; --journal leaves qemu's files and `qimg undo` restores the originals byte for byte.
"""

import os
import re
import time

import pytest

import qemu
from portcheck import build_orig, cut_at_every_write, dry_run, journal_cut_then_undo, \
    journal_pair, no_corruption, read_all, real_run_changes, run_pair, undo_restores

KIB, MIB = 1 << 10, 1 << 20


def _img(d):
    return os.path.join(d, 'img')


def _qcow2(size='64M', bitmaps=(), writes=(), **opts):
    """qcow2 'img'; bitmaps: (name, [qemu-img bitmap options]) added in order, each followed
    by the writes listed for it (qemu-io commands) so bitmaps see different data."""
    def build(d):
        qemu.make_image(_img(d), size=size, **opts)
        for w in writes:
            qemu.io(_img(d), w)
        for name, extra, later in bitmaps:
            qemu.qemu_img('bitmap', '--add', *extra, _img(d), name, check=True)
            for w in later:
                qemu.io(_img(d), w)
    return build


def _abort(build, path='img'):
    """qemu-io opens read-write then dies: every consistent bitmap is left in use."""
    def b(d):
        build(d)
        qemu.run(qemu.QEMU_IO, '-c', 'abort', os.path.join(d, path))
    return b


def _then(build, *steps):
    def b(d):
        build(d)
        for s in steps:
            s(d)
    return b


def _source(size='64M', **opts):
    """A second qcow2 image 'src' with bitmaps s1 (512 B granules) and s2 (1 MiB)."""
    def step(d):
        p = os.path.join(d, 'src')
        qemu.make_image(p, size=size, **opts)
        qemu.qemu_img('bitmap', '--add', '-g', '512', p, 's1', check=True)
        qemu.qemu_img('bitmap', '--add', '-g', '1M', p, 's2', check=True)
        qemu.io(p, 'write 3M 1k')
        qemu.io(p, 'write 20M 3000')
        qemu.io(p, 'write 25M 5M')
    return step


def _other(fmt, name, size='64M', **opts):
    def step(d):
        qemu.make_image(os.path.join(d, name), size=size, fmt=fmt, **opts)
    return step


W1 = ('write -P 1 0 1M', 'write -P 2 10M 100k')
W2 = ('write 30M 64k', 'write -z 10M 4k', 'discard 0 64k')
TWO = _qcow2(bitmaps=(('b0', [], W1), ('b1', ['-g', '512'], W2)))
TWO_DIS = _then(_qcow2(bitmaps=(('b0', [], W1), ('b1', ['-g', '4k'], W2))),
                lambda d: qemu.qemu_img('bitmap', '--disable', _img(d), 'b1', check=True))
C4K = _qcow2(cluster_size=4096, bitmaps=(('b0', [], W1),), writes=('write 5M 3M',))
C512 = _qcow2(size='5M', cluster_size=512, bitmaps=(('b0', ['-g', '1k'], W1[:1]),))
C2M = _qcow2(size='300M', cluster_size=2 * MIB, bitmaps=(('b0', [], ('write 100M 1M',)),))
EXTL2 = _qcow2(extended_l2=True, bitmaps=(('b0', [], W1),))
ODD = _qcow2(size='10000000', bitmaps=(('b0', ['-g', '1M'], ('write 9437184 562688',)),))
EMPTY = _qcow2()
DATA = _qcow2(writes=W1 + W2)
INUSE = _then(_abort(TWO), lambda d: qemu.qemu_img('bitmap', '--add', _img(d), 'b2',
                                                   check=True),
              lambda d: qemu.io(_img(d), 'write 5M 1M'))
SRC = _then(TWO, _source())
SRC_SMALL = _then(TWO, _source(size='32M'))
SRC_INUSE = _then(TWO, _source(), lambda d: qemu.run(qemu.QEMU_IO, '-c', 'abort',
                                                     os.path.join(d, 'src')))
RAW = _other('raw', 'img')
V2 = _qcow2(compat='0.10')
QED = _other('qed', 'img')
MANY_SRC = _then(TWO, _other('raw', 'r'))

# (id, build, bitmap args after `bitmap`, 'img' being the image)
CASES = [
    # the command line
    ('no-action', EMPTY, ['img', 'b']),
    ('no-bitmap-name', EMPTY, ['--add', 'img']),
    ('extra-arg', EMPTY, ['--add', 'img', 'a', 'b']),
    ('unknown-opt', EMPTY, ['--foo', 'img', 'b']),
    ('q-refused', EMPTY, ['-q', '--add', 'img', 'b']),
    ('missing-merge-arg', EMPTY, ['img', 'b', '--merge']),
    ('g-without-add', TWO, ['-g', '4k', '--clear', 'img', 'b0']),
    ('F-without-b', TWO, ['-F', 'qcow2', '--clear', 'img', 'b0']),
    ('b-without-merge', SRC, ['-b', 'src', '--add', 'img', 'b9']),
    ('bad-granularity-text', EMPTY, ['--add', '-g', 'x', 'img', 'b']),
    ('negative-granularity', EMPTY, ['--add', '-g', '-5', 'img', 'b']),
    ('no-file', EMPTY, ['--add', 'nonexistent', 'b']),
    ('wrong-fmt', EMPTY, ['--add', '-f', 'vdi', 'img', 'b']),
    # add
    ('add', EMPTY, ['--add', 'img', 'b']),
    ('add-data', DATA, ['--add', 'img', 'b']),
    ('add-long', EMPTY, ['--add', 'img', '--granularity', '8k', 'bb']),
    ('add-g512', DATA, ['--add', '-g', '512', 'img', 'b']),
    ('add-g2G', DATA, ['--add', '-g', '2G', 'img', 'b']),
    ('add-g4T-truncated', EMPTY, ['--add', '-g', '4T', 'img', 'b']),
    ('add-g-not-pow2', EMPTY, ['--add', '-g', '1000', 'img', 'b']),
    ('add-g256', EMPTY, ['--add', '-g', '256', 'img', 'b']),
    ('add-disabled', TWO, ['--add', '--disable', 'img', 'b2']),
    ('add-exists', TWO, ['--add', 'img', 'b1']),
    ('add-empty-name', EMPTY, ['--add', 'img', '']),
    ('add-name-1023', EMPTY, ['--add', 'img', 'n' * 1023]),
    ('add-name-1024', EMPTY, ['--add', 'img', 'n' * 1024]),
    ('add-c4k', C4K, ['--add', 'img', 'b1']),
    ('add-c512', C512, ['--add', 'img', 'b1']),
    ('add-c512-too-big', _qcow2(size='40G', cluster_size=512), ['--add', '-g', '512', 'img',
                                                               'b']),
    ('add-c2M', C2M, ['--add', '-g', '64k', 'img', 'b1']),
    ('add-extl2', EXTL2, ['--add', 'img', 'b1']),
    ('add-odd-size', ODD, ['--add', '-g', '512', 'img', 'b1']),
    ('add-twice', EMPTY, ['--add', '--add', 'img', 'b']),
    ('add-raw', RAW, ['--add', '-f', 'raw', 'img', 'b']),
    ('add-raw-probed', RAW, ['--add', 'img', 'b']),
    ('add-v2', V2, ['--add', 'img', 'b']),
    ('add-qed', QED, ['--add', 'img', 'b']),
    # remove, clear, enable, disable
    ('remove', TWO, ['--remove', 'img', 'b0']),
    ('remove-last', TWO, ['--remove', 'img', 'b1']),
    ('remove-both', TWO, ['--remove', 'img', 'b1', '--remove']),
    ('remove-missing', TWO, ['--remove', 'img', 'nope']),
    ('remove-twice', TWO, ['--remove', '--remove', 'img', 'b0']),
    ('remove-only', C4K, ['--remove', 'img', 'b0']),
    ('remove-then-add', TWO, ['--remove', '--add', '-g', '1M', 'img', 'b0']),
    ('add-then-remove', TWO, ['--add', '--remove', 'img', 'b3']),
    ('remove-raw', RAW, ['--remove', '-f', 'raw', 'img', 'b']),
    ('clear', TWO, ['--clear', 'img', 'b0']),
    ('clear-c512', C512, ['--clear', 'img', 'b0']),
    ('clear-v2', V2, ['--clear', 'img', 'b']),
    ('disable', TWO, ['--disable', 'img', 'b0']),
    ('enable', TWO_DIS, ['--enable', 'img', 'b1']),
    ('enable-missing', TWO, ['--enable', 'img', 'nope']),
    ('clear-disable-enable', TWO, ['--clear', '--disable', '--enable', 'img', 'b1']),
    # merge
    ('merge', TWO, ['--merge', 'b0', 'img', 'b1']),
    ('merge-fine-into-coarse', TWO, ['--merge', 'b1', 'img', 'b0']),
    ('merge-self', TWO, ['--merge', 'b0', 'img', 'b0']),
    ('merge-twice', TWO, ['--merge', 'b0', '--merge', 'b1', '--disable', 'img', 'b1']),
    ('add-merge', TWO, ['--add', '-g', '512', '--merge', 'b0', '--merge', 'b1', 'img', 'bn']),
    ('merge-missing-src', TWO, ['--merge', 'nope', 'img', 'b0']),
    ('merge-missing-dst', TWO, ['--merge', 'b0', 'img', 'nope']),
    ('merge-odd-size', ODD, ['--add', '-g', '64k', '--merge', 'b0', 'img', 'b1']),
    ('merge-file', SRC, ['--merge', 's1', '-b', 'src', 'img', 'b0']),
    ('merge-file-fmt', SRC, ['--merge', 's2', '-b', 'src', '-F', 'qcow2', 'img', 'b1']),
    ('merge-file-add', SRC, ['--add', '--merge', 's2', '--merge', 's1', '-b', 'src', 'img',
                             'bn']),
    ('merge-file-local-name', SRC, ['--merge', 'b0', '-b', 'src', 'img', 'b1']),
    ('merge-file-sizes', SRC_SMALL, ['--merge', 's1', '-b', 'src', 'img', 'b0']),
    ('merge-file-raw', MANY_SRC, ['--merge', 's1', '-b', 'r', '-F', 'raw', 'img', 'b0']),
    ('merge-file-missing', TWO, ['--merge', 's1', '-b', 'nonexistent', 'img', 'b0']),
    ('merge-file-self-locked', TWO, ['--merge', 'b0', '-b', 'img', 'img', 'b1']),
    ('merge-file-in-use', SRC_INUSE, ['--merge', 's1', '-b', 'src', 'img', 'b0']),
    # bitmaps left in use (inconsistent)
    ('inuse-remove', INUSE, ['--remove', 'img', 'b0']),
    ('inuse-clear', INUSE, ['--clear', 'img', 'b0']),
    ('inuse-enable', INUSE, ['--enable', 'img', 'b1']),
    ('inuse-disable', INUSE, ['--disable', 'img', 'b1']),
    ('inuse-merge-from', INUSE, ['--merge', 'b0', 'img', 'b2']),
    ('inuse-merge-into', INUSE, ['--merge', 'b2', 'img', 'b0']),
    ('inuse-add-same', INUSE, ['--add', 'img', 'b0']),
    ('inuse-add-other', INUSE, ['--add', 'img', 'b3']),
    ('inuse-remove-good', INUSE, ['--remove', 'img', 'b2']),
    ('inuse-clear-good', INUSE, ['--clear', 'img', 'b2']),
    # a failure after a success keeps the first (the close stores it, as qemu's)
    ('add-then-fail', TWO, ['--add', '--merge', 'nope', 'img', 'b5']),
]

NODE = re.compile(r'#block1\d\d')


def _norm(r):
    rc, out, err = r
    return rc, out, NODE.sub('#block1NN', err)


def _fmt_of(d):
    rc, out, _ = qemu.qemu_img('info', '--output=json', '-U', _img(d))
    return qemu.parse_json(out).get('format') if rc == 0 else None


@pytest.mark.parametrize('build,args', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bitmap_like_qemu(tmp_path, build, args):
    _, a, b, ra, rb = run_pair(tmp_path, build, 'bitmap', args)
    assert _norm(rb) == _norm(ra)
    fa, fb = read_all(a), read_all(b)
    assert sorted(fa) == sorted(fb)
    for n in fa:
        assert fb[n] == fa[n], n
    if _fmt_of(a) == 'qcow2':
        ia = qemu.qemu_img('info', '-U', 'img', cwd=a)
        ib = qemu.qemu_img('info', '-U', 'img', cwd=b)
        assert ib == ia
        ok, detail = qemu.is_clean_by_qemu('img', cwd=b)
        assert ok, detail


def test_bitmap_data_as_qemu_reads_it(tmp_path):
    """The merged bits as qemu reads them back: convert --bitmaps of both results (which
    loads every bitmap's data) gives identical images."""
    orig = tmp_path / 'orig'
    orig.mkdir()
    SRC(str(orig))
    a = qemu.copy_dir(str(orig), str(tmp_path / 'qemu'))
    b = qemu.copy_dir(str(orig), str(tmp_path / 'qimg'))
    args = ['--add', '-g', '4k', '--merge', 's1', '--merge', 's2', '-b', 'src', 'img', 'bn']
    qemu.run(qemu.QEMU_IMG, 'bitmap', *args, cwd=a, check=True)
    qemu.run(qemu.QIMG, 'bitmap', *args, cwd=b, check=True)
    for d in (a, b):
        qemu.run(qemu.QEMU_IMG, 'convert', '--bitmaps', '-O', 'qcow2', 'img', 'out', cwd=d,
                 check=True)
    assert open(os.path.join(b, 'out'), 'rb').read() == \
        open(os.path.join(a, 'out'), 'rb').read()


# -- fault injection -------------------------------------------------------------------------

FAULT_CASES = [
    ('add', DATA, ['--add', 'img', 'b']),
    ('add-to-two', TWO, ['--add', '-g', '512', 'img', 'b2']),
    ('add-c512', C512, ['--add', 'img', 'b1']),
    ('merge', TWO, ['--merge', 'b0', 'img', 'b1']),
    ('add-merge-file', SRC, ['--add', '--merge', 's1', '-b', 'src', 'img', 'bn']),
    ('remove', TWO, ['--remove', 'img', 'b0']),
    ('inuse-add', INUSE, ['--add', 'img', 'b3']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in FAULT_CASES],
                         ids=[c[0] for c in FAULT_CASES])
def test_bitmap_cut_at_every_write(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    n = cut_at_every_write(tmp_path, orig, 'bitmap', args, no_corruption('img'), limit=500)
    assert n > 3   # open, operations and close wrote, so cuts were tested


# -- --dry-run and --journal (beyond qemu-img) -----------------------------------------------

PORT_CASES = [
    ('add', DATA, ['--add', 'img', 'b']),
    ('add-disable', TWO, ['--add', '--disable', '-g', '512', 'img', 'b2']),
    ('remove', TWO, ['--remove', 'img', 'b0']),
    ('remove-only', C4K, ['--remove', 'img', 'b0']),
    ('clear', TWO, ['--clear', 'img', 'b0']),
    ('merge', TWO, ['--merge', 'b1', 'img', 'b0']),
    ('merge-file', SRC, ['--add', '--merge', 's1', '-b', 'src', 'img', 'bn']),
    ('inuse-remove', INUSE, ['--remove', 'img', 'b0']),
    ('failing', TWO, ['--add', '--merge', 'nope', 'img', 'b5']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_bitmap_dry_run_writes_nothing(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    rc, out, err = dry_run(tmp_path, orig, 'bitmap', args, tool=qemu.tool_path('qimg'))
    ra, changed = real_run_changes(tmp_path, orig, 'bitmap', args, check=False)
    assert (rc, err) == ra[::2]   # the same status and message as the real run
    assert out.startswith("Bitmap plan for 'img' (dry run, nothing was written): ")
    assert (len(out.splitlines()) > 1) == changed


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_bitmap_journal_then_undo(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    d, ref, before, jr, ra, rb = journal_pair(tmp_path, orig, 'bitmap', args, 'bitmap.journal')
    assert rb == ra
    after, expect = read_all(d), read_all(ref)
    assert sorted(after) == sorted(expect)
    for n in expect:
        assert after[n] == expect[n], n
    ok, detail = qemu.is_clean_by_qemu('img', cwd=d)
    assert ok, detail
    undo_restores(jr, 'img', d, before)


def test_bitmap_journal_cut_then_undo(tmp_path):
    """A --journal bitmap run killed after each of its writes: qimg undo puts every byte
    back."""
    orig = build_orig(tmp_path, TWO)
    n = journal_cut_then_undo(tmp_path, orig, 'bitmap', ['--add', '--merge', 'b0', 'img', 'b2'],
                              limit=500)
    assert n > 1


def test_bitmap_dry_run_journal_refusals(tmp_path):
    d = str(tmp_path)
    qemu.make_image(_img(d), size='1M', data_file='img.data')
    before = read_all(d)
    for opt in (['--dry-run'], ['--journal', str(tmp_path / 'j')]):
        rc, out, err = qemu.qimg('bitmap', *opt, '--add', 'img', 'b', cwd=d)
        assert (rc, out) == (1, '')
        assert err == ('qimg: --dry-run and --journal are not supported for images with an '
                       'external data file\n')
    rc, out, err = qemu.qimg('bitmap', '--dry-run', '--journal', 'j', '--add', 'img', 'b',
                             cwd=d)
    assert (rc, out, err) == (1, '', 'qimg: --dry-run and --journal cannot be used together\n')
    assert read_all(d) == before
    assert not os.path.exists(str(tmp_path / 'j'))


def _wait_in_use(d, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rc, out, _ = qemu.qemu_img('info', '-U', '--output=json', 'img', cwd=d)
        bms = qemu.parse_json(out).get('format-specific', {}).get('data', {}).get(
            'bitmaps', []) if rc == 0 else []
        if bms and all('in-use' in b['flags'] for b in bms):
            return
        time.sleep(0.05)
    raise AssertionError('the holder did not mark the bitmaps in use')


@pytest.mark.parametrize('read_only', [False, True], ids=['writer', 'reader'])
def test_bitmap_refused_while_in_use(tmp_path, read_only):
    """Another process holds the image (qemu-io): qemu-img's lock message, nothing written;
    --journal refuses the same way and leaves no journal."""
    d = str(tmp_path)
    TWO(d)
    with qemu.held_open('img', read_only=read_only, cwd=d):
        if not read_only:
            _wait_in_use(d)   # the holder's open marks the bitmaps in use, after its locks
        before = read_all(d)
        ra = qemu.run(qemu.QEMU_IMG, 'bitmap', '--clear', 'img', 'b0', cwd=d)
        rb = qemu.run(qemu.tool_path('qimg'), 'bitmap', '--clear', 'img', 'b0', cwd=d)
        rj = qemu.run(qemu.tool_path('qimg'), 'bitmap', '--journal', 'j', '--clear', 'img',
                      'b0', cwd=d)
        assert read_all(d) == before
    assert ra[0] == 1 and 'lock' in ra[2]
    assert rb == ra
    assert rj == ra
    assert not os.path.exists(os.path.join(d, 'j'))


def test_help_lists_bitmap():
    rc, out, _ = qemu.qimg('--help')
    assert rc == 0
    assert [ln.split() for ln in out.splitlines() if ln.split()[:1] == ['bitmap']] == \
        [['bitmap']]
    rc, out, err = qemu.qimg('bitmap', '--help')
    assert (rc, err) == (0, '') and out.startswith('usage: ') and '--journal FILE' in out
