"""--object secrets, --image-opts, --target-image-opts and json: names in convert, commit,
rebase, snapshot, bitmap, dd, bench and check, on encrypted images (LUKS in qcow2, raw LUKS,
qcow2's AES) made by the real qemu-img: qemu-img 7.2's stdout, stderr and exit codes, and the
same guest bytes (cmp) or compare-identical images where qemu's output is not deterministic
(LUKS salts)."""

import json
import shutil

import pytest

from qemu import create_luks, qemu_img, qemu_io, qimg
from test_luks import KINDS, SECRET, WRONG, json_name, make, opts

ENCRYPTED = ['luks', 'qcow2-luks', 'qcow2-aes']


def same(a, b):
    """Both tools gave the same exit code, stdout and stderr (program name aside)."""
    assert b[0] == a[0], (a, b)
    assert b[1] == a[1], (a, b)
    assert b[2].replace('qimg:', 'qemu-img:').replace("'qimg --help'", "'qemu-img --help'") \
        == a[2], (a, b)


def both(*args):
    a, b = qemu_img(*args), qimg(*args)
    same(a, b)
    return a


def retried(tool, *args, attempts=50):
    """qemu-img times PBKDF2 with per-thread CPU time; on a loaded machine it sometimes
    fails with 'Unable to get accurate CPU usage' before doing anything: run it again."""
    for _ in range(attempts):
        r = tool(*args)
        if 'Unable to get accurate CPU usage' not in r[2]:
            return r
    return r


def identical(spec_a, spec_b, *objects):
    r = qemu_img('compare', *objects, '--image-opts', spec_a, spec_b)
    assert r[0] == 0 and r[1] == 'Images are identical.\n', r


def raw_of(tmp_path, kind, path, name):
    """The guest bytes of an encrypted image, by the real qemu-img."""
    out = str(tmp_path / name)
    r = qemu_img('convert', '--object', SECRET, '--image-opts', opts(kind, path), '-O', 'raw',
                 out)
    assert r[0] == 0, r
    return out


# ---------------------------------------------------------------------------- check


CHECK_CASES = ['image-opts', 'json', 'json-output', 'wrong-secret', 'no-object', 'no-key',
               'other-format', 'bad-format', 'unknown-secret']


# encrypt.format is a qcow/qcow2 option: the format cases are not made for luks images
@pytest.mark.parametrize('kind,case', [
    pytest.param(k, c, id=f'{c}-{k}') for c in CHECK_CASES for k in ENCRYPTED + ['qcow-aes']
    if not (c in ('other-format', 'bad-format') and KINDS[k][0] == 'luks')])
def test_check_uses_the_key(tmp_path, kind, case):
    path = make(tmp_path, kind)
    args = {
        'image-opts': ['--object', SECRET, '--image-opts', opts(kind, path)],
        'json': ['--object', SECRET, json_name(kind, path)],
        'json-output': ['--object', SECRET, '--output=json', '--image-opts', opts(kind, path)],
        'wrong-secret': ['--object', WRONG, '--image-opts', opts(kind, path)],
        'no-object': ['--image-opts', opts(kind, path)],
        'no-key': ['--object', SECRET, path],
        'other-format': ['--object', SECRET, '--image-opts',
                         opts(kind, path, extra=',encrypt.format=' +
                              ('aes' if 'luks' in kind else 'luks'))],
        'bad-format': ['--object', SECRET, '--image-opts',
                       opts(kind, path, extra=',encrypt.format=foo')],
        'unknown-secret': ['--object', SECRET, '--image-opts', opts(kind, path, 'nosuch')],
    }[case]
    a, b = qemu_img('check', *args), qimg('check', *args)
    if case == 'json-output' and a[0] == 0 and b[0] == 0:
        # qimg's JSON report adds its "findings" list (README: Differences from qemu-img)
        ja, jb = json.loads(a[1]), json.loads(b[1])
        assert jb.pop('findings') == []
        assert ja == jb
        return
    same(a, b)
    expect = {'luks': 63, 'qcow-aes': 63}.get(kind, 0)
    if case in ('image-opts', 'json'):
        assert a[0] == expect, a
    if case == 'wrong-secret' and 'aes' not in kind:
        assert 'Invalid password, cannot unlock any keyslot' in a[2]


@pytest.mark.parametrize('kind', ['qcow2-luks', 'qcow2-aes'])
def test_check_repair_uses_the_key(tmp_path, kind):
    path = make(tmp_path, kind)
    orig = open(path, 'rb').read()
    for secret in (WRONG, SECRET):
        for fix in ('leaks', 'all'):
            a = both('check', '-r', fix, '--object', secret, '--image-opts', opts(kind, path))
            assert a[0] == (1 if secret == WRONG and 'luks' in kind else 0), a
    a = both('check', '-r', 'all', '--image-opts', opts(kind, path))
    assert a[0] == 1
    assert open(path, 'rb').read() == orig   # clean image: nothing to repair, nothing written


def test_check_unencrypted_with_encrypt_format(tmp_path):
    path = str(tmp_path / 'plain.qcow2')
    assert qemu_img('create', '-f', 'qcow2', path, '1M')[0] == 0
    for c in ('check', 'info', 'map'):
        a = both(c, '--image-opts', 'driver=qcow2,file.filename=%s,encrypt.format=luks' % path)
        assert a[0] == 1 and 'No encryption in image header' in a[2]


@pytest.mark.parametrize('kind', ['qcow2-luks', 'qcow2-aes', 'luks'])
def test_info_names_a_keyed_node_by_its_options(tmp_path, kind):
    path = make(tmp_path, kind)
    for args in (['--image-opts', opts(kind, path)], [json_name(kind, path)]):
        a = both('info', '--object', SECRET, *args)
        assert a[1].startswith('image: json:{')
        both('info', '--object', SECRET, '--output=json', *args)


def test_check_backing_key_through_options(tmp_path):
    base = make(tmp_path, 'qcow2-luks')
    top = str(tmp_path / 'top.qcow2')
    r = create_luks('-f', 'qcow2', '-b', base, '-F', 'qcow2', top)
    assert r[0] == 0, r
    spec = 'driver=qcow2,file.filename=%s' % top
    both('check', '--object', SECRET, '--image-opts', spec)
    both('check', '--object', SECRET, '--image-opts', spec + ',backing.encrypt.key-secret=sec0')
    both('check', '--object', WRONG, '--image-opts', spec + ',backing.encrypt.key-secret=sec0')


# ---------------------------------------------------------------------------- convert


@pytest.mark.parametrize('kind', ENCRYPTED)
@pytest.mark.parametrize('name', ['image-opts', 'json'])
def test_convert_encrypted_source_to_raw(tmp_path, kind, name):
    path = make(tmp_path, kind)
    src = ['--image-opts', opts(kind, path)] if name == 'image-opts' else [json_name(kind, path)]
    a = qemu_img('convert', '--object', SECRET, *src, '-O', 'raw', str(tmp_path / 'a.raw'))
    b = qimg('convert', '--object', SECRET, *src, '-O', 'raw', str(tmp_path / 'b.raw'))
    same(a, b)
    assert a[0] == 0
    assert open(tmp_path / 'a.raw', 'rb').read() == open(tmp_path / 'b.raw', 'rb').read()


@pytest.mark.parametrize('kind', ['luks', 'qcow2-luks'])
@pytest.mark.parametrize('case', ['wrong-secret', 'no-object', 'with-f', 'target-opts-no-n',
                                  'target-opts-with-O', 'no-key'])
def test_convert_errors(tmp_path, kind, case):
    path = make(tmp_path, kind)
    out = str(tmp_path / 'out.raw')
    args = {
        'wrong-secret': ['--object', WRONG, '--image-opts', opts(kind, path), out],
        'no-object': ['--image-opts', opts(kind, path), out],
        'with-f': ['--object', SECRET, '--image-opts', '-f', KINDS[kind][0], opts(kind, path),
                   out],
        'target-opts-no-n': ['--object', SECRET, '--target-image-opts', path,
                             'driver=raw,file.filename=' + out],
        'target-opts-with-O': ['--object', SECRET, '-n', '--target-image-opts', '-O', 'raw',
                               json_name(kind, path), 'driver=raw,file.filename=' + path],
        'no-key': ['--object', SECRET, path, out],
    }[case]
    a = qemu_img('convert', *args)
    b = qimg('convert', *args)
    same(a, b)
    assert a[0] == 1


# the target's create options, and how to name it for the reading side
TARGETS = {
    'qcow2-luks': ('qcow2', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10'),
    'qcow2-aes': ('qcow2', 'encrypt.format=aes,encrypt.key-secret=sec0'),
    'luks': ('luks', 'key-secret=sec0,iter-time=10'),
}


@pytest.mark.parametrize('target', sorted(TARGETS))
@pytest.mark.parametrize('source', ['qcow2-luks', 'plain'])
def test_convert_to_encrypted_target(tmp_path, target, source):
    fmt, o = TARGETS[target]
    if source == 'plain':
        src_path = str(tmp_path / 'plain.qcow2')
        assert qemu_img('create', '-f', 'qcow2', src_path, '4M')[0] == 0
        assert qemu_io('-f', 'qcow2', '-c', 'write -P 0x33 64k 1M', src_path)[0] == 0
        src = [src_path]
        src_spec = 'driver=qcow2,file.filename=' + src_path
    else:
        src_path = make(tmp_path, source)
        src = ['--image-opts', opts(source, src_path)]
        src_spec = opts(source, src_path)
    a_out, b_out = str(tmp_path / 'a.img'), str(tmp_path / 'b.img')
    a = retried(qemu_img, 'convert', '--object', SECRET, *src, '-O', fmt, '-o', o, a_out)
    b = qimg('convert', '--object', SECRET, *src, '-O', fmt, '-o', o, b_out)
    same(a, b)
    assert a[0] == 0
    # qimg's target reads, through the real qemu-img, as the source and as qemu's target
    identical(src_spec, opts(target, b_out), '--object', SECRET)
    identical(opts(target, a_out), opts(target, b_out), '--object', SECRET)
    if fmt == 'qcow2':
        r = qemu_img('check', '--object', SECRET, '--image-opts', opts(target, b_out))
        assert r[0] == 0, r


@pytest.mark.parametrize('target', ['qcow2-luks', 'luks'])
def test_convert_n_target_image_opts(tmp_path, target):
    src = make(tmp_path, 'qcow2-aes')
    fmt, o = TARGETS[target]
    outs = []
    for who in ('a', 'b'):
        out = str(tmp_path / (who + '.img'))
        r = create_luks('--object', SECRET, '-f', fmt, '-o', o, out, '4M')
        assert r[0] == 0, r
        outs.append(out)
    args = ['--object', SECRET, '-n', '--image-opts', '--target-image-opts',
            opts('qcow2-aes', src)]
    same(qemu_img('convert', *args, opts(target, outs[0])),
         qimg('convert', *args, opts(target, outs[1])))
    identical(opts('qcow2-aes', src), opts(target, outs[1]), '--object', SECRET)
    identical(opts(target, outs[0]), opts(target, outs[1]), '--object', SECRET)
    # and -n with a json: target name
    same(qemu_img('convert', '--object', SECRET, '-n', '-O', fmt, '--image-opts',
                  opts('qcow2-aes', src), json_name(target, outs[0])),
         qimg('convert', '--object', SECRET, '-n', '-O', fmt, '--image-opts',
              opts('qcow2-aes', src), json_name(target, outs[1])))


# ---------------------------------------------------------------------------- commit, rebase


def encrypted_chain(tmp_path, who):
    """base (LUKS, sec0) <- top (LUKS, sec1) as iotest 198 builds it."""
    s1 = 'secret,id=sec1,data=12345678'
    base, top = str(tmp_path / (who + '-base.qcow2')), str(tmp_path / (who + '-top.qcow2'))
    r = create_luks('--object', SECRET, '-f', 'qcow2', '-o',
                    'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', base,
                    '4M')
    assert r[0] == 0, r
    r = create_luks('--object', s1, '-f', 'qcow2', '-o',
                    'encrypt.format=luks,encrypt.key-secret=sec1,encrypt.iter-time=10', '-b',
                    base, '-F', 'qcow2', top)
    assert r[0] == 0, r
    assert qemu_io('--object', SECRET, '--image-opts', '-c', 'write -P 0xa 0 4M',
                   'driver=qcow2,file.filename=%s,encrypt.key-secret=sec0' % base)[0] == 0
    spec = ('driver=qcow2,file.filename=%s,encrypt.key-secret=sec1,'
            'backing.encrypt.key-secret=sec0' % top)
    assert qemu_io('--object', SECRET, '--object', s1, '--image-opts', '-c',
                   'write -P 0x9 1M 1M', spec)[0] == 0
    return base, top, spec, ['--object', SECRET, '--object', s1]


def test_commit_image_opts_encrypted_chain(tmp_path):
    qa = encrypted_chain(tmp_path, 'a')
    qb = encrypted_chain(tmp_path, 'b')
    same(qemu_img('commit', *qa[3], '--image-opts', qa[2]),
         qimg('commit', *qb[3], '--image-opts', qb[2]))
    base_spec = 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec0'
    identical(base_spec % qa[0], base_spec % qb[0], '--object', SECRET)
    r = qemu_io('--object', SECRET, '--image-opts', '-c', 'read -P 0x9 1M 1M', '-c',
                'read -P 0xa 2M 2M', base_spec % qb[0])
    assert r[0] == 0 and 'fail' not in r[1], r
    identical(qa[2], qb[2], *qa[3])


@pytest.mark.parametrize('case', ['no-backing-key', 'with-f', 'wrong-secret'])
def test_commit_image_opts_errors(tmp_path, case):
    base, top, spec, objs = encrypted_chain(tmp_path, 'a')
    args = {
        'no-backing-key': [*objs, '--image-opts', spec.replace(
            ',backing.encrypt.key-secret=sec0', '')],
        'with-f': [*objs, '-f', 'qcow2', '--image-opts', spec],
        'wrong-secret': ['--object', WRONG, '--object', objs[3], '--image-opts', spec],
    }[case]
    a = both('commit', *args)
    assert a[0] == 1


def test_rebase_image_opts_to_keyed_json_backing(tmp_path):
    results = []
    for who, tool in (('a', qemu_img), ('b', qimg)):
        base, top, spec, objs = encrypted_chain(tmp_path, who)
        new = str(tmp_path / (who + '-new.qcow2'))
        r = create_luks('--object', SECRET, '-f', 'qcow2', '-o',
                        'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10',
                        new, '4M')
        assert r[0] == 0, r
        bname = json.dumps({'driver': 'qcow2', 'file': {'filename': new},
                            'encrypt.key-secret': 'sec0'})
        results.append(tool('rebase', *objs, '--image-opts', '-b', 'json:' + bname, '-F',
                            'qcow2', spec))
        info = json.loads(qemu_img('info', '--output=json', top)[1])
        assert info['backing-filename'] == 'json:' + bname
        results.append((top, objs))
    same(results[0], results[2])
    spec = 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec1'
    identical(spec % results[1][0], spec % results[3][0], *results[1][1])


def test_rebase_image_opts_errors(tmp_path):
    base, top, spec, objs = encrypted_chain(tmp_path, 'a')
    a = both('rebase', *objs, '--image-opts', '-f', 'qcow2', '-b', base, '-F', 'qcow2', spec)
    assert a[0] == 1
    a = both('rebase', *objs, '--image-opts', '-b', '', spec.replace(
        ',backing.encrypt.key-secret=sec0', ''))
    assert a[0] == 1


# ---------------------------------------------------------------------------- snapshot, bitmap


@pytest.mark.parametrize('kind', ['qcow2-luks', 'qcow2-aes'])
def test_snapshot_image_opts(tmp_path, kind):
    path = make(tmp_path, kind)
    spec = opts(kind, path)
    assert qimg('snapshot', '--object', SECRET, '--image-opts', '-c', 's1', spec)[0] == 0
    assert qemu_img('snapshot', '--object', SECRET, '--image-opts', '-c', 's2', spec)[0] == 0
    a = both('snapshot', '--object', SECRET, '--image-opts', '-l', spec)
    assert ' s1 ' in a[1] and ' s2 ' in a[1]
    assert qimg('snapshot', '--object', SECRET, '--image-opts', '-d', 's2', spec)[0] == 0
    r = qemu_img('snapshot', '--object', SECRET, '--image-opts', '-l', spec)
    assert ' s1 ' in r[1] and ' s2 ' not in r[1], r
    r = qemu_img('check', '--object', SECRET, '--image-opts', spec)
    assert r[0] == 0, r
    bad = [['--image-opts', '-l', spec], ['-l', path],
           ['-U', '--object', SECRET, '--image-opts', '-c', 'x', spec],
           ['--object', SECRET, '--image-opts', '-l', spec + ',foo=bar'],
           ['--object', SECRET, '--object', SECRET, '-l', path],
           ['--object', 'secret,id=sec0', '-l', path]]
    if 'aes' not in kind:   # AES has no key check, in qemu either
        bad.append(['--object', WRONG, '--image-opts', '-c', 'x', spec])
    for args in bad:
        assert both('snapshot', *args)[0] == 1


def test_snapshot_journal_on_encrypted_image(tmp_path):
    path = make(tmp_path, 'qcow2-luks')
    orig = open(path, 'rb').read()
    spec = opts('qcow2-luks', path)
    jnl = str(tmp_path / 'j.jnl')
    r = qimg('snapshot', '--object', SECRET, '--image-opts', '--dry-run', '-c', 's9', spec)
    assert r[0] == 0 and 'nothing was written' in r[1], r
    assert open(path, 'rb').read() == orig
    r = qimg('snapshot', '--object', SECRET, '--image-opts', '--journal', jnl, '-c', 's9', spec)
    assert r[0] == 0, r
    r = qemu_img('snapshot', '--object', SECRET, '--image-opts', '-l', spec)
    assert ' s9 ' in r[1], r
    r = qemu_img('check', '--object', SECRET, '--image-opts', spec)
    assert r[0] == 0, r
    r = qimg('undo', jnl, path)
    assert r[0] == 0, r
    assert open(path, 'rb').read() == orig


def test_bitmap_image_opts_and_keyed_source(tmp_path):
    infos = []
    for who, tool in (('a', qemu_img), ('b', qimg)):
        d = tmp_path / who
        d.mkdir()
        src = make(d, 'qcow2-luks')
        dst = str(d / 'dst.qcow2')
        assert qemu_img('create', '-f', 'qcow2', dst, '4M')[0] == 0
        assert qemu_img('bitmap', '--add', '--object', SECRET, '--image-opts',
                        opts('qcow2-luks', src), 'b0')[0] == 0
        spec = 'driver=qcow2,file.driver=file,file.filename=' + dst
        for args in (['--add', '--image-opts', spec, 'tmp'],
                     ['--add', '--object', SECRET, '--image-opts', '--merge', 'b0', '-b',
                      json_name('qcow2-luks', src), '-F', 'qcow2', spec, 'm'],
                     ['--remove', '--image-opts', spec, 'tmp']):
            r = tool('bitmap', *args)
            assert r[0] == 0, r
        infos.append(json.loads(qemu_img('info', '--output=json', dst)[1]))
    strip = lambda i: i['format-specific']['data'].get('bitmaps')
    assert strip(infos[0]) == strip(infos[1]) and len(strip(infos[1])) == 1
    assert open(tmp_path / 'a' / 'dst.qcow2', 'rb').read() == \
        open(tmp_path / 'b' / 'dst.qcow2', 'rb').read()
    spec = 'driver=qcow2,file.filename=' + str(tmp_path / 'b' / 'dst.qcow2')
    for args in (['--add', '-f', 'qcow2', '--image-opts', spec, 'x'],
                 ['--add', '--image-opts', spec + ',foo=1', 'x'],
                 ['--add', '--object', 'nope', '--image-opts', spec, 'x']):
        assert both('bitmap', *args)[0] == 1


# ---------------------------------------------------------------------------- dd, bench


@pytest.mark.parametrize('kind', ENCRYPTED)
def test_dd_image_opts_source(tmp_path, kind):
    path = make(tmp_path, kind)
    for n, args in enumerate((['--image-opts', 'if=' + opts(kind, path)],
                              ['if=' + json_name(kind, path)],
                              ['--image-opts', '-O', 'qcow2', 'if=' + opts(kind, path)])):
        a_out, b_out = str(tmp_path / ('a%d' % n)), str(tmp_path / ('b%d' % n))
        same(qemu_img('dd', '--object', SECRET, *args, 'of=' + a_out, 'bs=64k'),
             qimg('dd', '--object', SECRET, *args, 'of=' + b_out, 'bs=64k'))
        if '-O' in args:
            identical('driver=qcow2,file.filename=' + a_out,
                      'driver=qcow2,file.filename=' + b_out)
        else:
            assert open(a_out, 'rb').read() == open(b_out, 'rb').read()
    out = str(tmp_path / 'x')
    bad = [['--image-opts', 'if=' + opts(kind, path)],
           ['--object', SECRET, '--image-opts', '-f', 'qcow2', 'if=' + opts(kind, path)]]
    if 'aes' not in kind:   # AES has no key check: a wrong key reads noise, in qemu too
        bad.append(['--object', WRONG, '--image-opts', 'if=' + opts(kind, path)])
    for args in bad:
        assert both('dd', *args, 'of=' + out)[0] == 1


def test_bench_image_opts(tmp_path):
    path = str(tmp_path / 'b.qcow2')
    assert qemu_img('create', '-f', 'qcow2', path, '1M')[0] == 0
    spec = 'driver=qcow2,file.filename=' + path
    for args in (['-f', 'qcow2', '--image-opts', spec],
                 ['-U', '-w', '--image-opts', spec],
                 ['-n', '--image-opts', spec],
                 ['--image-opts', spec + ',foo=bar'],
                 ['--object', SECRET, '--image-opts', spec],
                 ['--image-opts', 'driver=qcow2,file.filename=' + str(tmp_path / 'nope')]):
        assert both('bench', '-c', '1', *args)[0] == 1
    a, b = qemu_img('bench', '-c', '4', '--image-opts', spec), \
        qimg('bench', '-c', '4', '--image-opts', spec)
    assert a[0] == b[0] == 0 and b[2] == ''
    assert b[1].splitlines()[0] == a[1].splitlines()[0]


def test_copy_of_encrypted_image_converts_back_identical(tmp_path):
    """convert from qimg's encrypted output back to raw: the guest bytes round-trip."""
    path = make(tmp_path, 'qcow2-luks')
    raw = raw_of(tmp_path, 'qcow2-luks', path, 'orig.raw')
    enc = str(tmp_path / 'enc.qcow2')
    r = qimg('convert', '--object', SECRET, '-f', 'raw', '-O', 'qcow2', '-o',
             TARGETS['qcow2-luks'][1], raw, enc)
    assert r[0] == 0, r
    back = str(tmp_path / 'back.raw')
    r = qimg('convert', '--object', SECRET, '--image-opts', opts('qcow2-luks', enc), back)
    assert r[0] == 0, r
    shutil.copy(back, str(tmp_path / 'copy.raw'))
    assert open(raw, 'rb').read() == open(back, 'rb').read()


@pytest.mark.parametrize('cmd', ['convert', 'commit', 'rebase', 'snapshot', 'bitmap', 'dd',
                                 'info', 'check'])
@pytest.mark.parametrize('spec', ['secret,id=1a,data=x', 'secret,id=a@b,data=x',
                                  'secret,id=a-b.c_d', 'secret,id=s,data=x,foo=1'])
def test_object_errors_in_every_command(tmp_path, cmd, spec):
    path = str(tmp_path / 'p.qcow2')
    assert qemu_img('create', '-f', 'qcow2', path, '1M')[0] == 0
    rest = {'convert': [path, str(tmp_path / 'o')], 'commit': [path],
            'rebase': ['-u', '-b', '', path], 'snapshot': ['-l', path],
            'bitmap': ['--add', path, 'b'], 'dd': ['if=' + path, 'of=' + str(tmp_path / 'o')],
            'info': [path], 'check': [path]}[cmd]
    a = both(cmd, '--object', spec, *rest)
    assert a[0] == 1
