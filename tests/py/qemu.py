"""Shared helpers for the differential tests: run qemu-img / qemu-io / qimg.

Environment:
  QIMG       path of the qimg binary (default: <repo>/build/qimg)
  QEMU_IMG   path of the oracle qemu-img (default: qemu-img from PATH)
  QEMU_IO    path of the oracle qemu-io  (default: qemu-io from PATH)
"""

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

QIMG = os.path.abspath(os.environ.get('QIMG', os.path.join(REPO, 'build', 'qimg')))
QEMU_IMG = os.environ.get('QEMU_IMG') or shutil.which('qemu-img') or '/usr/bin/qemu-img'
QEMU_IO = os.environ.get('QEMU_IO') or shutil.which('qemu-io') or '/usr/bin/qemu-io'

TIMEOUT = 120


def run(*cmd, cwd=None, timeout=TIMEOUT, check=False, env=None):
    """Run a command; returns (rc, stdout, stderr) as text."""
    cmd = [str(c) for c in cmd]
    e = dict(os.environ)
    e['LC_ALL'] = 'C'
    if env:
        e.update(env)
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=e, stdin=subprocess.DEVNULL)
    out = p.stdout.decode('utf-8', 'replace')
    err = p.stderr.decode('utf-8', 'replace')
    if check and p.returncode != 0:
        raise RuntimeError('command failed (rc %d): %s\nstdout:\n%s\nstderr:\n%s'
                           % (p.returncode, ' '.join(cmd), out, err))
    return p.returncode, out, err


def qemu_img(*args, **kw):
    return run(QEMU_IMG, *args, **kw)


def create_luks(*args, attempts=200):
    """qemu-img create of a LUKS image (args after `create`, secret and options included).

    qemu-img times its PBKDF on the thread's CPU clock (qcrypto_pbkdf2_count_iters) and
    gives up with "Unable to get accurate CPU usage" when a short run is charged 0 ms,
    which on a loaded 2-core machine happens to 45-90 % of attempts with sha256 (measured),
    each independently: try again, many times (a failed attempt costs milliseconds).
    Returns qemu-img's result; any other failure is returned at once."""
    r = None
    for _ in range(attempts):
        r = qemu_img('create', *args)
        if r[0] == 0 or 'Unable to get accurate CPU usage' not in r[2]:
            return r
    return r


def qemu_io(*args, **kw):
    return run(QEMU_IO, *args, **kw)


def qimg(*args, **kw):
    return run(QIMG, *args, **kw)


_alias_dir = None


def qimg_as_qemu_img():
    """Path of a symlink named `qemu-img` pointing at $QIMG (made once per
    session), so that qimg's "<argv0>:" message prefix reads "qemu-img:"."""
    global _alias_dir
    if _alias_dir is None:
        _alias_dir = tempfile.mkdtemp(prefix='qimg-alias-')
        atexit.register(shutil.rmtree, _alias_dir, True)
        os.symlink(QIMG, os.path.join(_alias_dir, 'qemu-img'))
    return os.path.join(_alias_dir, 'qemu-img')


def tool_path(tool):
    """tool: 'qemu' (the oracle) or 'qimg' (run through the qemu-img alias)."""
    if tool == 'qemu':
        return QEMU_IMG
    if tool == 'qimg':
        return qimg_as_qemu_img()
    raise ValueError(tool)


# -- image building ------------------------------------------------------

def _opt_value(v):
    if v is True:
        return 'on'
    if v is False:
        return 'off'
    return str(v)


def make_image(path, size='1M', fmt='qcow2', backing=None, backing_fmt=None, **opts):
    """qemu-img create -f FMT [-o k=v,...] PATH SIZE.  Option names are the
    qemu ones (cluster_size, refcount_bits, compat, lazy_refcounts,
    extended_l2, data_file, data_file_raw, compression_type, preallocation)."""
    args = ['create', '-q', '-f', fmt]
    if backing:
        args += ['-b', backing, '-F', backing_fmt or 'qcow2']
    if opts:
        args += ['-o', ','.join('%s=%s' % (k, _opt_value(v)) for k, v in opts.items())]
    args += [path]
    if size is not None:
        args += [str(size)]
    qemu_img(*args, check=True, cwd=os.path.dirname(os.path.abspath(path)))
    return path


def io(path, *cmds, fmt='qcow2', cwd=None, allow_fail=False):
    """Run qemu-io commands (e.g. 'write -P 0xaa 0 64k') on an image."""
    args = ['-f', fmt] if fmt else []
    for c in cmds:
        args += ['-c', c]
    args.append(path)
    rc, out, err = qemu_io(*args, cwd=cwd or os.path.dirname(os.path.abspath(path)))
    if rc != 0 and not allow_fail:
        raise RuntimeError('qemu-io %r failed rc=%d: %s%s' % (cmds, rc, out, err))
    if not allow_fail and ('error' in err.lower() or 'failed' in out.lower()):
        raise RuntimeError('qemu-io %r reported an error: %s%s' % (cmds, out, err))
    return rc, out, err


def write_pattern(path, pattern, offset, length, **kw):
    return io(path, 'write -P 0x%02x %s %s' % (pattern, offset, length), **kw)


def snapshot_create(path, name):
    qemu_img('snapshot', '-c', name, path, check=True)


def convert(src, dst, *extra, out_fmt='qcow2'):
    qemu_img('convert', '-O', out_fmt, *extra, src, dst, check=True)


# -- check ---------------------------------------------------------------

def check(tool, filename, *extra, cwd=None, output='human'):
    """Run `check` with the oracle ('qemu') or qimg ('qimg'); returns
    (rc, stdout, stderr).  Pass a bare file name and cwd to make the
    "filename" field identical between two copies of an image."""
    args = ['check']
    if output != 'human':
        args.append('--output=%s' % output)
    args += list(extra) + [filename]
    return run(tool_path(tool), *args, cwd=cwd)


def parse_json(out):
    try:
        return json.loads(out) if out.strip() else None
    except ValueError:
        return None


def check_json(tool, filename, *extra, cwd=None):
    """Returns (rc, parsed JSON or None, stdout, stderr)."""
    rc, out, err = check(tool, filename, *extra, cwd=cwd, output='json')
    return rc, parse_json(out), out, err


def check_both_json(dir_a, dir_b, filename, *extra):
    """`check --output=json` with qemu-img in dir_a and qimg in dir_b."""
    return check_json('qemu', filename, *extra, cwd=dir_a), check_json('qimg', filename, *extra, cwd=dir_b)


# Fields of qemu's ImageCheck (QAPI).  Anything else qimg prints (e.g.
# "findings") is ignored by the comparison.
IMAGE_CHECK_KEYS = ('filename', 'format', 'check-errors', 'image-end-offset', 'corruptions',
                    'leaks', 'corruptions-fixed', 'leaks-fixed', 'total-clusters',
                    'allocated-clusters', 'fragmented-clusters', 'compressed-clusters')


def qemu_part(d):
    if d is None:
        return None
    return {k: v for k, v in d.items() if k in IMAGE_CHECK_KEYS}


def check_counts(d):
    """Normalised counter view of an ImageCheck dict (absent keys = 0)."""
    if d is None:
        return None
    return {k: d.get(k, 0) for k in IMAGE_CHECK_KEYS if k not in ('filename', 'format')}


def is_clean_by_qemu(path, cwd=None):
    """Real qemu-img check: rc 0 and no errors/leaks.  Returns (bool, detail)."""
    rc, d, out, err = check_json('qemu', path, cwd=cwd)
    ok = rc == 0 and d is not None and not d.get('corruptions') and not d.get('leaks') \
        and not d.get('check-errors')
    return ok, 'rc=%d json=%s stderr=%s' % (rc, out.strip(), err.strip())


def guest_sha256(path, fmt='qcow2', cwd=None):
    """sha256 of the guest content (qemu-img convert -O raw)."""
    d = tempfile.mkdtemp(prefix='qimg-raw-')
    try:
        raw = os.path.join(d, 'out.raw')
        rc, out, err = qemu_img('convert', '-f', fmt, '-O', 'raw', path, raw, cwd=cwd)
        if rc != 0:
            return None, err.strip()
        h = hashlib.sha256()
        with open(raw, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        return h.hexdigest(), ''
    finally:
        shutil.rmtree(d, True)


def copy_dir(src, dst):
    """Copy an image directory (image plus data file / backing files)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


# -- image locks ---------------------------------------------------------

def _lock_byte_held(path, byte):
    ino = os.stat(path).st_ino
    with open('/proc/locks') as f:
        for line in f:
            parts = line.split()
            if len(parts) < 8 or not parts[-3].endswith(':%d' % ino):
                continue
            end = parts[-1]
            if int(parts[-2]) <= byte and (end == 'EOF' or byte <= int(end)):
                return True
    return False


@contextlib.contextmanager
def held_open(path, fmt='qcow2', read_only=False, cwd=None):
    """Runs `qemu-io -f FMT PATH` (interactive, commands on a pipe) for the duration of the
    with block: the image held open read-write (or read-only), with qemu's OFD image locks.
    Waits until the locks are in place (byte 100, consistent read)."""
    args = [QEMU_IO, '-f', fmt] + (['-r'] if read_only else []) + [path]
    p = subprocess.Popen(args, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    full = path if cwd is None else os.path.join(cwd, path)
    try:
        deadline = time.time() + 10
        while not _lock_byte_held(full, 100):
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError('qemu-io did not lock %s' % full)
            time.sleep(0.02)
        yield p
    finally:
        p.stdin.close()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def allocated_extents(path):
    """The file's allocated byte ranges as the filesystem maps them (FIEMAP): merged
    (start, end, unwritten) triples by logical offset. Unlike st_blocks this leaves out the
    filesystem's own extent-tree blocks, whose count varies with fragmentation, and unlike
    SEEK_DATA it keeps fallocated (unwritten) ranges."""
    import fcntl
    import struct
    fs_ioc_fiemap, flag_sync, last, unwritten = 0xC020660B, 1, 1, 0x800
    out, start = [], 0
    with open(path, 'rb') as f:
        while True:
            n = 256
            req = bytearray(struct.pack('=QQIIII', start, (1 << 64) - 1 - start, flag_sync, 0,
                                        n, 0) + bytes(56 * n))
            fcntl.ioctl(f.fileno(), fs_ioc_fiemap, req)
            mapped = struct.unpack_from('=I', req, 20)[0]
            if not mapped:
                return out
            for i in range(mapped):
                lo, _, ln = struct.unpack_from('=QQQ', req, 32 + 56 * i)
                fl = struct.unpack_from('=I', req, 32 + 56 * i + 40)[0]
                ext = (lo, lo + ln, bool(fl & unwritten))
                if out and out[-1][1] == ext[0] and out[-1][2] == ext[2]:
                    out[-1] = (out[-1][0], ext[1], ext[2])
                else:
                    out.append(ext)
                if fl & last:
                    return out
            start = out[-1][1]
