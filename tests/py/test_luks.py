"""Encrypted images with --object secret: LUKS (raw luks and LUKS in qcow2) and qcow2's
legacy AES, made and written by real qemu-img/qemu-io, read by qimg (compare, map, info)
with the same secret: qemu-img's outputs, messages and exit codes."""

import json
import os
import shutil

import pytest

import qemu
from qemu import create_luks, qemu_img, qemu_io, qimg

SECRET = 'secret,id=sec0,data=hunter2'
WRONG = 'secret,id=sec0,data=hunter3'

# kind -> (driver, key option, create options)
KINDS = {
    'luks': ('luks', 'key-secret', 'key-secret=sec0,iter-time=10'),
    'qcow2-luks': ('qcow2', 'encrypt.key-secret',
                   'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10'),
    'qcow2-aes': ('qcow2', 'encrypt.key-secret', 'encrypt.format=aes,encrypt.key-secret=sec0'),
    'luks-cbc-essiv': ('luks', 'key-secret',
                       'key-secret=sec0,iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,'
                       'ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1'),
    'luks-plain': ('luks', 'key-secret',
                   'key-secret=sec0,iter-time=10,cipher-alg=aes-256,cipher-mode=xts,'
                   'ivgen-alg=plain'),
    'qcow-aes': ('qcow', 'encrypt.key-secret', 'encrypt.format=aes,encrypt.key-secret=sec0'),
    'qcow2-luks-cbc': ('qcow2', 'encrypt.key-secret',
                       'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,'
                       'encrypt.cipher-alg=aes-256,encrypt.cipher-mode=cbc,'
                       'encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256'),
}


def opts(kind, path, secret_id='sec0', extra=''):
    drv, key, _ = KINDS[kind]
    return 'driver=%s,file.filename=%s,%s=%s%s' % (drv, path, key, secret_id, extra)


def json_name(kind, path):
    drv, key, _ = KINDS[kind]
    return 'json:' + json.dumps({'driver': drv, key: 'sec0',
                                 'file': {'driver': 'file', 'filename': path}})


def make(tmp_path, kind, size='4M'):
    drv, _, o = KINDS[kind]
    path = str(tmp_path / ('img.' + drv))
    r = create_luks('--object', SECRET, '-f', drv, '-o', o, path, size)
    assert r[0] == 0, r
    for cmd in ('write -P 0x5a 4k 8k', 'write -P 0xa5 1M 64k', 'write -z 2M 64k'):
        r = qemu_io('--object', SECRET, '--image-opts', '-c', cmd, opts(kind, path))
        assert r[0] == 0, r
    return path


@pytest.mark.parametrize('kind', sorted(KINDS))
def test_guest_bytes_equal_qemu(tmp_path, kind):
    path = make(tmp_path, kind)
    raw = str(tmp_path / 'plain.raw')
    r = qemu_img('convert', '--object', SECRET, '--image-opts', opts(kind, path), '-O', 'raw',
                 raw)
    assert r[0] == 0, r
    for tool in (qimg, qemu_img):
        r = tool('compare', '--object', SECRET, '-f', 'raw', raw, json_name(kind, path))
        assert (r[0], r[1]) == (0, 'Images are identical.\n'), (tool, r)


@pytest.mark.parametrize('kind', ['luks', 'qcow2-luks', 'qcow2-aes', 'qcow-aes'])
@pytest.mark.parametrize('output', ['human', 'json'])
def test_map_as_qemu(tmp_path, kind, output):
    path = make(tmp_path, kind)
    a = qemu_img('map', '--object', SECRET, '--output=' + output, '--image-opts',
                 opts(kind, path))
    b = qimg('map', '--object', SECRET, '--output=' + output, '--image-opts', opts(kind, path))
    assert b[0] == a[0]
    assert b[1] == a[1]
    assert b[2].replace('qimg:', 'qemu-img:') == a[2]


@pytest.mark.parametrize('kind', ['luks', 'qcow2-luks', 'qcow2-aes'])
def test_compare_detects_difference(tmp_path, kind):
    path = make(tmp_path, kind)
    raw = str(tmp_path / 'plain.raw')
    qemu_img('convert', '--object', SECRET, '--image-opts', opts(kind, path), '-O', 'raw', raw)
    qemu_io('-f', 'raw', '-c', 'write -P 0x11 1M 512', raw)
    a = qemu_img('compare', '--object', SECRET, '-f', 'raw', raw, json_name(kind, path))
    b = qimg('compare', '--object', SECRET, '-f', 'raw', raw, json_name(kind, path))
    assert (b[0], b[1]) == (a[0], a[1]) == (1, 'Content mismatch at offset 1048576!\n')


@pytest.mark.parametrize('kind', ['luks', 'qcow2-luks'])
def test_wrong_password(tmp_path, kind):
    path = make(tmp_path, kind)
    for cmd, rc in ((['map'], 1), (['compare', path], 2)):
        a = qemu_img(*cmd[:1], '--object', WRONG, '--image-opts', opts(kind, path), *cmd[1:])
        b = qimg(*cmd[:1], '--object', WRONG, '--image-opts', opts(kind, path), *cmd[1:])
        assert a[0] == b[0] == rc
        assert 'Invalid password, cannot unlock any keyslot' in b[2]
        assert b[2].replace('qimg:', 'qemu-img:') == a[2]


# encrypt.format is a qcow/qcow2 option: no wrong-format case for a luks image
@pytest.mark.parametrize('kind,case', [
    pytest.param(k, c, id=f'{c}-{k}')
    for c in ('no-secret-object', 'no-key-option', 'wrong-format')
    for k in ('luks', 'qcow2-luks', 'qcow2-aes', 'qcow-aes')
    if not (c == 'wrong-format' and KINDS[k][0] == 'luks')])
def test_missing_secret(tmp_path, kind, case):
    path = make(tmp_path, kind)
    if case == 'no-secret-object':
        args = ['--image-opts', opts(kind, path)]
    elif case == 'no-key-option':
        args = ['--object', SECRET, path]
    else:
        other = 'aes' if kind == 'qcow2-luks' else 'luks'
        args = ['--object', SECRET, '--image-opts',
                opts(kind, path, extra=',encrypt.format=' + other)]
    a = qemu_img('map', *args)
    b = qimg('map', *args)
    assert a[0] == b[0] == 1
    assert b[2].replace('qimg:', 'qemu-img:') == a[2]


@pytest.mark.parametrize('spec,extra', [
    ('secret,id=sec0,data=aHVudGVyMg==,format=base64', ''),
    ('secret,id=sec0,file=FILE', ''),
    ('secret,id=sec0,file=FILE,format=base64', 'b64'),
])
def test_secret_sources(tmp_path, spec, extra):
    path = make(tmp_path, 'luks')
    f = tmp_path / 'pw'
    f.write_bytes(b'aHVudGVyMg==' if extra == 'b64' else b'hunter2')
    spec = spec.replace('FILE', str(f))
    a = qemu_img('map', '--object', spec, '--output=json', '--image-opts', opts('luks', path))
    b = qimg('map', '--object', spec, '--output=json', '--image-opts', opts('luks', path))
    assert a[0] == b[0] == 0
    assert a[1] == b[1]


@pytest.mark.parametrize('spec', [
    'secret,id=sec0', 'secret,data=x', 'secret,id=sec0,data=x,format=hex',
    'secret,id=sec0,data=x,bogus=1', 'secret,id=sec0,file=/nonexistent/pw',
    'secret,id=sec0,data=a*b,format=base64', 'foo,id=x',
])
def test_bad_objects(tmp_path, spec):
    path = make(tmp_path, 'luks')
    a = qemu_img('map', '--object', spec, '--image-opts', opts('luks', path))
    b = qimg('map', '--object', spec, '--image-opts', opts('luks', path))
    assert a[0] == b[0] == 1
    assert b[2].replace('qimg:', 'qemu-img:') == a[2]


def test_duplicate_secret_id(tmp_path):
    path = make(tmp_path, 'luks')
    args = ['map', '--object', SECRET, '--object', SECRET, '--image-opts', opts('luks', path)]
    a = qemu_img(*args)
    b = qimg(*args)
    assert a[0] == b[0] == 1
    assert b[2].replace('qimg:', 'qemu-img:') == a[2]


def test_info_with_secret_as_qemu(tmp_path):
    path = make(tmp_path, 'qcow2-luks')
    a = qemu_img('info', '--object', SECRET, '--output=json', path)
    b = qimg('info', '--object', SECRET, '--output=json', path)
    assert a[0] == b[0] == 0
    assert json.loads(a[1])['format-specific'] == json.loads(b[1])['format-specific']


QIMG_IO = os.path.abspath(os.environ.get('QIMG_IO') or
                          os.path.join(os.path.dirname(qemu.QIMG), 'qimg-io'))

# kind -> (format, -o options) for images qimg creates
CREATE = {
    'luks': ('luks', 'key-secret=sec0,iter-time=10'),
    'luks-cbc-essiv': ('luks', 'key-secret=sec0,iter-time=10,cipher-alg=aes-128,'
                       'cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1'),
    'qcow2-luks': ('qcow2', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10'),
    'qcow2-luks-plain': ('qcow2', 'encrypt.format=luks,encrypt.key-secret=sec0,'
                         'encrypt.iter-time=10,encrypt.ivgen-alg=plain,'
                         'encrypt.cipher-alg=aes-128'),
    'qcow2-aes': ('qcow2', 'encrypt.format=aes,encrypt.key-secret=sec0'),
}

WRITES = ['write -P 0x41 1000 3000', 'write -P 0x42 70000 131072', 'write -P 0x43 3000 100',
          'write -z 1M 64k', 'write -P 0x44 2M 512']
VERIFY = ['read -P 0 0 1000', 'read -P 0x41 1000 2000', 'read -P 0x43 3000 100',
          'read -P 0x41 3100 900', 'read -P 0 4000 66000', 'read -P 0x42 70000 131072',
          'read -P 0 1M 64k', 'read -P 0x44 2M 512']


def verify_for(kind):
    """A luks volume's never-written sectors decrypt to noise (no zero init): only the
    written ranges are checked there."""
    if CREATE[kind][0] == 'luks':
        return [c for c in VERIFY if ' 0 0 ' not in c and ' 4000 ' not in c]
    return VERIFY


def spec_for(kind, path):
    fmt = CREATE[kind][0]
    key = 'key-secret' if fmt == 'luks' else 'encrypt.key-secret'
    return 'driver=%s,file.filename=%s,%s=sec0' % (fmt, path, key)


def io_cmds(cmds):
    out = []
    for c in cmds:
        out += ['-c', c]
    return out


@pytest.mark.parametrize('kind', sorted(CREATE))
def test_create_readable_by_qemu(tmp_path, kind):
    fmt, o = CREATE[kind]
    mine, theirs = str(tmp_path / 'mine'), str(tmp_path / 'theirs')
    b = qimg('create', '--object', SECRET, '-f', fmt, '-o', o, mine, '4M')
    a = create_luks('--object', SECRET, '-f', fmt, '-o', o, theirs, '4M')
    assert a[0] == b[0] == 0, (a, b)
    assert b[1].replace(mine, theirs) == a[1]
    assert os.path.getsize(mine) == os.path.getsize(theirs)
    ia = json.loads(qemu_img('info', '--output=json', theirs)[1])['format-specific']
    ib = json.loads(qemu_img('info', '--output=json', mine)[1])['format-specific']
    enc_a = ia['data'].get('encrypt', ia['data'])
    enc_b = ib['data'].get('encrypt', ib['data'])
    for k in ('format', 'cipher-alg', 'cipher-mode', 'ivgen-alg', 'ivgen-hash-alg', 'hash-alg',
              'payload-offset'):
        assert enc_a.get(k) == enc_b.get(k), k
    if 'slots' in enc_a:
        assert [(s['active'], s['key-offset'], s.get('stripes')) for s in enc_a['slots']] == \
            [(s['active'], s['key-offset'], s.get('stripes')) for s in enc_b['slots']]
    # the real qemu-io unlocks it with the same secret and keeps the guest bytes
    r = qemu_io('--object', SECRET, '--image-opts', *io_cmds(WRITES + verify_for(kind)),
                spec_for(kind, mine))
    assert r[0] == 0 and 'fail' not in r[1], r
    r = qemu_io('--object', WRONG, '--image-opts', '-c', 'read 0 512', spec_for(kind, mine))
    if 'aes' not in kind:
        assert 'Invalid password, cannot unlock any keyslot' in r[2]
    if fmt == 'qcow2':
        r = qemu_img('check', '--object', SECRET, '--image-opts', spec_for(kind, mine))
        assert r[0] == 0 and 'No errors were found' in r[1], r


@pytest.mark.parametrize('kind', sorted(CREATE))
def test_qimg_writes_read_by_qemu(tmp_path, kind):
    fmt, o = CREATE[kind]
    mine, theirs = str(tmp_path / 'mine'), str(tmp_path / 'theirs')
    r = create_luks('--object', SECRET, '-f', fmt, '-o', o, mine, '4M')
    assert r[0] == 0, r
    shutil.copy(mine, theirs)
    r = qemu.run(QIMG_IO, '--object', SECRET, *io_cmds(WRITES),
                 'json:' + json.dumps({'driver': fmt, ('key-secret' if fmt == 'luks'
                                                        else 'encrypt.key-secret'): 'sec0',
                                       'file': {'driver': 'file', 'filename': mine}}))
    assert r[0] == 0, r
    r = qemu_io('--object', SECRET, '--image-opts', *io_cmds(WRITES), spec_for(kind, theirs))
    assert r[0] == 0, r
    r = qemu_io('--object', SECRET, '--image-opts', *io_cmds(verify_for(kind)), spec_for(kind, mine))
    assert r[0] == 0 and 'fail' not in r[1], r
    if fmt == 'qcow2':
        r = qemu_img('check', '--object', SECRET, '--image-opts', spec_for(kind, mine))
        assert r[0] == 0 and 'No errors were found' in r[1], r
        a = qemu_img('map', '--object', SECRET, '--output=json', '--image-opts',
                     spec_for(kind, theirs))
        b = qemu_img('map', '--object', SECRET, '--output=json', '--image-opts',
                     spec_for(kind, mine))
        assert a == b
    # same key, same writes, same allocation: qemu-io's file and qimg's are the same bytes
    with open(mine, 'rb') as f1, open(theirs, 'rb') as f2:
        assert f1.read() == f2.read()


@pytest.mark.parametrize('opts', [
    'key-secret=nosuch', '', 'key-secret=sec0,cipher-alg=foo', 'key-secret=sec0,hash-alg=md4',
])
def test_create_luks_errors(tmp_path, opts):
    mine, theirs = str(tmp_path / 'mine'), str(tmp_path / 'theirs')
    extra = ['-o', opts] if opts else []
    a = qemu_img('create', '--object', SECRET, '-f', 'luks', *extra, theirs, '1M')
    b = qimg('create', '--object', SECRET, '-f', 'luks', *extra, mine, '1M')
    assert a[0] == b[0] == 1
    assert b[1].replace(mine, theirs) == a[1]
    assert b[2].replace('qimg:', 'qemu-img:').replace(mine, theirs) == a[2]
    assert os.path.exists(mine) == os.path.exists(theirs)


@pytest.mark.parametrize('spec', ['help', 'secret,help'])
@pytest.mark.parametrize('cmd', ['info', 'map', 'check', 'measure'])
def test_object_help(tmp_path, spec, cmd):
    raw = str(tmp_path / 'r.raw')
    qemu_img('create', '-q', '-f', 'raw', raw, '1M')
    a = qemu_img(cmd, '--object', spec, raw)
    b = qimg(cmd, '--object', spec, raw)
    assert a[0] == b[0] == 0
    assert a[1] == b[1]


@pytest.mark.parametrize('cmd,rc', [('info', 1), ('map', 1), ('check', 1), ('compare', 2),
                                    ('measure', 1)])
def test_bad_object_exit_codes(tmp_path, cmd, rc):
    raw = str(tmp_path / 'r.raw')
    qemu_img('create', '-q', '-f', 'raw', raw, '1M')
    names = [raw, raw] if cmd == 'compare' else [raw]
    a = qemu_img(cmd, '--object', 'secret,id=x', *names)
    b = qimg(cmd, '--object', 'secret,id=x', *names)
    assert a[0] == b[0] == rc
    assert b[2].replace('qimg:', 'qemu-img:') == a[2]


@pytest.mark.parametrize('kind', ['luks', 'qcow2-luks', 'qcow2-aes'])
def test_resize_encrypted_as_qemu(tmp_path, kind):
    fmt, o = CREATE[kind]
    mine, theirs = str(tmp_path / 'mine'), str(tmp_path / 'theirs')
    r = create_luks('--object', SECRET, '-f', fmt, '-o', o, mine, '4M')
    assert r[0] == 0, r
    shutil.copy(mine, theirs)

    def name(path, secret='sec0'):
        key = 'key-secret' if fmt == 'luks' else 'encrypt.key-secret'
        return 'json:' + json.dumps({'driver': fmt, key: secret,
                                     'file': {'driver': 'file', 'filename': path}})
    for args in (['8M'], ['--shrink', '2M']):
        a = qemu_img('resize', '--object', SECRET, name(theirs), *args)
        b = qimg('resize', '--object', SECRET, name(mine), *args)
        assert a[0] == b[0] == 0 and a[1] == b[1], (a, b)
        with open(mine, 'rb') as f1, open(theirs, 'rb') as f2:
            assert f1.read() == f2.read()
    a = qemu_img('resize', '--object', SECRET, name(theirs, 'nosuch'), '3M')
    b = qimg('resize', '--object', SECRET, name(mine, 'nosuch'), '3M')
    assert a[0] == b[0] == 1
    assert b[2].replace('qimg:', 'qemu-img:').replace(mine, theirs) == a[2]


@pytest.mark.parametrize('prealloc', ['off', 'metadata', 'falloc', 'full', 'bogus'])
def test_create_luks_preallocation(tmp_path, prealloc):
    mine, theirs = str(tmp_path / 'mine'), str(tmp_path / 'theirs')
    o = 'key-secret=sec0,iter-time=10,preallocation=' + prealloc
    a = create_luks('--object', SECRET, '-f', 'luks', '-o', o, theirs, '1M')
    b = qimg('create', '--object', SECRET, '-f', 'luks', '-o', o, mine, '1M')
    assert a[0] == b[0]
    assert b[2].replace('qimg:', 'qemu-img:').replace(mine, theirs) == a[2]
    if a[0] == 0:
        assert os.path.getsize(mine) == os.path.getsize(theirs)
        # full and falloc allocate the payload, off and metadata leave it sparse
        assert (os.stat(mine).st_blocks > 4096) == (os.stat(theirs).st_blocks > 4096)
