"""`qimg commit` against the real qemu-img 7.2 commit.

Each case builds a chain with the real qemu-img/qemu-io, runs `qemu-img commit ARGS` on
one copy and qimg (through a symlink named qemu-img) on another, and requires the same
exit status, stdout and stderr (progress aside: qemu's depends on timing), byte-identical
files (so info and map agree), and a clean real `qemu-img check` of every image. Then: a
cut after every write leaves no corruption in either image; --dry-run writes nothing;
--journal (the image in FILE, the base in FILE.base) is undone byte for byte."""

import filecmp
import os

import pytest

import qemu
from chainutil import build_chain, images, layer
from portcheck import build_orig, cut_dirs, dry_run, read_all, run_pair

BASE = layer('base.qcow2', data=('write -P 1 0 64k', 'write -P 2 512k 88k'))


def chain(v='1.1', mid_cs=65536, top_size='2M', base=None, **top_opts):
    base = base or layer('base.qcow2', compat=v,
                         data=('write -P 1 0 64k', 'write -P 2 512k 88k'))
    return build_chain(
        base,
        layer('mid.qcow2', compat=v, cluster_size=mid_cs, backing=base[0],
              backing_fmt=base[2], data=('write -P 3 100k 10k', 'write -z 512k 64k')),
        layer('top.qcow2', size=top_size, compat=v, backing='mid.qcow2',
              data=('write -P 5 256k 4k', 'write -P 6 900k 100k'), **top_opts))


TWO = build_chain(BASE, layer('top.qcow2', backing='base.qcow2',
                              data=('write -P 5 256k 4k', 'write -z 0 64k')))

CASES = [
    ('top', chain(), ['top.qcow2']),
    ('top-d', chain(), ['-d', 'top.qcow2']),
    ('top-q', chain(), ['-q', 'top.qcow2']),
    ('top-q-p', chain(), ['-q', '-p', 'top.qcow2']),
    ('to-base', chain(), ['-b', 'base.qcow2', 'top.qcow2']),
    ('mid', chain(), ['mid.qcow2']),
    ('v2', chain(v='0.10'), ['top.qcow2']),
    ('v2-to-base', chain(v='0.10'), ['-b', 'base.qcow2', 'top.qcow2']),
    ('mid-4k', chain(mid_cs=4096), ['mid.qcow2']),
    ('mid-4k-to-base', chain(mid_cs=4096), ['-b', 'base.qcow2', 'top.qcow2']),
    ('top-extended-l2', chain(extended_l2=True, cluster_size=131072), ['top.qcow2']),
    ('two-zero', TWO, ['top.qcow2']),
    ('compressed-top', build_chain(BASE, layer('top.qcow2', backing='base.qcow2',
                                               data=('write -c -P 7 0 64k',))), ['top.qcow2']),
    ('base-shorter', build_chain(layer('base.qcow2', size='512k', data=('write -P 1 0 64k',)),
                                 layer('top.qcow2', size='3M', backing='base.qcow2',
                                       data=('write -P 5 2M 64k',))), ['top.qcow2']),
    ('base-longer', build_chain(layer('base.qcow2', size='4M', data=('write -P 1 0 4M',)),
                                layer('top.qcow2', size='1M', backing='base.qcow2',
                                      data=('write -P 5 0 64k',))), ['top.qcow2']),
    ('raw-base', build_chain(layer('base.raw', fmt='raw'),
                             layer('top.qcow2', backing='base.raw', backing_fmt='raw',
                                   data=('write -P 5 4k 8k', 'write -z 64k 64k'))),
     ['top.qcow2']),
    ('qed', build_chain(layer('base.qed', fmt='qed'),
                        layer('top.qed', fmt='qed', backing='base.qed', backing_fmt='qed',
                              data=('write -P 7 0 64k',))), ['top.qed']),
    ('snapshot-top', build_chain(BASE, layer('top.qcow2', backing='base.qcow2',
                                             data=('write -P 5 0 64k',))),
     ['top.qcow2']),
    ('snapshots-discard', build_chain(
        layer('base.raw', fmt='raw'),
        layer('top.qcow2', backing='base.raw', backing_fmt='raw',
              data=('write -P 3 0 300k',))), ['top.qcow2']),
    ('refcount-bits-1', build_chain(
        layer('base.raw', fmt='raw'),
        layer('top.qcow2', backing='base.raw', backing_fmt='raw', refcount_bits=1,
              cluster_size=4096, data=('write -P 3 0 300k',))), ['top.qcow2']),
    ('lazy-refcounts', build_chain(
        layer('base.raw', fmt='raw'),
        layer('top.qcow2', backing='base.raw', backing_fmt='raw', lazy_refcounts=True,
              data=('write -P 3 0 300k',))), ['top.qcow2']),
    ('data-file-top', build_chain(
        layer('base.raw', fmt='raw'),
        layer('top.qcow2', backing='base.raw', backing_fmt='raw', data_file='top.data',
              data=('write -P 3 0 300k',))), ['top.qcow2']),
    ('raw-base-grows', build_chain(
        layer('base.raw', fmt='raw', size='512k'),
        layer('top.qcow2', size='1M', backing='base.raw', backing_fmt='raw',
              data=('write -P 3 100k 300k', 'write -P 4 700k 100k'))), ['top.qcow2']),
    ('qed-base-grows', build_chain(
        layer('base.qed', fmt='qed', size='512k', data=('write -P 1 0 64k',)),
        layer('top.qcow2', size='1M', backing='base.qed', backing_fmt='qed',
              data=('write -P 2 600k 100k', 'write -P 3 32k 4k'))), ['top.qcow2']),
    ('err-no-backing', chain(), ['base.qcow2']),
    ('err-not-in-chain', chain(), ['-b', 'nothere', 'top.qcow2']),
    ('err-rate', chain(), ['-r', 'abc', 'top.qcow2']),
    ('err-cache', chain(), ['-t', 'bogus', 'top.qcow2']),
    ('err-two-files', chain(), ['top.qcow2', 'x']),
]


def _norm(r):
    rc, out, err = r
    # qemu's progress lines depend on the job's timing: only the last one is compared
    if '\r' in out:
        parts = out.split('\r')
        out = parts[-2] + '\r' + parts[-1]
    return rc, out, err.replace("Try 'qimg --help'", "Try 'qemu-img --help'")


def _target(orig, args):
    """The image commit writes into: -b BASE, else the image's backing file."""
    if '-b' in args:
        return args[args.index('-b') + 1]
    rc, out, _ = qemu.qemu_img('info', '--output=json', '-U', args[-1], cwd=orig)
    return qemu.parse_json(out).get('backing-filename') if rc == 0 else None


def _same_but_target(orig, a, b, args):
    """Every file byte-identical to qemu-img's, except the commit target when qemu's own
    bytes are not deterministic: its mirror job runs up to 16 requests at once and the
    target's clusters are allocated in completion order (four different files in six runs
    of the same commit); qimg allocates in offset order, qemu's most frequent result. The
    target then has qemu's guest content and a clean check."""
    t = _target(orig, args)
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for n in names:
        pa, pb = os.path.join(a, n), os.path.join(b, n)
        if n == t and not filecmp.cmp(pa, pb, shallow=False):
            rc, out, err = qemu.qemu_img('compare', '-U', pa, pb)
            assert rc == 0, out + err
            continue
        assert filecmp.cmp(pa, pb, shallow=False), '%s differs from qemu-img\'s' % n


def _with_snapshot(build):
    def b(d):
        build(d)
        qemu.snapshot_create(os.path.join(d, 'top.qcow2'), 's1')
        qemu.io(os.path.join(d, 'top.qcow2'), 'write -P 5 0 64k', cwd=d)
    return b


def _with_bitmap(build):
    def b(d):
        build(d)
        qemu.qemu_img('bitmap', '--add', 'top.qcow2', 'b0', cwd=d, check=True)
    return b


CASES = [(c[0], _with_snapshot(c[1]) if c[0] == 'snapshots-discard' else c[1], c[2])
         for c in CASES]
CASES.append(('bitmap-discard', _with_bitmap(CASES[0][1]), ['top.qcow2']))


@pytest.mark.parametrize('build,args', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_commit_matches_qemu(tmp_path, build, args):
    orig, a, b, ra, rb = run_pair(tmp_path, build, 'commit', args)
    assert _norm(rb) == _norm(ra)
    _same_but_target(orig, a, b, args)
    for n in images(b):
        ok, detail = qemu.is_clean_by_qemu(n, cwd=b)
        assert ok, detail


def test_commit_progress(tmp_path):
    orig, a, b, ra, rb = run_pair(tmp_path, chain(), 'commit', ['-p', 'top.qcow2'])
    assert _norm(rb) == _norm(ra)
    assert rb[1].startswith('    (0.00/100%)\r')
    _same_but_target(orig, a, b, ['top.qcow2'])


def test_help_lists_commit():
    rc, out, _ = qemu.qimg('--help')
    assert rc == 0
    assert [ln.split() for ln in out.splitlines() if ln.split()[:1] == ['commit']] == \
        [['commit']]


FAULT_CASES = [
    ('v3-empty', chain(), ['top.qcow2']),
    ('v2-discard', chain(v='0.10'), ['top.qcow2']),
    ('base-grows', build_chain(layer('base.qcow2', size='512k', data=('write -P 1 0 64k',)),
                               layer('top.qcow2', size='3M', backing='base.qcow2',
                                     data=('write -P 5 2M 64k',))), ['-d', 'top.qcow2']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in FAULT_CASES],
                         ids=[c[0] for c in FAULT_CASES])
def test_commit_cut_at_every_write(tmp_path, build, args):
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    for n, d in cut_dirs(tmp_path, str(orig), 'commit', args):
        for img in images(d):
            rc, j, out, err = qemu.check_json('qemu', img, cwd=d)
            assert j is not None and not j.get('check-errors'), (n, img, out, err)
            if j.get('corruptions'):
                # only inside qemu's make_completely_empty, which marks the image dirty
                # first and lets the refcounts go: the next read-write open (here check -r
                # all) rebuilds them, as qemu designed it
                rc, out, err = qemu.qemu_img('info', '--output=json', '-U', img, cwd=d)
                assert qemu.parse_json(out)['dirty-flag'], (n, img)
                rc, out, err = qemu.qemu_img('check', '-r', 'all', img, cwd=d)
                ok, detail = qemu.is_clean_by_qemu(img, cwd=d)
                assert ok, 'cut after write %d, %s: %s' % (n, img, detail)


PORT_CASES = [c for c in CASES if c[0] in ('top', 'top-d', 'to-base', 'v2', 'base-shorter',
                                           'qed', 'raw-base', 'raw-base-grows',
                                           'snapshots-discard', 'lazy-refcounts')]


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_commit_dry_run_writes_nothing(tmp_path, build, args):
    rc, out, err = dry_run(tmp_path, build_orig(tmp_path, build), 'commit', args)
    assert rc == 0, err
    assert out.startswith('Commit plan for ')


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_commit_journal_then_undo(tmp_path, build, args):
    orig, a, b, ra, rb = run_pair(tmp_path, build, 'commit', args)
    assert ra[0] == 0
    d = qemu.copy_dir(orig, str(tmp_path / 'j'))
    before = read_all(d)
    j = str(tmp_path / 'commit.journal')
    rc, out, err = qemu.qimg('commit', '--journal', j, *args, cwd=d)
    assert (rc, out, err) == (0, 'Image committed.\n', '')
    # the same guest content as qemu's commit, every image clean
    for n in images(d):
        rc, o, e = qemu.qemu_img('compare', '-U', os.path.join(a, n), os.path.join(d, n))
        assert rc == 0, n + o + e
        ok, detail = qemu.is_clean_by_qemu(n, cwd=d)
        assert ok, detail
    top = args[-1]
    base = 'base.qed' if top.endswith('.qed') else \
        'base.raw' if os.path.exists(os.path.join(d, 'base.raw')) else \
        ('base.qcow2' if '-b' in args or not os.path.exists(os.path.join(d, 'mid.qcow2'))
         else 'mid.qcow2')
    rc, out, err = qemu.qimg('undo', j + '.base', base, cwd=d)
    assert rc == 0, err
    if os.path.exists(j):
        rc, out, err = qemu.qimg('undo', j, top, cwd=d)
        assert rc == 0, err
    assert read_all(d) == before


JOURNAL_CUT_CASES = [('v3-empty', chain(), ['top.qcow2'], 'mid.qcow2'),
                     ('v2-discard', chain(v='0.10'), ['top.qcow2'], 'mid.qcow2'),
                     ('to-base', chain(), ['-b', 'base.qcow2', 'top.qcow2'], 'base.qcow2')]


@pytest.mark.parametrize('build,args,base', [c[1:] for c in JOURNAL_CUT_CASES],
                         ids=[c[0] for c in JOURNAL_CUT_CASES])
def test_commit_journal_cut_then_undo(tmp_path, build, args, base):
    """A --journal commit killed after each of its writes: undoing the journals that exist
    puts every byte of both files back."""
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    before = read_all(str(orig))
    jr = str(tmp_path / 'j')
    for n, d in cut_dirs(tmp_path, str(orig), 'commit', ['--journal', jr] + args):
        for j, img in ((jr, args[-1]), (jr + '.base', base)):
            if os.path.exists(j):
                rc, out, err = qemu.qimg('undo', j, img, cwd=d)
                assert rc == 0, 'cut after write %d: %s%s' % (n, out, err)
                os.unlink(j)
        assert read_all(d) == before, 'cut after write %d' % n
    for j in (jr, jr + '.base'):
        if os.path.exists(j):
            os.unlink(j)


@pytest.mark.parametrize('read_only', [False, True], ids=['writer', 'reader'])
def test_commit_refused_while_in_use(tmp_path, read_only):
    """Another process holds the image: qemu-img's lock message, nothing written."""
    d = str(tmp_path)
    chain()(d)
    before = read_all(d)
    with qemu.held_open('top.qcow2', read_only=read_only, cwd=d):
        ra = qemu.run(qemu.QEMU_IMG, 'commit', 'top.qcow2', cwd=d)
        rb = qemu.run(qemu.tool_path('qimg'), 'commit', 'top.qcow2', cwd=d)
    assert ra[0] == 1 and 'lock' in ra[2]
    assert rb == ra
    assert read_all(d) == before


def test_commit_base_in_use(tmp_path):
    """A reader holds the base: qemu's reopen for writing fails with the lock message
    (no "Could not open" prefix), the image keeps its data."""
    d = str(tmp_path)
    chain()(d)
    before = read_all(d)
    with qemu.held_open('mid.qcow2', read_only=True, cwd=d):
        ra = qemu.run(qemu.QEMU_IMG, 'commit', 'top.qcow2', cwd=d)
        rb = qemu.run(qemu.tool_path('qimg'), 'commit', 'top.qcow2', cwd=d)
    assert ra[0] == 1 and 'lock' in ra[2]
    assert rb == ra
    assert read_all(d) == before


@pytest.mark.parametrize('event', ['l1_update', 'empty_image_prepare', 'reftable_update',
                                   'refblock_alloc'])
def test_commit_make_empty_blkdebug_error(tmp_path, event):
    """iotest 098: an I/O error injected at each blkdebug event of qemu's
    make_completely_empty: the same message ("Failed to empty NAME") and exit status, and
    the image left in the same half-emptied state (byte-identical files)."""
    outs, dirs = [], []
    for tool in ('qemu', 'qimg'):
        d = tmp_path / tool
        d.mkdir()
        qemu.make_image(str(d / 't.qcow2.base'), size='64M')
        qemu.make_image(str(d / 't.qcow2'), size='64M', backing='t.qcow2.base',
                        backing_fmt='qcow2')
        qemu.io(str(d / 't.qcow2'), 'write 0 64k', cwd=str(d))
        (d / 'bd.conf').write_text('[inject-error]\nevent = "%s"\n' % event)
        outs.append(qemu.run(qemu.tool_path(tool), 'commit',
                             'blkdebug:bd.conf:%s' % (d / 't.qcow2'), cwd=str(d)))
        dirs.append(d)
    rq, ri = outs
    assert ri == (rq[0], rq[1], rq[2].replace(str(dirs[0]), str(dirs[1])))
    assert rq[0] == 1 and 'Failed to empty blkdebug:bd.conf:' in rq[2]
    for n in ('t.qcow2', 't.qcow2.base'):
        assert filecmp.cmp(str(dirs[0] / n), str(dirs[1] / n), shallow=False), n


@pytest.mark.parametrize('case', ['read-top', 'write-base'])
def test_commit_job_error_blkdebug(tmp_path, case):
    """A failing copy is qemu's "Block job failed: ERR" (run_block_job): an EIO on the
    top's data reads (read_aio), and ENOSPC on the base's data writes (write_aio, a
    blkdebug:CONF:FILE backing name kept through the base's reopen; iotest 020)."""
    outs, dirs = [], []
    for tool in ('qemu', 'qimg'):
        d = tmp_path / tool
        d.mkdir()
        qemu.make_image(str(d / 'b.qcow2'), size='1M')
        if case == 'read-top':
            conf = '[inject-error]\nevent = "read_aio"\nerrno = "5"\n'
            qemu.make_image(str(d / 't.qcow2'), size='1M', backing='b.qcow2',
                            backing_fmt='qcow2')
            target = 'blkdebug:bd.conf:t.qcow2'
        else:
            conf = '[inject-error]\nevent = "write_aio"\nerrno = "28"\nonce = "on"\n'
            qemu.qemu_img('create', '-q', '-f', 'qcow2', '-u', '-b', 'blkdebug:bd.conf:b.qcow2',
                          '-F', 'qcow2', 't.qcow2', '1M', cwd=str(d), check=True)
            target = 't.qcow2'
        (d / 'bd.conf').write_text(conf)
        qemu.io(str(d / 't.qcow2'), 'write -P 7 0 64k', cwd=str(d))
        outs.append(qemu.run(qemu.tool_path(tool), 'commit', target, cwd=str(d)))
        dirs.append(d)
    assert outs[1] == outs[0]
    assert outs[0][0] == 1 and 'Block job failed: ' in outs[0][2]
    for n in ('t.qcow2', 'b.qcow2'):
        assert filecmp.cmp(str(dirs[0] / n), str(dirs[1] / n), shallow=False), n
