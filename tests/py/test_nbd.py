"""NBD images, differential against the real qemu-img 7.2: a real qemu-nbd (qemu-utils)
serves images on Unix sockets in a tmp dir and on loopback TCP ports, and qimg and
qemu-img run the same command on the same name; stdout, stderr and the exit code must be
equal (qimg runs through a symlink named qemu-img so message prefixes agree).

Covered: every NBD name form (nbd://HOST:PORT/EXP, nbd+unix:///EXP?socket=P, nbd:unix:P,
nbd:HOST:PORT:exportname=E, --image-opts driver=nbd / file.driver=nbd, json:), info, map
(base:allocation, x-dirty-bitmap=qemu:allocation-depth and qemu:dirty-bitmap:NAME with
qemu-nbd --allocation-depth -B), compare, check, a format on top of the export (-f qcow2,
probing), writes over NBD (rebase into an exported qcow2: the same bytes as qemu-img's),
and the failures: unreachable servers, missing exports and bitmaps, malformed names and
options, and a server that never answers (bounded connect time).
"""

import os
import signal
import socket
import subprocess
import time

import pytest

import qemu

ENV = {'TZ': 'UTC'}
QEMU_NBD = os.environ.get('QEMU_NBD', '/usr/bin/qemu-nbd')


def both(cwd, *args, env=None):
    e = dict(ENV, **(env or {}))
    a = qemu.run(qemu.tool_path('qemu'), *args, cwd=cwd, env=e)
    b = qemu.run(qemu.tool_path('qimg'), *args, cwd=cwd, env=e)
    return a, b


def assert_same(cwd, *args):
    a, b = both(cwd, *args)
    if 'check' in args and '--output=json' in args and a[0] == b[0] and a[1] and b[1]:
        # qimg's check report adds its own fields ("findings"): compare qemu's ImageCheck
        a = (a[0], qemu.qemu_part(qemu.parse_json(a[1])), a[2])
        b = (b[0], qemu.qemu_part(qemu.parse_json(b[1])), b[2])
    assert b == a, 'qemu-img %s differs' % ' '.join(args)
    return a


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """qemu-nbd serving img (persistent, forked once its socket listens)."""

    def __init__(self, d, img, fmt, export='exp', extra=(), tcp=False):
        self.n = len([f for f in os.listdir(d) if f.endswith('.pid')])
        pidf = os.path.join(d, 'nbd%d.pid' % self.n)
        args = [QEMU_NBD, '--fork', '--pid-file', pidf, '-t', '-f', fmt, '-x', export]
        if tcp:
            self.port = free_port()
            args += ['-b', '127.0.0.1', '-p', str(self.port)]
        else:
            self.sock = os.path.join(d, 's%d' % self.n)
            args += ['-k', self.sock]
        args += list(extra) + [img]
        subprocess.run(args, check=True, cwd=d, timeout=30, stdin=subprocess.DEVNULL)
        with open(pidf) as f:
            self.pid = int(f.read())
        self.export = export

    def uri(self):
        if hasattr(self, 'sock'):
            return 'nbd+unix:///%s?socket=%s' % (self.export, self.sock)
        return 'nbd://127.0.0.1:%d/%s' % (self.port, self.export)

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture
def d(tmp_path):
    """t.qcow2 over b.qcow2 (data in both, a zero cluster, bitmap b0 over a later write),
    r.raw with data and a hole, c.qcow2 (a copy of t's content, flattened)."""
    d = str(tmp_path)
    img = lambda *a: qemu.qemu_img(*a, cwd=d, check=True)
    img('create', '-q', '-f', 'qcow2', 'b.qcow2', '1M')
    qemu.io(os.path.join(d, 'b.qcow2'), 'write -P 5 0 192k', cwd=d)
    img('create', '-q', '-f', 'qcow2', '-b', os.path.join(d, 'b.qcow2'), '-F', 'qcow2',
        't.qcow2')
    qemu.io(os.path.join(d, 't.qcow2'), 'write -P 6 64k 64k', 'write -z 256k 64k', cwd=d)
    img('bitmap', '--add', 't.qcow2', 'b0')
    qemu.io(os.path.join(d, 't.qcow2'), 'write -P 7 512k 64k', cwd=d)
    img('create', '-q', '-f', 'raw', 'r.raw', '1M')
    qemu.io(os.path.join(d, 'r.raw'), 'write -P 3 4k 60k', fmt='raw', cwd=d)
    img('convert', '-O', 'qcow2', 't.qcow2', 'c.qcow2')
    servers = []
    yield d, servers
    for s in servers:
        s.stop()


def serve(dd, *a, **kw):
    d, servers = dd
    s = Server(d, *a, **kw)
    servers.append(s)
    return s


# -- names and info ------------------------------------------------------------------------

NAME_FORMS = ['uri', 'legacy', 'opts-nbd', 'opts-file', 'json-nbd', 'json-file']


def names(s, form):
    """(args...) naming server s's export in the given form."""
    unix = hasattr(s, 'sock')
    if unix:
        srv = {'type': 'unix', 'path': s.sock}
        kv = 'server.type=unix,server.path=%s' % s.sock
        legacy = 'nbd:unix:%s:exportname=%s' % (s.sock, s.export)
    else:
        srv = {'type': 'inet', 'host': '127.0.0.1', 'port': str(s.port)}
        kv = 'server.type=inet,server.host=127.0.0.1,server.port=%d' % s.port
        legacy = 'nbd:127.0.0.1:%d:exportname=%s' % (s.port, s.export)
    import json
    if form == 'uri':
        return [s.uri()]
    if form == 'legacy':
        return [legacy]
    if form == 'opts-nbd':
        return ['--image-opts', 'driver=nbd,%s,export=%s' % (kv, s.export)]
    if form == 'opts-file':
        return ['--image-opts', 'driver=qcow2,' + ','.join(
            'file.' + p for p in ('driver=nbd,%s,export=%s' % (kv, s.export)).split(','))]
    if form == 'json-nbd':
        return ['json:' + json.dumps({'driver': 'nbd', 'server': srv, 'export': s.export})]
    if form == 'json-file':
        return ['json:' + json.dumps({'driver': 'qcow2', 'file': {
            'driver': 'nbd', 'server': srv, 'export': s.export}})]
    raise ValueError(form)


@pytest.mark.parametrize('tcp', [False, True], ids=['unix', 'tcp'])
@pytest.mark.parametrize('form', NAME_FORMS)
def test_info_name_forms(d, form, tcp):
    # a qcow2 file exported as raw bytes: the client probes (or is told) qcow2
    s = serve(d, os.path.join(d[0], 'c.qcow2'), 'raw', extra=['-r'], tcp=tcp)
    for out in ([], ['--output=json']):
        assert_same(d[0], 'info', *out, *names(s, form))


@pytest.mark.parametrize('tcp', [False, True], ids=['unix', 'tcp'])
def test_info_exported_format(d, tcp):
    # qemu-nbd -f qcow2 exports the guest view: the client sees (and probes) raw
    s = serve(d, os.path.join(d[0], 't.qcow2'), 'qcow2', extra=['-r'], tcp=tcp)
    assert_same(d[0], 'info', s.uri())
    assert_same(d[0], 'info', '--output=json', s.uri())
    assert_same(d[0], 'info', '-f', 'raw', s.uri())
    assert_same(d[0], 'info', '--image-opts', 'driver=raw,file.driver=nbd,' +
                ('file.server.type=unix,file.server.path=%s' % s.sock if not tcp else
                 'file.server.type=inet,file.server.host=127.0.0.1,file.server.port=%d'
                 % s.port) + ',file.export=exp')


def test_info_default_export(d):
    s = serve(d, os.path.join(d[0], 'r.raw'), 'raw', export='', extra=['-r'])
    assert_same(d[0], 'info', 'nbd:unix:%s' % s.sock)
    assert_same(d[0], 'info', 'nbd+unix://?socket=%s' % s.sock)
    t = serve(d, os.path.join(d[0], 'r.raw'), 'raw', export='', extra=['-r'], tcp=True)
    assert_same(d[0], 'info', 'nbd://127.0.0.1:%d' % t.port)
    assert_same(d[0], 'info', 'nbd:127.0.0.1:%d' % t.port)


# -- map -----------------------------------------------------------------------------------

@pytest.mark.parametrize('out', ['human', 'json'])
def test_map_format_over_nbd(d, out):
    s = serve(d, os.path.join(d[0], 'c.qcow2'), 'raw', extra=['-r'])
    assert_same(d[0], 'map', '--output=' + out, s.uri())
    assert_same(d[0], 'map', '--output=' + out, '-f', 'qcow2', s.uri())
    assert_same(d[0], 'map', '--output=' + out, '-f', 'raw', s.uri())
    assert_same(d[0], 'map', '--output=' + out, *names(s, 'opts-file'))


@pytest.mark.parametrize('out', ['human', 'json'])
def test_map_raw_export(d, out):
    s = serve(d, os.path.join(d[0], 'r.raw'), 'raw', extra=['-r'])
    assert_same(d[0], 'map', '--output=' + out, s.uri())


@pytest.mark.parametrize('ctx', [None, 'qemu:allocation-depth', 'qemu:dirty-bitmap:b0'])
@pytest.mark.parametrize('node', ['nbd', 'raw'])
def test_map_contexts(d, ctx, node):
    # qemu-nbd --allocation-depth -B b0: map reads the context x-dirty-bitmap names as if
    # it were base:allocation (the iotest nbd-qemu-allocation's trick)
    s = serve(d, os.path.join(d[0], 't.qcow2'), 'qcow2',
              extra=['-r', '--allocation-depth', '-B', 'b0'])
    p = '' if node == 'nbd' else 'file.'
    o = ('driver=%s,%sdriver=nbd,%sserver.type=unix,%sserver.path=%s,%sexport=exp'
         % (node, p, p, p, s.sock, p)) if node == 'raw' else \
        'driver=nbd,server.type=unix,server.path=%s,export=exp' % s.sock
    if ctx:
        o += ',%sx-dirty-bitmap=%s' % (p, ctx)
    for out in ('human', 'json'):
        assert_same(d[0], 'map', '--output=' + out, '--image-opts', o)


def test_map_missing_bitmap(d):
    s = serve(d, os.path.join(d[0], 't.qcow2'), 'qcow2', extra=['-r', '-B', 'b0'])
    rc = assert_same(d[0], 'map', '--image-opts',
                     'driver=nbd,server.type=unix,server.path=%s,export=exp,'
                     'x-dirty-bitmap=qemu:dirty-bitmap:nope' % s.sock)[0]
    assert rc == 1


def test_map_no_block_status(d):
    # without --allocation-depth the server has no qemu:allocation-depth: qemu fails
    s = serve(d, os.path.join(d[0], 't.qcow2'), 'qcow2', extra=['-r'])
    assert_same(d[0], 'map', '--image-opts',
                'driver=nbd,server.type=unix,server.path=%s,export=exp,'
                'x-dirty-bitmap=qemu:allocation-depth' % s.sock)


@pytest.mark.parametrize('relative', [True, False], ids=['relative', 'absolute'])
def test_backing_chain_over_nbd(d, relative):
    """An exported overlay whose backing name is relative: NBD has no directory, so qemu's
    "Cannot generate a base directory for NBD nodes" (info: "cannot determine actual path");
    an absolute backing name opens from the local file system."""
    dd = d[0]
    b = 'b.qcow2' if relative else os.path.join(dd, 'b.qcow2')
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-b', b, '-F', 'qcow2', 'o.qcow2', cwd=dd,
                  check=True)
    qemu.io(os.path.join(dd, 'o.qcow2'), 'write -P 8 32k 64k', cwd=dd)
    s = serve(d, os.path.join(dd, 'o.qcow2'), 'raw', extra=['-r'])
    for args in (['info'], ['info', '--output=json'], ['info', '--backing-chain'],
                 ['map'], ['map', '--output=json'], ['check'], ['check', '--output=json'],
                 ['measure', '-O', 'qcow2'], ['compare', '-U', 'o.qcow2']):
        if args[0] == 'compare':
            assert_same(dd, 'compare', s.uri(), *args[1:])
        else:
            assert_same(dd, *args, s.uri())
    # backing options name the file: the chain opens either way
    o = ('driver=qcow2,file.driver=nbd,file.server.type=unix,file.server.path=%s,'
         'file.export=exp,backing.file.filename=%s' % (s.sock, os.path.join(dd, 'b.qcow2')))
    assert_same(dd, 'info', '--image-opts', o)
    assert_same(dd, 'map', '--output=json', '--image-opts', o)


# -- compare and check ---------------------------------------------------------------------

def test_compare(d):
    dd = d[0]
    s = serve(d, os.path.join(dd, 't.qcow2'), 'qcow2', extra=['-r'])
    c = serve(d, os.path.join(dd, 'c.qcow2'), 'raw', extra=['-r'])
    r = serve(d, os.path.join(dd, 'r.raw'), 'raw', extra=['-r'], tcp=True)
    assert assert_same(dd, 'compare', '-U', s.uri(), 'c.qcow2')[0] == 0
    assert assert_same(dd, 'compare', s.uri(), c.uri())[0] == 0
    # strict: t's zero cluster is unallocated in the converted copy
    assert assert_same(dd, 'compare', '-s', s.uri(), c.uri())[0] == 1
    assert assert_same(dd, 'compare', '-s', '-U', 'c.qcow2', c.uri())[0] == 0
    assert assert_same(dd, 'compare', '-F', 'qcow2', s.uri(), c.uri())[0] == 0
    assert assert_same(dd, 'compare', s.uri(), r.uri())[0] == 1
    assert assert_same(dd, 'compare', '-U', 'r.raw', r.uri())[0] == 0


def test_check(d):
    dd = d[0]
    c = serve(d, os.path.join(dd, 'c.qcow2'), 'raw', extra=['-r'])
    s = serve(d, os.path.join(dd, 't.qcow2'), 'qcow2', extra=['-r'])
    for form in NAME_FORMS:
        if form in ('opts-nbd', 'json-nbd'):
            continue  # the nbd node itself: "does not support checks"
        assert assert_same(dd, 'check', *names(c, form))[0] == 0
        assert_same(dd, 'check', '--output=json', *names(c, form))
    assert assert_same(dd, 'check', s.uri())[0] == 63
    assert assert_same(dd, 'check', *names(c, 'opts-nbd'))[0] == 63
    assert assert_same(dd, 'check', '-f', 'raw', c.uri())[0] == 63


def test_check_leaks_over_nbd(d):
    # a leaked cluster (refcount 1, unreferenced) found through the export: exit 3
    dd = d[0]
    qemu.qemu_img('create', '-q', '-f', 'qcow2', 'l.qcow2', '1M', cwd=dd, check=True)
    qemu.io(os.path.join(dd, 'l.qcow2'), 'write -P 1 0 64k', cwd=dd)
    size = os.path.getsize(os.path.join(dd, 'l.qcow2'))
    # the header's refcount table: bump the refcount of a cluster past the end
    rc, out, _ = qemu.qemu_img('check', '--output=json', 'l.qcow2', cwd=dd)
    import struct
    with open(os.path.join(dd, 'l.qcow2'), 'r+b') as f:
        f.seek(48)
        rt_off = struct.unpack('>Q', f.read(8))[0]
        f.seek(rt_off)
        rb_off = struct.unpack('>Q', f.read(8))[0]
        f.seek(rb_off + 2 * (size // 65536))
        f.write(struct.pack('>H', 1))
        f.truncate(size + 65536)
    s = serve(d, os.path.join(dd, 'l.qcow2'), 'raw', extra=['-r'])
    assert assert_same(dd, 'check', s.uri())[0] == 3
    assert_same(dd, 'check', '--output=json', s.uri())


# -- writes --------------------------------------------------------------------------------

def test_rebase_writes_over_nbd(d):
    """rebase -b '' copies the backing data into an exported qcow2: the file qimg leaves is
    byte for byte the one qemu-img leaves."""
    dd = d[0]
    files = {}
    for tool in ('qemu', 'qimg'):
        f = os.path.join(dd, 'w-%s.qcow2' % tool)
        qemu.qemu_img('create', '-q', '-f', 'qcow2', '-b', os.path.join(dd, 'b.qcow2'),
                      '-F', 'qcow2', f, cwd=dd, check=True)
        qemu.io(f, 'write -P 6 64k 64k', cwd=dd)
        os.truncate(f, 4 << 20)  # an export cannot grow: room for the new clusters
        s = serve(d, f, 'raw', export='w')
        r = qemu.run(qemu.tool_path(tool), 'rebase', '-b', '', s.uri(), cwd=dd, env=ENV)
        assert r[0] == 0, r
        s.stop()
        time.sleep(0.2)
        with open(f, 'rb') as fh:
            files[tool] = fh.read()
    assert files['qimg'] == files['qemu']


def test_write_past_export_end(d):
    # a qcow2 export that would have to grow: qemu's error (EINVAL) and exit code
    dd = d[0]
    res = []
    for tool in ('qemu', 'qimg'):
        f = os.path.join(dd, 'g-%s.qcow2' % tool)
        qemu.qemu_img('create', '-q', '-f', 'qcow2', '-b', os.path.join(dd, 'b.qcow2'),
                      '-F', 'qcow2', f, cwd=dd, check=True)
        s = serve(d, f, 'raw', export='g')
        res.append(qemu.run(qemu.tool_path(tool), 'rebase', '-b', '', s.uri(), cwd=dd,
                            env=ENV))
        s.stop()
    assert res[1] == res[0]
    assert res[0][0] == 1


def test_commit_into_nbd_backing(d):
    """commit of a local overlay whose backing file is an exported qcow2: the base file is
    byte for byte qemu-img's."""
    dd = d[0]
    files = {}
    for tool in ('qemu', 'qimg'):
        f = os.path.join(dd, 'cb-%s.qcow2' % tool)
        qemu.qemu_img('create', '-q', '-f', 'qcow2', f, '1M', cwd=dd, check=True)
        qemu.io(f, 'write -P 1 0 64k', cwd=dd)
        os.truncate(f, 4 << 20)
        s = serve(d, f, 'raw', export='b')
        t = os.path.join(dd, 'ct-%s.qcow2' % tool)
        qemu.qemu_img('create', '-q', '-f', 'qcow2', '-u', '-b', s.uri(), '-F', 'qcow2', t,
                      '1M', cwd=dd, check=True)
        qemu.io(t, 'write -P 9 128k 64k', cwd=dd)
        r = qemu.run(qemu.tool_path(tool), 'commit', t, cwd=dd, env=ENV)
        assert r == (0, 'Image committed.\n', '')
        s.stop()
        time.sleep(0.2)
        with open(f, 'rb') as fh:
            files[tool] = fh.read()
    assert files['qimg'] == files['qemu']


def test_write_to_read_only_export(d):
    s = serve(d, os.path.join(d[0], 'c.qcow2'), 'raw', extra=['-r'])
    assert assert_same(d[0], 'rebase', '-u', '-b', 'x', '-F', 'raw', s.uri())[0] == 1
    assert assert_same(d[0], 'resize', '-f', 'raw', s.uri(), '1M')[0] == 1
    assert assert_same(d[0], 'commit', s.uri())[0] == 1


def test_resize_nbd(d):
    s = serve(d, os.path.join(d[0], 'r.raw'), 'raw')
    assert assert_same(d[0], 'resize', '-f', 'raw', s.uri(), '2M')[0] == 1
    assert assert_same(d[0], 'resize', s.uri(), '--', '-512')[0] == 1
    assert assert_same(d[0], 'resize', '-f', 'raw', '--shrink', s.uri(), '1M')[0] == 0


# -- failures ------------------------------------------------------------------------------

BAD_NAMES = [
    'nbd+unix:///exp?socket={d}/nope',
    'nbd:unix:{d}/nope',
    'nbd://127.0.0.1:{port}/exp',
    'nbd:127.0.0.1:{port}:exportname=exp',
    'nbd://127.0.0.1:{port}',
    'nbd+tcp://127.0.0.1:{port}/exp',
    'nbd:',
    'nbd:localhost',
    'nbd:unix:{d}/nope:exportname=',
    'nbd+unix:///exp',
    'nbd+unix://host/exp?socket=/x',
    'nbd+unix:///exp?socket=/x&y=1',
    'nbd://127.0.0.1:{port}/exp?socket=/x',
    'nbd:///exp',
    'nbd+rdma://h/x',
    'nbd://h:99999999/e',
    'nbd://h:x/e',
    'nbd+unix:///e?sock=/s',
    'nbd://[::1]:{port}/e',
    'nbd://127.0.0.1:{port}/a%2fb',
    'nbd+unix:///e?socket=',
    'nbd:unix:',
    'nbd:[::1]:{port}',
]


@pytest.mark.parametrize('i', range(len(BAD_NAMES)))
@pytest.mark.parametrize('cmd', ['info', 'map', 'check'])
def test_bad_or_unreachable(d, cmd, i):
    name = BAD_NAMES[i].format(d=d[0], port=free_port())
    assert assert_same(d[0], cmd, name)[0] == 1


BAD_OPTS = [
    'driver=nbd',
    'driver=nbd,server.path=/x',
    'driver=nbd,server.type=unix',
    'driver=nbd,server.type=inet,server.host=127.0.0.1',
    'driver=nbd,server.type=inet,server.port=1',
    'driver=nbd,server.type=unix,server.path={sock},export=nope',
    'driver=nbd,server.type=unix,server.path={sock},export=exp,foo=1',
    'driver=qcow2,file.driver=nbd,file.server.type=unix,file.server.path={sock},'
    'file.export=exp,file.bar=1',
    'driver=nbd,server.type=unix,server.path={d}/nope,export=exp',
    'driver=nbd,path={sock},export=exp',
    'driver=nbd,host=127.0.0.1,port={port},export=exp',
]


@pytest.mark.parametrize('i', range(len(BAD_OPTS)))
def test_bad_options(d, i):
    s = serve(d, os.path.join(d[0], 'c.qcow2'), 'raw', extra=['-r'])
    o = BAD_OPTS[i].format(d=d[0], sock=s.sock, port=free_port())
    assert_same(d[0], 'info', '--image-opts', o)
    assert_same(d[0], 'map', '--image-opts', o)


def test_compare_unreachable(d):
    assert assert_same(d[0], 'compare', 'nbd+unix:///exp?socket=%s/nope' % d[0],
                       'nbd:unix:%s/nope2' % d[0])[0] == 2


def test_connect_time_is_bounded(d):
    """A server that accepts and never answers: qemu-img waits forever; qimg gives up after
    QIMG_NBD_CONNECT_TIMEOUT seconds with qemu's connect message and exit 1."""
    sock = os.path.join(d[0], 'mute')
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock)
    srv.listen(1)
    try:
        t0 = time.monotonic()
        rc, out, err = qemu.run(qemu.tool_path('qimg'), 'info',
                                'nbd+unix:///exp?socket=%s' % sock,
                                env={'QIMG_NBD_CONNECT_TIMEOUT': '1'}, timeout=30)
        assert time.monotonic() - t0 < 15
        assert rc == 1
        assert out == ''
        assert err == ("qemu-img: Could not open 'nbd+unix:///exp?socket=%s': Failed to "
                       "connect to '%s': Connection timed out\n" % (sock, sock))
    finally:
        srv.close()


@pytest.mark.parametrize('name', [
    'json:{"driver": "nbd", "host": -1}',           # iotest 162
    'nbd://no-such-host.invalid:10809/x',
    'json:{"driver": "nbd", "server": {"type": "inet", "host": "localhost", "port": "x"}}',
])
def test_unresolvable_address(tmp_path, name):
    """qemu resolves the address before it connects: 'address resolution failed for H:P'."""
    rc, _, err = assert_same(str(tmp_path), 'info', name)
    assert rc == 1 and err


# -- convert creating its target on an export (iotest 302) --------------------------------

def _export_bytes_per_tool(d, argv, compare=False):
    """Each tool runs argv(URI) against its own export of the same random 4 MiB; returns the
    exports' bytes afterwards (qemu's, qimg's). compare: the export also compares equal to
    t.qcow2 (checked by both tools)."""
    dd, _ = d
    fill = os.urandom(4 << 20)
    results = []
    for tool in ('qemu', 'qimg'):
        path = os.path.join(dd, 'exp-%s.raw' % tool)
        with open(path, 'wb') as f:
            f.write(fill)
        s = serve(d, path, 'raw')
        r = qemu.run(qemu.tool_path(tool), *argv(s.uri()), cwd=dd, env=ENV)
        assert r[0] == 0, r
        if compare:
            assert_same(dd, 'compare', 't.qcow2', s.uri())
        s.stop()
        results.append(open(path, 'rb').read())
    return results


@pytest.mark.parametrize('fmt,extra', [('qcow2', []), ('qcow2', ['-c']), ('raw', [])])
def test_convert_creates_target_on_export(d, fmt, extra):
    """qemu's bdrv_co_create_opts_simple: the export's first sector zeroed, the format
    written through it, the rest of the export as it was: the same bytes as qemu-img's."""
    results = _export_bytes_per_tool(
        d, lambda uri: ['convert', *extra, '-O', fmt, 't.qcow2', uri], compare=True)
    assert results[0] == results[1]


@pytest.mark.parametrize('case', ['unreachable', 'qed', 'raw-prealloc'])
def test_convert_create_on_export_errors(d, case):
    dd, _ = d
    path = os.path.join(dd, 'exp.raw')
    with open(path, 'wb') as f:
        f.write(bytes(4 << 20))
    s = serve(d, path, 'raw')
    args = {
        'unreachable': ['-O', 'qcow2', 't.qcow2',
                        'nbd+unix:///exp?socket=' + os.path.join(dd, 'nosock')],
        'qed': ['-O', 'qed', 't.qcow2', s.uri()],
        'raw-prealloc': ['-O', 'raw', '-o', 'preallocation=full', 't.qcow2', s.uri()],
    }[case]
    a = assert_same(dd, 'convert', *args)
    assert a[0] == 1


@pytest.mark.parametrize('fmt', ['raw', 'qcow2'])
def test_dd_creates_target_on_export(d, fmt):
    results = _export_bytes_per_tool(
        d, lambda uri: ['dd', '-O', fmt, 'if=t.qcow2', 'of=' + uri, 'bs=64k'])
    assert results[0] == results[1]
