"""`qimg rebase` against the real qemu-img 7.2 rebase.

Each case builds a chain with the real qemu-img/qemu-io, copies the directory, runs
`qemu-img rebase ARGS` in one copy and qimg (through a symlink named qemu-img) in the
other and requires the same exit status, stdout and stderr, byte-identical files (so info
and map agree too), the same guest content (qemu-img compare of the rebased images) and a
clean real `qemu-img check`. Then: a cut after every write of a safe rebase leaves no
corruption (real qemu-img check); --dry-run writes nothing; --journal is undone byte for
byte by `qimg undo`."""

import os

import pytest

import qemu
from chainutil import KIB, MIB, build_chain, images, layer
from portcheck import build_orig, cut_dirs, dry_run, read_all, run_pair, same_files

BASE = layer('base.qcow2', data=('write -P 1 0 64k', 'write -P 2 512k 88k'))
NB4K = layer('nb.qcow2', cluster_size=4096, data=('write -P 1 0 32k', 'write -P 3 100k 10k'))
TOP = layer('top.qcow2', backing='base.qcow2', data=('write -P 5 256k 4k',))


def chain(*extra_top, top_opts=None, base=BASE, nb=NB4K):
    t = layer('top.qcow2', backing=base[0], backing_fmt=base[2],
              data=('write -P 5 256k 4k',) + extra_top, **(top_opts or {}))
    return build_chain(base, nb, t)


def _without(name, build):
    def b(d):
        build(d)
        os.unlink(os.path.join(d, name))
    return b


THREE = build_chain(
    BASE,
    layer('mid.qcow2', cluster_size=16384, backing='base.qcow2',
          data=('write -P 3 100k 10k', 'write -z 512k 64k')),
    layer('top.qcow2', backing='mid.qcow2', data=('write -P 5 256k 4k',)),
    NB4K)

CASES = [
    ('unsafe', chain(), ['-u', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('unsafe-progress', chain(), ['-p', '-u', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('unsafe-no-F', chain(), ['-u', '-b', 'nb.qcow2', 'top.qcow2']),
    ('unsafe-flatten', chain(), ['-u', '-b', '', 'top.qcow2']),
    ('unsafe-F-only', chain(), ['-u', '-F', 'qcow2', 'top.qcow2']),
    ('unsafe-missing-old', _without('gone.qcow2', build_chain(
        NB4K, layer('gone.qcow2'), layer('top.qcow2', backing='gone.qcow2'))),
     ['-u', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('unsafe-subdir-name', chain(), ['-u', '-b', 'sub/x.qcow2', '-F', 'raw', 'top.qcow2']),
    ('safe', chain(), ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-progress', chain(), ['-p', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-quiet-progress', chain(), ['-q', '-p', '-b', 'nb.qcow2', '-F', 'qcow2',
                                      'top.qcow2']),
    ('safe-no-F', chain(), ['-b', 'nb.qcow2', 'top.qcow2']),
    ('safe-flatten', chain(), ['-b', '', 'top.qcow2']),
    ('safe-same-backing', chain(), ['-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-v2', build_chain(layer('base.qcow2', compat='0.10', data=('write -P 1 0 64k',)),
                            layer('nb.qcow2', compat='0.10'),
                            layer('top.qcow2', compat='0.10', backing='base.qcow2',
                                  data=('write -P 5 8k 4k',))),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-extended-l2', chain(top_opts={'extended_l2': True}),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-top-zero-clusters', chain('write -z 0 128k'),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-compressed-old', build_chain(
        layer('base.qcow2', data=('write -c -P 7 0 64k', 'write -c -P 8 128k 64k')), NB4K,
        layer('top.qcow2', backing='base.qcow2')),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-raw-old-to-qcow2', build_chain(
        layer('base.raw', fmt='raw'), NB4K,
        layer('top.qcow2', backing='base.raw', backing_fmt='raw')),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-qcow2-to-raw', build_chain(BASE, layer('nb.raw', fmt='raw'),
                                      layer('top.qcow2', backing='base.qcow2')),
     ['-b', 'nb.raw', '-F', 'raw', 'top.qcow2']),
    ('safe-old-shorter', build_chain(layer('base.qcow2', size='512k',
                                           data=('write -P 1 0 64k',)),
                                     NB4K, layer('top.qcow2', size='1M', backing='base.qcow2')),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-new-shorter', build_chain(BASE, layer('nb.qcow2', size='256k',
                                                 data=('write -P 4 0 256k',)),
                                     layer('top.qcow2', size='1M', backing='base.qcow2')),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-backing-longer', build_chain(layer('base.qcow2', size='4M',
                                              data=('write -P 1 0 4M',)),
                                        layer('nb.qcow2', size='4M'),
                                        layer('top.qcow2', size='1M', backing='base.qcow2')),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('safe-big', build_chain(layer('base.qcow2', size='6M',
                                   data=('write -P 1 0 3M', 'write -P 2 5M 100k')),
                             layer('nb.qcow2', size='6M', data=('write -P 1 1M 1M',)),
                             layer('top.qcow2', size='6M', backing='base.qcow2',
                                   data=('write -P 9 2M 64k',))),
     ['-p', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    # iotest 024 "rebase within one backing chain": the overlay is longer than the old
    # backing (past its end the prefix check has no answer); qimg looped forever
    ('in-chain-past-old-end', build_chain(
        layer('nb.qcow2', size='320k', data=('write -P 0x11 0 320k',)),
        layer('base.qcow2', size='256k', backing='nb.qcow2', data=('write -P 0x22 0 256k',)),
        layer('top.qcow2', size='320k', backing='base.qcow2')),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('three-prefix', THREE, ['-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('three-to-new', THREE, ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('qed', build_chain(layer('base.qed', fmt='qed', data=('write -P 1 0 64k',)),
                        layer('nb.qed', fmt='qed'),
                        layer('top.qed', fmt='qed', backing='base.qed', backing_fmt='qed',
                              data=('write -P 5 256k 4k',))),
     ['-b', 'nb.qed', '-F', 'qed', 'top.qed']),
    ('qcow2-onto-qed', build_chain(
        layer('base.qed', fmt='qed', size='512k', data=('write -P 1 0 64k',)),
        layer('nb.qed', fmt='qed', data=('write -P 4 8k 8k',)),
        layer('top.qcow2', backing='base.qed', backing_fmt='qed',
              data=('write -P 2 600k 100k',))),
     ['-b', 'nb.qed', '-F', 'qed', 'top.qcow2']),
    ('qed-unsafe-raw', build_chain(layer('nb.raw', fmt='raw'),
                                   layer('top.qed', fmt='qed')),
     ['-u', '-b', 'nb.raw', '-F', 'raw', 'top.qed']),
    ('qed-flatten', build_chain(layer('base.qed', fmt='qed', data=('write -P 1 0 64k',)),
                                layer('top.qed', fmt='qed', backing='base.qed',
                                      backing_fmt='qed')),
     ['-b', '', 'top.qed']),
    ('raw-top', build_chain(layer('top.raw', fmt='raw'), NB4K),
     ['-f', 'raw', '-u', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.raw']),
    ('safe-missing-old', _without('gone.qcow2', build_chain(
        NB4K, layer('gone.qcow2'), layer('top.qcow2', backing='gone.qcow2'))),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('data-file-raw-refused', build_chain(NB4K, layer('df.qcow2', data_file='df.raw',
                                                      data_file_raw=True)),
     ['-u', '-b', 'nb.qcow2', '-F', 'qcow2', 'df.qcow2']),
    ('data-file-safe', build_chain(NB4K, layer('df.qcow2', data_file='df.raw',
                                               data=('write -P 9 0 64k',))),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'df.qcow2']),
    ('name-too-long', chain(), ['-u', '-b', 'a' * 1100, '-F', 'qcow2', 'top.qcow2']),
    ('header-full', build_chain(BASE, layer('top.qcow2', cluster_size=512,
                                            backing='base.qcow2')),
     ['-u', '-b', 'b' * 400, '-F', 'qcow2', 'top.qcow2']),
    ('lazy-refcounts', build_chain(BASE, NB4K, layer('top.qcow2', backing='base.qcow2',
                                                     lazy_refcounts=True,
                                                     data=('write -P 5 0 4k',))),
     ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('subdir-names', build_chain(layer('base.qcow2', data=('write -P 1 0 64k',)),
                                 layer('top.qcow2', backing='base.qcow2')),
     ['-b', 'sub/../base.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('onto-itself', chain(), ['-b', 'top.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('unknown-format-F', chain(), ['-u', '-b', 'nb.qcow2', '-F', 'vmdk', 'top.qcow2']),
    ('raw-F-for-qcow2', chain(), ['-b', 'nb.qcow2', '-F', 'raw', 'top.qcow2']),
    ('vdi-top', build_chain(NB4K, layer('top.vdi', fmt='vdi')),
     ['-u', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.vdi']),
    ('wrong-f', chain(), ['-f', 'qed', '-u', '-b', 'nb.qcow2', 'top.qcow2']),
    ('err-missing-new', chain(), ['-b', 'missing.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('err-bad-F', chain(), ['-b', 'nb.qcow2', '-F', 'foo', 'top.qcow2']),
    ('err-no-b', chain(), ['-F', 'qcow2', 'top.qcow2']),
    ('err-two-files', chain(), ['top.qcow2', 'x']),
    ('err-cache', chain(), ['-t', 'bogus', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('err-src-cache', chain(), ['-T', 'bogus', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('err-missing-image', chain(), ['-u', '-b', 'nb.qcow2', 'nothere.qcow2']),
]


def _usage_norm(r):
    # the usage hint names the program: qemu-img's "Try 'qemu-img --help'" is qimg's
    rc, out, err = r
    return rc, out, err.replace("Try 'qimg --help'", "Try 'qemu-img --help'")


@pytest.mark.parametrize('build,args', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rebase_matches_qemu(tmp_path, build, args):
    orig, a, b, ra, rb = run_pair(tmp_path, build, 'rebase', args)
    assert _usage_norm(rb) == ra
    same_files(a, b)
    img = args[-1]
    if ra[0] == 0 and os.path.exists(os.path.join(b, img)):
        for n in images(b):
            ok, detail = qemu.is_clean_by_qemu(n, cwd=b)
            # -u may name a file that is not there (yet): nothing to open, nothing to check
            assert ok or 'Could not open backing file' in detail, detail
        if '-u' not in args:
            # safe mode keeps the guest content: the rebased image reads as before
            fmt = 'qed' if img.endswith('.qed') else 'qcow2'
            before, e1 = qemu.guest_sha256(img, fmt=fmt, cwd=orig)
            after, e2 = qemu.guest_sha256(img, fmt=fmt, cwd=b)
            assert before is not None and before == after, e1 + e2


def test_help_lists_rebase():
    rc, out, _ = qemu.qimg('--help')
    assert rc == 0
    assert [ln.split() for ln in out.splitlines() if ln.split()[:1] == ['rebase']] == \
        [['rebase']]


FAULT_CASES = [
    ('safe', chain('write -P 6 700k 100k'), ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('flatten-v2', build_chain(layer('base.qcow2', compat='0.10', data=('write -P 1 0 200k',)),
                               layer('top.qcow2', compat='0.10', backing='base.qcow2')),
     ['-b', '', 'top.qcow2']),
    ('three-prefix', THREE, ['-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']),
    ('qed', build_chain(layer('base.qed', fmt='qed', data=('write -P 1 0 64k',)),
                        layer('top.qed', fmt='qed', backing='base.qed', backing_fmt='qed')),
     ['-b', '', 'top.qed']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in FAULT_CASES],
                         ids=[c[0] for c in FAULT_CASES])
def test_rebase_cut_at_every_write(tmp_path, build, args):
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    for n, d in cut_dirs(tmp_path, str(orig), 'rebase', args):
        rc, j, out, err = qemu.check_json('qemu', args[-1], cwd=d)
        assert j is not None and not j.get('corruptions') and not j.get('check-errors'), \
            'cut after write %d: %s %s' % (n, out, err)
        # a cut before the switch leaves the old chain: the guest content is unchanged
        rc, out, err = qemu.qemu_img('compare', '-U', os.path.join(str(orig), args[-1]),
                                     os.path.join(d, args[-1]))
        assert rc == 0, 'cut after write %d: %s' % (n, out + err)


PORT_CASES = [c for c in CASES if c[0] in ('unsafe', 'safe', 'safe-flatten', 'three-prefix',
                                           'qed', 'safe-v2', 'safe-big')]


def _no_progress(cases):
    return [(c[0], c[1], [a for a in c[2] if a != '-p']) for c in cases]


PORT_CASES = _no_progress(PORT_CASES)


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_rebase_dry_run_writes_nothing(tmp_path, build, args):
    rc, out, err = dry_run(tmp_path, build_orig(tmp_path, build), 'rebase', args)
    assert rc == 0, err
    assert out.startswith("Rebase plan for '%s' (dry run, nothing was written): " % args[-1])


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_rebase_journal_then_undo(tmp_path, build, args):
    orig, a, b, ra, rb = run_pair(tmp_path, build, 'rebase', args)
    assert ra[0] == 0
    d = qemu.copy_dir(orig, str(tmp_path / 'j'))
    before = read_all(d)
    j = str(tmp_path / 'rebase.journal')
    rc, out, err = qemu.qimg('rebase', '--journal', j, *args, cwd=d)
    assert (rc, out, err) == (0, '', '')
    # the journaled rebase leaves qemu-img's bytes
    same_files(a, d)
    rc, out, err = qemu.qimg('undo', j, args[-1], cwd=d)
    assert rc == 0, err
    assert read_all(d) == before


JOURNAL_CUT_CASES = [c for c in FAULT_CASES if c[0] in ('safe', 'three-prefix', 'qed')]


@pytest.mark.parametrize('build,args', [c[1:] for c in JOURNAL_CUT_CASES],
                         ids=[c[0] for c in JOURNAL_CUT_CASES])
def test_rebase_journal_cut_then_undo(tmp_path, build, args):
    """A --journal rebase killed after each of its writes: qimg undo puts every byte back."""
    orig = tmp_path / 'orig'
    orig.mkdir()
    build(str(orig))
    before = read_all(str(orig))
    jr = str(tmp_path / 'j')
    for n, d in cut_dirs(tmp_path, str(orig), 'rebase', ['--journal', jr] + args):
        rc, out, err = qemu.qimg('undo', jr, args[-1], cwd=d)
        assert rc == 0, 'cut after write %d: %s%s' % (n, out, err)
        assert read_all(d) == before, 'cut after write %d' % n
        os.unlink(jr)


def test_rebase_dry_run_journal_refusals(tmp_path):
    d = str(tmp_path)
    build_chain(NB4K, layer('df.qcow2', data_file='df.raw'))(d)
    before = read_all(d)
    for opt in (['--dry-run'], ['--journal', str(tmp_path / 'j')]):
        rc, out, err = qemu.qimg('rebase', *opt, '-b', 'nb.qcow2', '-F', 'qcow2', 'df.qcow2',
                                 cwd=d)
        assert (rc, out) == (1, '')
        assert err == 'qimg: --dry-run and --journal are not supported for images with an ' \
            'external data file\n'
    rc, out, err = qemu.qimg('rebase', '--dry-run', '--journal', 'j', '-u', 'df.qcow2', cwd=d)
    assert (rc, out, err) == (1, '', 'qimg: --dry-run and --journal cannot be used together\n')
    assert read_all(d) == before
    assert not os.path.exists(str(tmp_path / 'j'))


@pytest.mark.parametrize('read_only', [False, True], ids=['writer', 'reader'])
def test_rebase_refused_while_in_use(tmp_path, read_only):
    """Another process holds the image: qemu-img's lock message, nothing written; --journal
    refuses the same way."""
    d = str(tmp_path)
    chain()(d)
    before = read_all(d)
    args = ['-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']
    with qemu.held_open('top.qcow2', read_only=read_only, cwd=d):
        ra = qemu.run(qemu.QEMU_IMG, 'rebase', *args, cwd=d)
        rb = qemu.run(qemu.tool_path('qimg'), 'rebase', *args, cwd=d)
        rj = qemu.run(qemu.tool_path('qimg'), 'rebase', '--journal', 'j', *args, cwd=d)
    assert ra[0] == 1 and 'lock' in ra[2]
    assert rb == ra
    assert rj[0] == 1 and 'lock' in rj[2]
    assert read_all(d) == before
