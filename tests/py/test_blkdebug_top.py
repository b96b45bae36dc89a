"""A blkdebug filter above the format layer (json: driver=blkdebug with an "image"),
differential against the real qemu-img 7.2: its inject-error rules with event "none" and an
iotype (read, block-status) fail the guest requests of convert --salvage as qemu's do (the
warnings per failed chunk, the zero-fill; iotest 251 in small), compare and map (which skips
the filter, as qemu's bdrv_skip_filters), and info names the node blkdebug:CONFIG:IMAGE
with format blkdebug.
"""

import os

import pytest

import qemu

ENV = {'TZ': 'UTC'}


def both(cwd, *args):
    a = qemu.run(qemu.tool_path('qemu'), *args, cwd=cwd, env=ENV)
    b = qemu.run(qemu.tool_path('qimg'), *args, cwd=cwd, env=ENV)
    return a, b


def assert_same(cwd, *args):
    a, b = both(cwd, *args)
    assert b == a, 'qemu-img %s differs' % ' '.join(args)
    return a


def source(fmt, path, rules):
    inj = ','.join("{'event': 'none', 'iotype': '%s', 'errno': 5, 'sector': %d}" % r
                   for r in rules)
    return ("json:{'driver': 'blkdebug', 'image': {'driver': '%s', 'file': "
            "{'driver': 'file', 'filename': '%s'}}, 'inject-error': [%s]}" % (fmt, path, inj))


@pytest.fixture(params=['qcow2', 'raw'])
def img(request, tmp_path):
    fmt = request.param
    p = str(tmp_path / ('src.' + fmt))
    qemu.qemu_img('create', '-q', '-f', fmt, p, '4M', check=True)
    qemu.io(p, 'write -P 42 0 3M', fmt=fmt)
    return fmt, p


RULES = [
    [('block-status', 2048 + 16), ('read', 4096 - 128), ('read', 4352)],
    [('block-status', 4097), ('read', 4097)] + [('read', 5120 + i) for i in range(4)],
    [('read', 0)],
]


@pytest.mark.parametrize('rules', RULES)
def test_convert_salvage(tmp_path, img, rules):
    fmt, p = img
    src = source(fmt, p, rules)
    outs = []
    for tool in ('qemu', 'qimg'):
        dst = str(tmp_path / ('%s.out' % tool))
        rc, out, err = qemu.run(qemu.tool_path(tool), 'convert', '--salvage', '-O', fmt, src,
                                dst, env=ENV)
        outs.append((rc, out, err.replace(dst, 'DST')))
        assert rc == 0, err
    assert outs[1] == outs[0]
    assert 'warning: error while reading offset' in outs[1][2]
    rc, out, _ = qemu.qemu_img('compare', '-f', fmt, '-F', fmt, str(tmp_path / 'qemu.out'),
                               str(tmp_path / 'qimg.out'))
    assert rc == 0 and out == 'Images are identical.\n'


def test_convert_without_salvage_fails(tmp_path, img):
    fmt, p = img
    src = source(fmt, p, [('read', 100)])
    res = []
    for tool in ('qemu', 'qimg'):
        dst = str(tmp_path / ('%s.out' % tool))
        rc, out, err = qemu.run(qemu.tool_path(tool), 'convert', '-O', fmt, src, dst, env=ENV)
        res.append((rc, err.replace(dst, 'DST')))
    assert res[1] == res[0] and res[1][0] == 1


def test_compare_and_map(tmp_path, img):
    fmt, p = img
    d = str(tmp_path)
    src = source(fmt, p, [('read', 8), ('block-status', 8)])
    rc, _, err = assert_same(d, 'compare', '-F', fmt, src, p)
    assert rc == 3 and 'Sector allocation test failed' in err
    rc, _, err = assert_same(d, 'compare', '-F', fmt, source(fmt, p, [('read', 8)]), p)
    assert rc == 4 and 'Input/output error' in err
    rc, out, _ = assert_same(d, 'map', '--output=json', src)
    assert rc == 0  # map looks through the filter


def test_info_names(tmp_path, img):
    fmt, p = img
    d = str(tmp_path)
    open(os.path.join(d, '42'), 'w').close()
    for name in ['json:{"driver": "blkdebug", "config": 42, "image.driver": "null-co"}',
                 'json:{"driver": "blkdebug", "image.driver": "null-co"}',
                 'json:{"driver": "blkdebug", "config": "42", "image": {"driver": "%s", '
                 '"file.filename": "%s"}}' % (fmt, p),
                 'json:{"driver": "blkdebug", "config": "42", "image.filename": "%s"}' % p,
                 # an image without a plain name: the filter is named by its options too
                 'json:{"driver": "blkdebug", "config": "42", "image": {"driver": "null-co", '
                 '"size": 512}}',
                 'json:{"driver": "blkdebug", "image": {"driver": "quorum", '
                 '"vote-threshold": 1, "children": [{"driver": "file", "filename": "%s"}]}}'
                 % p]:
        for extra in ([], ['--output=json']):
            rc, _, _ = assert_same(d, 'info', *extra, name)
            assert rc == 0


def test_bad_iotype(tmp_path, img):
    fmt, p = img
    rc, _, err = assert_same(str(tmp_path), 'info', source(fmt, p, [('bogus', 8)]))
    assert rc == 1
