"""qemu's null-co / null-aio protocol drivers (block/null.c), differential against the real
qemu-img 7.2: info and map of json:/plain null names (size, read-zeroes, the name qemu gives
the node), the option errors qemu reports, and convert from a null source (iotest 150: -S
512 leaves the target sparse, -S 0 writes it out), read back by the real qemu-img.
"""

import os

import pytest

import qemu

ENV = {'TZ': 'UTC'}


def assert_same(cwd, *args):
    a = qemu.run(qemu.tool_path('qemu'), *args, cwd=cwd, env=ENV)
    b = qemu.run(qemu.tool_path('qimg'), *args, cwd=cwd, env=ENV)
    assert b == a, 'qemu-img %s differs' % ' '.join(args)
    return a


NZ = "json:{ 'driver': 'null-co', 'size': 1048576, 'read-zeroes': true }"

NAMES = [
    NZ,
    "json:{ 'driver': 'null-co', 'size': 1048576}",
    "json:{ 'driver': 'null-aio', 'size': 1048576, 'read-zeroes': true}",
    "json:{'driver':'null-co'}",
    "json:{'driver':'null-co','read-zeroes':true}",
    "json:{'driver':'null-aio','latency-ns':5}",
    "json:{'driver':'null-co','size':1000}",
    "json:{'driver':'null-co','size':'1k'}",
    "json:{'driver':'raw','file':{'driver':'null-co','size':4096}}",
    "json:{'driver':'raw','file':{'driver':'null-co','size':65536,'read-zeroes':true}}",
    'null-co://',
    'null-aio://',
]


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('cmd', [('info',), ('info', '--output=json'), ('map',),
                                 ('map', '--output=json')])
def test_info_map(tmp_path, name, cmd):
    rc, out, err = assert_same(str(tmp_path), *cmd, name)
    assert rc == 0


BAD = [
    'null-co://x',
    "json:{'driver':'null-co','size':4096,'foo':1}",
    "json:{'driver':'null-co','size':4096,'filename':'null-co://'}",
]


@pytest.mark.parametrize('name', BAD)
def test_bad_names(tmp_path, name):
    rc, out, err = assert_same(str(tmp_path), 'info', name)
    assert rc == 1 and err


def test_format_over_null(tmp_path):
    rc, _, err = assert_same(str(tmp_path), 'info', '-f', 'qcow2', 'null-co://')
    assert rc == 1 and 'Image is not in qcow2 format' in err


def test_check_and_compare(tmp_path):
    d = str(tmp_path)
    rc, _, _ = assert_same(d, 'check', "json:{'driver':'null-co','size':4096}")
    assert rc == 63
    rc, out, _ = assert_same(d, 'compare', "json:{'driver':'null-co','size':4096,"
                             "'read-zeroes':true}", "json:{'driver':'null-aio','size':4096}")
    assert rc == 0 and out == 'Images are identical.\n'


@pytest.mark.parametrize('fmt', ['qcow2', 'raw'])
@pytest.mark.parametrize('sparse', ['512', '0'])
def test_convert_from_null(tmp_path, fmt, sparse):
    """iotest 150: the target made by qimg maps as the one made by qemu-img."""
    maps = []
    for tool in ('qemu', 'qimg'):
        dst = str(tmp_path / ('%s.%s' % (tool, fmt)))
        rc, _, err = qemu.run(qemu.tool_path(tool), 'convert', '-O', fmt, '-S', sparse, NZ,
                              dst, env=ENV)
        assert rc == 0, err
        rc, out, err = qemu.qemu_img('map', '--output=json', '-f', fmt, dst)
        assert rc == 0, err
        maps.append(out)
        rc, out, _ = qemu.qemu_img('compare', '-F', fmt, NZ, dst)
        assert rc == 0 and out == 'Images are identical.\n'
    assert maps[1] == maps[0]
    if sparse == '0':
        assert '"data": true' in maps[1]
