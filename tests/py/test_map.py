"""Differential tests for `map`: qimg vs real qemu-img 7.2, byte for byte.

Both tools run with cwd = the image directory and the same relative file
name; qimg runs through a symlink named `qemu-img` so message prefixes agree.
Images come from guest_images (healthy, varied) and from the injector
catalogue (corrupt metadata: map must fail the same way, never crash).
"""

import os

import pytest

import guest_images
import injector
import qemu
from conftest import case_params


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """name -> (dir, filename); each catalogue image is built once per module."""
    root = tmp_path_factory.mktemp('map-images')
    cache = {}

    def get(name):
        if name not in cache:
            d = str(root / name)
            cache[name] = (d, guest_images.build(name, d))
        return cache[name]
    return get


def both(d, *args):
    q = qemu.run(qemu.tool_path('qemu'), 'map', *args, cwd=d)
    i = qemu.run(qemu.tool_path('qimg'), 'map', *args, cwd=d)
    return q, i


def assert_same(q, i):
    assert i[1] == q[1], 'stdout differs\nqemu-img:\n%s\nqimg:\n%s' % (q[1], i[1])
    assert i[2] == q[2], 'stderr differs\nqemu-img:\n%s\nqimg:\n%s' % (q[2], i[2])
    assert i[0] == q[0], 'exit code: qemu-img %d, qimg %d' % (q[0], i[0])


@pytest.mark.parametrize('output', ['json', 'human'])
@pytest.mark.parametrize('name', guest_images.NAMES)
def test_map_catalogue(built, name, output):
    d, f = built(name)
    assert_same(*both(d, '--output=%s' % output, f))


@pytest.mark.parametrize('name', ['chain3', 'mixed-cs512', 'extl2-cs65536', 'data-file-raw',
                                  'l2-boundaries', 'raw-odd-size'])
@pytest.mark.parametrize('window', [('-s', '0', '-l', '0'), ('-s', '1000', '-l', '70000'),
                                    ('--start-offset=64k',), ('--max-length=100k',),
                                    ('-s', '0x30000', '-l', '1.5M'), ('-s', '100G'),
                                    ('-s', '7E', '-l', '7E'), ('-s', '1', '-l', '1')])
def test_map_window(built, name, window):
    d, f = built(name)
    for output in ('json', 'human'):
        assert_same(*both(d, '--output=%s' % output, *window, f))


def test_map_default_output_is_human(built):
    d, f = built('chain3')
    assert_same(*both(d, f))
    assert_same(*both(d, '-U', '-f', 'qcow2', f))


def test_map_absolute_names(built):
    """The File column shows names as opened (absolute here, and the backing
    files' names as resolved)."""
    d, f = built('chain-subdir')
    assert_same(*both(d, os.path.join(d, f)))
    d, f = built('chain3')
    assert_same(*both(d, os.path.join(d, f)))


def test_map_forced_raw_on_qcow2(built):
    d, f = built('mixed-64k')
    assert_same(*both(d, '-f', 'raw', '--output=json', f))
    assert_same(*both(d, '-f', 'raw', f))


@pytest.mark.parametrize('args', [
    (), ('a', 'b'), ('--output=xml', 'img.qcow2'), ('-x', 'img.qcow2'), ('-f',),
    ('-s', 'foo', 'img.qcow2'), ('-s', '-1', 'img.qcow2'), ('-l', '9E', 'img.qcow2'),
    ('-l', '1.5', 'img.qcow2'), ('-s', '1e3k', 'img.qcow2'), ('nonexistent.qcow2',),
    ('-f', 'nosuchfmt', 'img.qcow2'),
])
def test_map_errors(built, args):
    d, _ = built('empty')
    assert_same(*both(d, *args))


@pytest.mark.parametrize('case', case_params(injector.ALL))
def test_map_injector(case, image_factory):
    """Healthy and corrupt qcow2 images: same output, same failure."""
    d, f = image_factory(case)
    for output in ('json', 'human'):
        assert_same(*both(d, '--output=%s' % output, f))


def test_map_and_compare_respect_write_lock(built):
    d, f = built('mixed-64k')
    with qemu.held_open(f, cwd=d):
        q, i = both(d, f)
        assert q[0] == 1 and 'Failed to get shared "write" lock' in q[2]
        assert_same(q, i)
        assert_same(*both(d, '-U', f))
        q = qemu.run(qemu.tool_path('qemu'), 'compare', f, f, cwd=d)
        i = qemu.run(qemu.tool_path('qimg'), 'compare', f, f, cwd=d)
        assert_same(q, i)


def _spec_images(d):
    def img(*args):
        qemu.qemu_img(*args, cwd=d, check=True)
    img('create', '-q', '-f', 'qcow2', 'b.qcow2', '1M')
    img('create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', 'm.qcow2')
    img('create', '-q', '-f', 'qcow2', '-o', 'data_file=t.data', 'd.qcow2', '1M')
    qemu.io(os.path.join(d, 'd.qcow2'), 'write -P 0x11 0 64k', fmt='qcow2', cwd=d)
    os.rename(os.path.join(d, 't.data'), os.path.join(d, 'u.data'))
    # iotest 253: a raw file with an unaligned length and data at its end
    img('create', '-q', '-f', 'raw', 'r.raw', '1048575')
    qemu.io(os.path.join(d, 'r.raw'), 'write 983040 65535', fmt='raw', cwd=d)
    os.truncate(os.path.join(d, 'r.raw'), 1048575)


@pytest.mark.parametrize('args', [
    ['--output=json', '--image-opts',
     'driver=raw,file.driver=file,file.filename=r.raw,cache.direct=on'],
    ['--output=json', '--image-opts', 'driver=raw,file.filename=r.raw'],
    ['--output=json', '--image-opts', 'driver=raw,file.filename=b.qcow2,cache.direct=on'],
    ['--output=json', '--image-opts', 'driver=raw,file.filename=r.raw,cache.direct=x'],
    ['--output=json', 'json:{"driver":"qcow2","file.filename":"m.qcow2"}'],
    ['--image-opts', 'data-file.filename=u.data,file.filename=d.qcow2'],
    ['--image-opts', 'file.filename=d.qcow2'],
    ['-f', 'raw', '--image-opts', 'file.filename=b.qcow2'],
    ['--image-opts', 'b.qcow2'],
    ['json:{"driver":"qcow2"}'], ['json:{'], ['json:[1]'],
], ids=lambda a: ' '.join(a))
def test_map_image_opts_and_json(tmp_path, args):
    """--image-opts and json: names (iotests 253, 089): the file node's options qimg
    takes, cache.direct=on's request alignment in block status."""
    d = str(tmp_path)
    _spec_images(d)
    assert_same(*both(d, *args))


@pytest.mark.parametrize('args', [
    # iotest 204: a blkdebug filter on top, its limits do not change the map
    ['--image-opts', 'driver=blkdebug,image.driver=qcow2,image.file.driver=file,'
     'image.file.filename=m.qcow2,align=4k'],
    ['--output=json', "json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', "
     "'image': {'driver': 'file', 'filename': 'm.qcow2'}}}"],
    ['--image-opts', 'data-file.driver=blkdebug,data-file.image.filename=u.data,'
     'file.filename=d.qcow2'],
], ids=lambda a: ' '.join(a)[:60])
def test_map_through_blkdebug(tmp_path, args):
    d = str(tmp_path)
    _spec_images(d)
    assert_same(*both(d, *args))


def test_map_refuses_blkdebug_rules(tmp_path):
    """Rules of a blkdebug on the data file (no qimg driver announces events there) are
    refused rather than silently not injected."""
    d = str(tmp_path)
    _spec_images(d)
    name = ("json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': 'd.qcow2'}, "
            "'data-file': {'driver': 'blkdebug', 'inject-error': [{'event': 'read_aio', "
            "'errno': 5}], 'image': {'driver': 'file', 'filename': 'u.data'}}}")
    rc, out, err = qemu.run(qemu.tool_path('qimg'), 'map', name, cwd=d)
    assert rc == 1 and out == ''
    assert err == "qemu-img: Could not open '%s': blkdebug error injection is only " \
                  "supported on the image's file by qimg\n" % name


@pytest.mark.parametrize('args', [
    ['blkdebug::m.qcow2'], ['blkdebug:bd.conf:m.qcow2'], ['--output=json', 'blkdebug::m.qcow2'],
    ["json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', "
     "'image': {'driver': 'file', 'filename': 'b.qcow2'}}}"],
], ids=lambda a: ' '.join(a)[:50])
def test_map_blkdebug_names(tmp_path, args):
    """blkdebug:CONFIG:FILE names and a blkdebug file: map reads no guest data (block
    status only), and names the file as qemu does."""
    d = str(tmp_path)
    _spec_images(d)
    qemu.io(os.path.join(d, 'b.qcow2'), 'write 0 64k', fmt='qcow2', cwd=d)
    with open(os.path.join(d, 'bd.conf'), 'w') as f:
        f.write('[inject-error]\nevent = "read_aio"\nerrno = "5"\n')
    assert_same(*both(d, *args))


def test_map_refuses_unannounced_blkdebug_event(tmp_path):
    """A rule on an event no qimg driver announces would never fire: refused where guest
    I/O may happen (create's backing open and info accept it, see test_create)."""
    d = str(tmp_path)
    _spec_images(d)
    name = ("json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', 'inject-error': "
            "[{'event': 'write_aio', 'errno': 28}], 'image': {'driver': 'file', "
            "'filename': 'm.qcow2'}}}")
    rc, out, err = qemu.run(qemu.tool_path('qimg'), 'map', name, cwd=d)
    assert (rc, out) == (1, '')
    assert err == "qemu-img: Could not open '%s': blkdebug event 'write_aio' is not " \
                  "supported by qimg\n" % name
