"""qemu's image locking on read-only opens: qimg vs real qemu-img 7.2, byte for byte.

A qemu-io holds an image (or its backing file) open read-write, as a running VM would; then
info / map / compare / check without -r must fail as qemu-img does ('Failed to get shared
"write" lock' / 'Is another process using the image [F]?'), and succeed with -U. A read-only
holder, or a read-write holder of a raw image, does not get in the way. qimg runs through a
`qemu-img` symlink so message prefixes agree.
"""

import os

import pytest

import qemu

ENV = {'TZ': 'UTC'}


def both(d, *args):
    q = qemu.run(qemu.tool_path('qemu'), *args, cwd=d, env=ENV)
    i = qemu.run(qemu.tool_path('qimg'), *args, cwd=d, env=ENV)
    return q, i


def assert_same(d, *args):
    q, i = both(d, *args)
    assert i[1] == q[1], 'stdout differs for %s\nqemu-img:\n%s\nqimg:\n%s' % (args, q[1], i[1])
    assert i[2] == q[2], 'stderr differs for %s\nqemu-img:\n%s\nqimg:\n%s' % (args, q[2], i[2])
    assert i[0] == q[0], 'exit code for %s: qemu-img %d, qimg %d' % (args, q[0], i[0])
    return q


@pytest.fixture
def chain(tmp_path, qimg_binary):
    """base.qcow2 <- top.qcow2, and a raw image, with some data; returns the directory."""
    d = str(tmp_path)
    qemu.qemu_img('create', '-f', 'qcow2', 'base.qcow2', '1M', cwd=d, check=True)
    qemu.qemu_img('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', '1M',
                  cwd=d, check=True)
    qemu.qemu_img('create', '-f', 'raw', 'disk.raw', '1M', cwd=d, check=True)
    qemu.qemu_io('-f', 'qcow2', '-c', 'write -P 0x11 0 64k', 'base.qcow2', cwd=d, check=True)
    qemu.qemu_io('-f', 'qcow2', '-c', 'write -P 0x22 64k 64k', 'top.qcow2', cwd=d, check=True)
    return d


COMMANDS = [
    ('info', 'top.qcow2'),
    ('info', '--output=json', 'top.qcow2'),
    ('info', '--backing-chain', 'top.qcow2'),
    ('map', 'top.qcow2'),
    ('map', '--output=json', 'top.qcow2'),
    ('compare', 'top.qcow2', 'top.qcow2'),
    ('compare', 'base.qcow2', 'top.qcow2'),
    ('compare', 'top.qcow2', 'disk.raw'),
    ('compare', '-s', 'disk.raw', 'top.qcow2'),
    ('check', 'top.qcow2'),
    ('check', '-f', 'qcow2', 'base.qcow2'),
]


def _with_share(cmd):
    return (cmd[0], '-U') + cmd[1:]


@pytest.mark.parametrize('held', ['top.qcow2', 'base.qcow2'])
@pytest.mark.parametrize('share', [False, True], ids=['locked', 'U'])
@pytest.mark.parametrize('cmd', COMMANDS, ids=lambda c: '_'.join(c))
def test_read_only_open_vs_writer(chain, held, share, cmd):
    args = _with_share(cmd) if share else cmd
    with qemu.held_open(held, cwd=chain):
        q = assert_same(chain, *args)
    if share:
        assert 'lock' not in q[2]


def test_top_writer_message(chain):
    """The exact text and codes, pinned (qemu-img 7.2)."""
    msg = ("qemu-img: Could not open 'top.qcow2': Failed to get shared \"write\" lock\n"
           "Is another process using the image [top.qcow2]?\n")
    with qemu.held_open('top.qcow2', cwd=chain):
        for args, rc in ((('info', 'top.qcow2'), 1), (('map', 'top.qcow2'), 1),
                         (('check', 'top.qcow2'), 1), (('compare', 'top.qcow2', 'disk.raw'), 2)):
            q, i = both(chain, *args)
            assert (q[0], q[2]) == (rc, msg)
            assert i == q
            q, i = both(chain, *_with_share(args))
            assert 'lock' not in q[2] and q[0] != rc
            assert i == q


def test_backing_writer_message(chain):
    with qemu.held_open('base.qcow2', cwd=chain):
        q, i = both(chain, 'check', 'top.qcow2')
        assert q[2] == ("qemu-img: Could not open 'top.qcow2': Could not open backing file: "
                        "Failed to get shared \"write\" lock\n"
                        "Is another process using the image [base.qcow2]?\n")
        assert i == q
        # info opens no backing file
        q, i = both(chain, 'info', 'top.qcow2')
        assert q[0] == 0 and i == q


def test_backing_in_subdirectory(chain):
    sub = os.path.join(chain, 'sub')
    os.mkdir(sub)
    for f in ('base.qcow2', 'top.qcow2'):
        os.rename(os.path.join(chain, f), os.path.join(sub, f))
    with qemu.held_open('sub/base.qcow2', cwd=chain):
        for args in (('map', 'sub/top.qcow2'), ('check', 'sub/top.qcow2'),
                     ('compare', 'sub/top.qcow2', 'disk.raw')):
            assert_same(chain, *args)


@pytest.mark.parametrize('cmd', COMMANDS, ids=lambda c: '_'.join(c))
def test_read_only_holder_does_not_block(chain, cmd):
    with qemu.held_open('top.qcow2', read_only=True, cwd=chain):
        q = assert_same(chain, *cmd)
        assert 'lock' not in q[2]


@pytest.mark.parametrize('cmd', [('info', 'disk.raw'), ('map', '-f', 'raw', 'disk.raw'),
                                 ('compare', 'disk.raw', 'disk.raw'),
                                 ('compare', 'top.qcow2', 'disk.raw'),
                                 ('check', '-f', 'raw', 'disk.raw')], ids=lambda c: '_'.join(c))
def test_raw_writer_does_not_block(chain, cmd):
    """qemu's raw format shares write and resize, so a raw image being written stays readable."""
    with qemu.held_open('disk.raw', fmt='raw', cwd=chain):
        assert_same(chain, *cmd)


def test_repair_vs_backing_writer(chain):
    with qemu.held_open('base.qcow2', cwd=chain):
        assert_same(chain, 'check', '-r', 'leaks', 'top.qcow2')


@pytest.fixture
def data_file_pair(tmp_path, qimg_binary):
    """img.qcow2 and other.qcow2 sharing the external data file d.raw."""
    d = str(tmp_path)
    qemu.qemu_img('create', '-f', 'qcow2', '-o', 'data_file=d.raw', 'img.qcow2', '1M', cwd=d,
                  check=True)
    qemu.qemu_io('-f', 'qcow2', '-c', 'write -P 0x33 0 64k', 'img.qcow2', cwd=d, check=True)
    qemu.qemu_img('create', '-f', 'qcow2', '-o', 'data_file=d.raw', 'other.qcow2', '1M',
                  cwd=d, check=True)
    return d


DATA_FILE_COMMANDS = [
    ('check', 'img.qcow2'),
    ('check', '-U', 'img.qcow2'),
    ('check', '-r', 'leaks', 'img.qcow2'),
    ('map', '--output=json', 'img.qcow2'),
    ('compare', 'img.qcow2', 'img.qcow2'),
    ('info', 'img.qcow2'),
]


@pytest.mark.parametrize('cmd', DATA_FILE_COMMANDS, ids=' '.join)
def test_data_file_resize_holder(data_file_pair, cmd):
    """A read-write qemu on another image over the same data file holds its "resize"
    permission there; qemu keeps resizing of a data file unshared, so every command with
    I/O fails with 'Failed to get shared "resize" lock ... [d.raw]', -U and info do not."""
    d = data_file_pair
    with qemu.held_open('other.qcow2', cwd=d):
        q = assert_same(d, *cmd)
    if cmd[1] != '-U' and cmd[0] != 'info':
        assert q[0] != 0 and 'Failed to get shared "resize" lock' in q[2], q


def test_data_file_name_is_relative_to_cwd(tmp_path, qimg_binary):
    """qemu opens a data file name as given (relative to the working directory, not to
    the image like a backing file name); check, map and info agree from another directory."""
    d = str(tmp_path)
    os.mkdir(os.path.join(d, 'sub'))
    qemu.qemu_img('create', '-f', 'qcow2', '-o', 'data_file=d.raw', 'img.qcow2', '1M',
                  cwd=os.path.join(d, 'sub'), check=True)
    for cmd in (('check', 'sub/img.qcow2'), ('map', '--output=json', 'sub/img.qcow2'),
                ('info', 'sub/img.qcow2')):
        assert_same(d, *cmd)
