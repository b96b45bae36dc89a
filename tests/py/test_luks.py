"""Encrypted images with --object secret: LUKS (raw luks and LUKS in qcow2) and qcow2's
legacy AES, made and written by real qemu-img/qemu-io, read by qimg (compare, map, info)
with the same secret: qemu-img's outputs, messages and exit codes."""

import json
import os

import pytest

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


@pytest.mark.parametrize('kind', ['luks', 'qcow2-luks', 'qcow2-aes'])
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
    for cmd in (['map'], ['compare', path]):
        a = qemu_img(*cmd[:1], '--object', WRONG, '--image-opts', opts(kind, path), *cmd[1:])
        b = qimg(*cmd[:1], '--object', WRONG, '--image-opts', opts(kind, path), *cmd[1:])
        assert a[0] == b[0] == 1
        assert 'Invalid password, cannot unlock any keyslot' in b[2]
        assert b[2].replace('qimg:', 'qemu-img:') == a[2]


@pytest.mark.parametrize('kind', ['luks', 'qcow2-luks', 'qcow2-aes'])
@pytest.mark.parametrize('case', ['no-secret-object', 'no-key-option', 'wrong-format'])
def test_missing_secret(tmp_path, kind, case):
    path = make(tmp_path, kind)
    if case == 'no-secret-object':
        args = ['--image-opts', opts(kind, path)]
    elif case == 'no-key-option':
        args = ['--object', SECRET, path]
    else:
        if KINDS[kind][0] != 'qcow2':
            pytest.skip('encrypt.format is a qcow2 option')
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
