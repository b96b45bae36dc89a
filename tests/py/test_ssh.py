"""The ssh protocol driver, differential against the real qemu-img 7.2 with qemu's own ssh
module (block-ssh.so of Debian's qemu-block-extra, unpacked by
scripts/fetch-qemu-ssh-module.sh into build/qemu-modules and loaded through
QEMU_MODULE_DIR: nothing is installed system-wide). qimg runs through a symlink named
qemu-img, so stdout, stderr and the exit code must be equal.

Covered: the option and URL parsing errors (ssh_parse_filename, ssh_runtime_opts,
ssh_process_legacy_options, the BlockdevOptionsSsh checks), unreachable servers; and,
through a private sshd (openssh-server, its own config, host key and port on 127.0.0.1,
root's public key login through an ssh-agent of the test), info, map, check, compare and
convert reading qcow2 and raw images over ssh, host key checks by hash (match and
mismatch), a missing remote file, a refused login, and a bounded connect time against a
server that never speaks.
"""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import qemu

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SSHD = '/usr/sbin/sshd'

# iotest 162's lines, as qemu-img 7.2 prints them (the test's reference output)
IOTEST_162 = [
    (['info', 'json:{"driver": "ssh", "host": "localhost", "port": "0", "path": "/foo"}'],
     "qemu-img: Could not open 'json:{\"driver\": \"ssh\", \"host\": \"localhost\", "
     "\"port\": \"0\", \"path\": \"/foo\"}': Failed to connect to 'localhost:0': "
     "Connection refused\n"),
    (['info', '--image-opts', 'driver=ssh,host=localhost,port=0,path=/foo'],
     "qemu-img: Could not open 'driver=ssh,host=localhost,port=0,path=/foo': Failed to "
     "connect to 'localhost:0': Connection refused\n"),
    (['info', '--image-opts', 'driver=ssh,host=localhost,port=0.42,path=/foo'],
     "qemu-img: Could not open 'driver=ssh,host=localhost,port=0.42,path=/foo': Parameter "
     "'port' expects a number\n"),
]


@pytest.mark.parametrize('args,err', IOTEST_162, ids=['json', 'image-opts', 'port-0.42'])
def test_iotest_162_lines(args, err):
    rc, out, e = qemu.run(qemu.tool_path('qimg'), *args)
    assert (rc, out, e) == (1, '', err)


@pytest.fixture(scope='module')
def module_dir():
    """qemu's ssh module for the real qemu-img (fetched once per build directory)."""
    dest = os.path.join(REPO, 'build', 'qemu-modules')
    p = subprocess.run([os.path.join(REPO, 'scripts', 'fetch-qemu-ssh-module.sh'), dest],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        pytest.skip('qemu-block-extra not available: %s' % p.stderr.decode().strip())
    d = p.stdout.decode().strip()
    assert os.path.isfile(os.path.join(d, 'block-ssh.so'))
    return d


def both(args, env, cwd=None):
    a = qemu.run(qemu.tool_path('qemu'), *args, env=env, cwd=cwd)
    b = qemu.run(qemu.tool_path('qimg'), *args, env=env, cwd=cwd)
    return a, b


def assert_same(args, env, cwd=None):
    a, b = both(args, env, cwd)
    assert b == a, 'qemu-img %s differs' % ' '.join(args)
    return a


def test_module_gives_qemu_img_ssh(module_dir):
    """the reference really has its ssh driver (else every comparison below is moot)"""
    rc, out, _ = qemu.run(qemu.QEMU_IMG, '--help', env={'QEMU_MODULE_DIR': module_dir})
    assert rc == 0 and ' ssh ' in out.split('Supported formats:')[1].split('\n')[0] + ' '


BAD_NAMES = [
    'ssh://localhost:0/foo',            # port 0 is no port: 22
    'ssh://localhost/foo?host_key_check=bad',
    'ssh:///foo', 'ssh://x', 'ssh:foo',
    'ssh://u@localhost:1/p',
    'ssh://localhost:1/p?host_key_check=yes',
    'ssh://localhost:1/p?host_key_check=md5:00&x=1',
    'ssh://[::1]:1/p',                  # the brackets stay in the host name
    'ssh://localhost:x/p',              # qemu's URI parser fails: no options at all
    'json:{"driver":"ssh","filename":"ssh://localhost/p","path":"/x"}',
    'json:{"driver":"ssh","filename":"ssh://localhost:1/p","server.port":"2"}',
    'json:{"driver":"raw","file":{"driver":"ssh","host":"localhost","port":1,"path":"/p",'
    '"foo":1}}',
    'json:{"driver":"ssh","host":"localhost","port":1,"path":"/p","node-name":"x",'
    '"cache":{"direct":false},"read-only":true}',
    'json:{"driver":"ssh","host":"localhost","port":1,"path":"/p","server":{"host":"h"}}',
    'json:{"driver":"raw","file.filename":"ssh://localhost:1/p","file.path":"/x"}',
    'json:{"driver":"ssh","host":"localhost","port":1,"path":"/p","user":5}',
    'json:{"driver":"ssh","host":"nonexist.invalid","path":"/p"}',
    'json:{"driver":"ssh","host":"localhost","port":"-1","path":"/p"}',
]

BAD_OPTS = [
    'driver=ssh,host=localhost,path=/x,foo=1',
    'driver=ssh,server.port=1,path=/x',
    'driver=ssh,server.host=localhost,path=/x',
    'driver=ssh,host=localhost,port=1,path=/x,host_key_check=sha256:ab',
    'driver=ssh,host=localhost,path=/x,host-key-check.mode=hash',
    'driver=ssh,host=localhost,path=/x,host-key-check.mode=bad',
    'driver=ssh,host=localhost,port=0x10,path=/x',
    'driver=ssh,host=localhost,port=99999,path=/x',
    'driver=qcow2,file.driver=ssh,file.host=localhost,file.port=1,file.path=/x',
    'driver=ssh,path=/foo',
    'driver=ssh,server.host=localhost,server.port=1',
    'driver=ssh,port=2,path=/x',
    'driver=ssh,server.host=localhost,server.port=x,path=/x',
    'driver=ssh,host=localhost,port=1,path=/x,host-key-check.mode=hash,'
    'host-key-check.type=md4',
    'driver=ssh,host=localhost,port=1,path=/x,host-key-check.mode=hash,'
    'host-key-check.type=md5',
    'driver=ssh,host=localhost,port=1,path=/x,host-key-check.type=md5',
    'driver=ssh,host=localhost,port=1,path=/x,server.foo=1',
]


@pytest.mark.parametrize('name', BAD_NAMES)
def test_bad_names(module_dir, name):
    a = assert_same(['info', name], {'QEMU_MODULE_DIR': module_dir})
    assert a[0] == 1


@pytest.mark.parametrize('opts', BAD_OPTS)
def test_bad_image_opts(module_dir, opts):
    a = assert_same(['info', '--image-opts', opts], {'QEMU_MODULE_DIR': module_dir})
    assert a[0] == 1


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sshd:
    """A private sshd on 127.0.0.1 (root login with a key held by an ssh-agent of ours)."""

    def __init__(self, d):
        self.d = d
        self.port = free_port()
        run = lambda *a: subprocess.run(a, check=True, timeout=60, cwd=d,  # noqa: E731
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', 'hostkey')
        run('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', 'userkey')
        shutil.copy(os.path.join(d, 'userkey.pub'), os.path.join(d, 'authorized_keys'))
        os.chmod(os.path.join(d, 'authorized_keys'), 0o600)
        with open(os.path.join(d, 'sshd_config'), 'w') as f:
            f.write('Port %d\nListenAddress 127.0.0.1\nHostKey %s/hostkey\n'
                    'AuthorizedKeysFile %s/authorized_keys\nPidFile %s/sshd.pid\n'
                    'UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n'
                    'PasswordAuthentication no\nKbdInteractiveAuthentication no\n'
                    'Subsystem sftp internal-sftp\n' % (self.port, d, d, d))
        # sshd's compiled-in privilege separation directory (the package's service makes it)
        os.makedirs('/run/sshd', mode=0o755, exist_ok=True)
        self.sshd = subprocess.Popen([SSHD, '-D', '-e', '-f', os.path.join(d, 'sshd_config')],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(d, 'sshd.log'), 'w'))
        self.sock = os.path.join(d, 'agent.sock')
        self.agent = subprocess.Popen(['ssh-agent', '-D', '-a', self.sock],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(self.sock) and self._listening():
                break
            time.sleep(0.05)
        subprocess.run(['ssh-add', '-q', os.path.join(d, 'userkey')], check=True, timeout=30,
                       env=dict(os.environ, SSH_AUTH_SOCK=self.sock),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(d, 'hostkey.pub')) as f:
            self.hostkey_blob = f.read().split()[1]

    def _listening(self):
        try:
            socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def fingerprint(self, algo):
        import base64
        import hashlib
        return hashlib.new(algo, base64.b64decode(self.hostkey_blob)).hexdigest()

    def stop(self):
        for p in (self.sshd, self.agent):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope='module')
def sshd(tmp_path_factory, module_dir):
    if os.geteuid() != 0:
        pytest.skip('the private sshd logs in as root: run as root')
    if not os.access(SSHD, os.X_OK) or not shutil.which('ssh-agent'):
        pytest.skip('openssh-server / openssh-client not installed')
    s = Sshd(str(tmp_path_factory.mktemp('sshd')))
    s.env = {'QEMU_MODULE_DIR': module_dir, 'SSH_AUTH_SOCK': s.sock}
    yield s
    s.stop()


@pytest.fixture(scope='module')
def remote(sshd, tmp_path_factory):
    """a qcow2 (some data, some zeros) and a raw image, read over ssh"""
    d = str(tmp_path_factory.mktemp('remote'))
    q = os.path.join(d, 'img.qcow2')
    qemu.qemu_img('create', '-f', 'qcow2', q, '4M', check=True)
    qemu.qemu_io('-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0x11 1M 192k',
                 '-c', 'write -z 2M 64k', q, check=True)
    r = os.path.join(d, 'img.raw')
    qemu.qemu_img('convert', '-f', 'qcow2', '-O', 'raw', q, r, check=True)
    return d


def url(sshd, path, hkc='no'):
    return 'ssh://127.0.0.1:%d%s?host_key_check=%s' % (sshd.port, path, hkc)


@pytest.mark.parametrize('img', ['img.qcow2', 'img.raw'])
@pytest.mark.parametrize('args', [
    ['info'], ['info', '--output=json'], ['map', '--output=json'], ['map'], ['check'],
], ids=['info', 'info-json', 'map-json', 'map', 'check'])
def test_read_over_ssh(sshd, remote, img, args):
    a = assert_same(args + [url(sshd, os.path.join(remote, img))], sshd.env)
    assert a[0] == 0 or (args == ['check'] and img == 'img.raw')


def test_image_opts_and_json_forms(sshd, remote):
    p = os.path.join(remote, 'img.qcow2')
    for args in (
        ['info', '--image-opts', 'driver=qcow2,file.driver=ssh,file.host=127.0.0.1,'
         'file.port=%d,file.path=%s,file.host_key_check=no' % (sshd.port, p)],
        ['info', '--image-opts', 'driver=ssh,server.host=127.0.0.1,server.port=%d,path=%s,'
         'host-key-check.mode=none' % (sshd.port, p)],
        ['info', 'json:{"driver":"qcow2","file":{"driver":"ssh","server":{"host":"127.0.0.1",'
         '"port":"%d"},"path":"%s","host-key-check":{"mode":"none"}}}' % (sshd.port, p)],
        ['info', '-f', 'raw', url(sshd, p)],
    ):
        a = assert_same(args, sshd.env)
        assert a[0] == 0


def test_compare_and_convert_from_ssh(sshd, remote, tmp_path):
    for img, fmt in (('img.qcow2', 'qcow2'), ('img.raw', 'raw')):
        local = os.path.join(remote, img)
        a = assert_same(['compare', url(sshd, local), local], sshd.env)
        assert a[0] == 0
        outs = []
        for tool in ('qemu', 'qimg'):
            out = str(tmp_path / ('%s-%s.qcow2' % (tool, fmt)))
            rc, _, err = qemu.run(qemu.tool_path(tool), 'convert', '-O', 'qcow2',
                                  url(sshd, local), out, env=sshd.env)
            assert rc == 0, err
            outs.append(out)
        assert qemu.guest_sha256(outs[0]) == qemu.guest_sha256(outs[1])
        assert qemu.guest_sha256(outs[1]) == qemu.guest_sha256(local, fmt=fmt)


def test_host_key_hash(sshd, remote):
    p = os.path.join(remote, 'img.qcow2')
    md5 = sshd.fingerprint('md5')
    for hkc in ('sha256:' + sshd.fingerprint('sha256'), 'sha1:' + sshd.fingerprint('sha1'),
                'md5:' + ':'.join(md5[i:i + 2] for i in range(0, len(md5), 2))):
        a = assert_same(['info', url(sshd, p, hkc)], sshd.env)
        assert a[0] == 0
    for hkc in ('sha256:00', 'md5:' + md5 + '00', 'sha1:zz'):
        a = assert_same(['info', url(sshd, p, hkc)], sshd.env)
        assert a[0] == 1 and 'does not match host_key_check' in a[2]


def test_failures_after_connect(sshd, remote):
    p = os.path.join(remote, 'img.qcow2')
    for name in (url(sshd, os.path.join(remote, 'missing')),
                 url(sshd, p).replace('ssh://', 'ssh://nobody@'),
                 # known_hosts of the local user: whatever it holds, both must agree
                 'ssh://127.0.0.1:%d%s' % (sshd.port, p)):
        a = assert_same(['info', name], sshd.env)
        assert a[0] == 1
    # no agent: public keys of ~/.ssh only, none of which sshd accepts
    env = dict(sshd.env, SSH_AUTH_SOCK='')
    a = assert_same(['info', url(sshd, p)], env)
    assert a[0] == 1


def test_silent_server_bounded():
    """a server that accepts and never speaks: qimg gives up after its connect limit"""
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        rc, out, err = qemu.run(qemu.tool_path('qimg'), 'info',
                                'ssh://127.0.0.1:%d/x?host_key_check=no' % port,
                                env={'QIMG_SSH_CONNECT_TIMEOUT': '1'}, timeout=60)
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()
    assert rc == 1 and out == ''
    assert err.startswith("qemu-img: Could not open 'ssh://127.0.0.1:%d/x?host_key_check=no': "
                          "failed to establish SSH session: " % port), err
    assert took < 20


def test_writes_over_ssh(sshd, remote, tmp_path):
    """resize of a raw file (grow by one zero byte at the new end; no shrinking) and convert
    -n into an existing file, over ssh: the same bytes and messages as qemu-img's"""
    src = os.path.join(remote, 'img.qcow2')
    files = {}
    for tool in ('qemu', 'qimg'):
        f = str(tmp_path / ('%s.raw' % tool))
        qemu.qemu_img('create', '-f', 'raw', f, '1M', check=True)
        files[tool] = f
    res = {}
    for tool, f in files.items():
        q = qemu.tool_path(tool)
        u = url(sshd, f)
        res[tool] = [qemu.run(q, 'resize', '-f', 'raw', u, '4M', env=sshd.env),
                     qemu.run(q, 'resize', '-f', 'raw', '--shrink', u, '1M', env=sshd.env),
                     qemu.run(q, 'convert', '-n', '-O', 'raw', src, u, env=sshd.env)]
    assert res['qimg'] == res['qemu']
    assert [r[0] for r in res['qemu']] == [0, 1, 0]
    assert res['qemu'][1][2] == 'qemu-img: ssh driver does not support shrinking files\n'
    with open(files['qemu'], 'rb') as a, open(files['qimg'], 'rb') as b:
        assert a.read() == b.read()
    assert os.path.getsize(files['qimg']) == 4 << 20


def test_no_create_over_ssh(sshd, tmp_path):
    """qimg creates no image over ssh (README: a difference), and says so"""
    f = str(tmp_path / 'new.qcow2')
    u = url(sshd, f)
    rc, out, err = qemu.run(qemu.tool_path('qimg'), 'create', '-f', 'qcow2', u, '1M',
                            env=sshd.env)
    assert (rc, err) == (1, "qemu-img: %s: Protocol 'ssh' is not supported by qimg\n" % u)
    src = str(tmp_path / 'src.qcow2')
    qemu.qemu_img('create', '-f', 'qcow2', src, '1M', check=True)
    rc, out, err = qemu.run(qemu.tool_path('qimg'), 'convert', '-O', 'raw', src, u,
                            env=sshd.env)
    assert (rc, err) == (1, "qemu-img: %s: error while converting raw: Protocol 'ssh' is not "
                            "supported by qimg\n" % u)
    assert not os.path.exists(f)
