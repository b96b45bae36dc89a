"""qemu's quorum driver (block/quorum.c) as qimg reads it, differential against the real
qemu-img 7.2: info of a format over a quorum of files and of the quorum node itself (its
json: name, disk size = the children's sum, a relative backing name that cannot be
resolved: iotest 110), the vote (vote-threshold, read-pattern fifo) as compare sees it, the
children's length check, and qemu's option errors.
"""

import os
import shutil

import pytest

import qemu

ENV = {'TZ': 'UTC'}


def assert_same(cwd, *args):
    a = qemu.run(qemu.tool_path('qemu'), *args, cwd=cwd, env=ENV)
    b = qemu.run(qemu.tool_path('qimg'), *args, cwd=cwd, env=ENV)
    assert b == a, 'qemu-img %s differs' % ' '.join(args)
    return a


def quorum(children, threshold=None, fmt='qcow2', extra=''):
    ch = ','.join("{'driver':'file','filename':'%s'}" % c for c in children)
    t = '' if threshold is None else "'vote-threshold':%s," % threshold
    node = "{'driver':'quorum',%s%s'children':[%s]}" % (t, extra, ch)
    return "json:{'driver':'%s','file':%s}" % (fmt, node) if fmt else 'json:' + node


@pytest.fixture
def d(tmp_path):
    d = str(tmp_path)
    img = lambda *a: qemu.qemu_img(*a, cwd=d, check=True)
    img('create', '-q', '-f', 'qcow2', 'b.qcow2', '1M')
    qemu.io(os.path.join(d, 'b.qcow2'), 'write -P 5 0 128k')
    shutil.copy(os.path.join(d, 'b.qcow2'), os.path.join(d, 'b.copy'))
    shutil.copy(os.path.join(d, 'b.qcow2'), os.path.join(d, 'b.bad'))
    qemu.io(os.path.join(d, 'b.bad'), 'write -P 6 64k 4k')
    img('create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', 't.qcow2')
    shutil.copy(os.path.join(d, 't.qcow2'), os.path.join(d, 't.copy'))
    return d


@pytest.mark.parametrize('out', [[], ['--output=json']])
@pytest.mark.parametrize('name', [
    quorum(['t.qcow2', 't.copy'], 1),
    quorum(['t.qcow2', 't.copy'], 1, fmt=None),
    quorum(['t.qcow2'], 1, extra="'read-pattern':'fifo',"),
    quorum(['b.qcow2', 'b.copy'], 2),
    quorum(['b.qcow2', 'b.copy', 'b.bad'], 2),
])
def test_info(d, name, out):
    rc, _, _ = assert_same(d, 'info', *out, name)
    assert rc == 0


@pytest.mark.parametrize('name', [
    quorum(['t.qcow2', 't.copy'], 1),                     # relative backing name
    quorum(['b.qcow2', 'b.copy'], 2),
    quorum(['b.qcow2', 'b.copy', 'b.bad'], 2),           # the bad child outvoted
    quorum(['b.qcow2', 'b.copy', 'b.bad'], 3),           # no quorum: EIO
    quorum(['b.bad', 'b.qcow2'], 1),                      # a tie: qemu's pick
    quorum(['b.bad', 'b.qcow2'], 1, extra="'read-pattern':'fifo',"),
])
def test_compare(d, name):
    assert_same(d, 'compare', name, 'b.qcow2')


@pytest.mark.parametrize('name', [
    quorum([], 1),
    quorum(['t.qcow2'], None),
    quorum(['t.qcow2'], 2),
    quorum(['t.qcow2'], "'x'"),
    quorum(['t.qcow2'], 1, extra="'read-pattern':'bad',"),
    quorum(['t.qcow2'], 1, extra="'foo':1,"),
    quorum(['nonexist'], 1),
    quorum(['t.qcow2', 'b.qcow2'], 1),                    # lengths differ
    "json:{'driver':'qcow2','file':{'driver':'quorum','vote-threshold':1,'children':['x']}}",
    "json:{'driver':'qcow2','file':{'driver':'quorum','vote-threshold':1,"
    "'children':[{'filename':'t.qcow2'}]}}",
    "json:{'driver':'quorum','vote-threshold':1,'children':{'1':{'driver':'file',"
    "'filename':'t.qcow2'}}}",
    "json:{'driver':'quorum','vote-threshold':1,'children':[null]}",
    "json:{'driver':'quorum','vote-threshold':1,'children':[{}]}",
    "json:{'driver':'quorum','vote-threshold':1,'children':7}",
])
def test_errors(d, name):
    rc, _, err = assert_same(d, 'info', name)
    assert rc == 1 and err
