"""Differential tests for `qimg info` against the real qemu-img 7.2.

Every image is built with the real qemu-img/qemu-io in one directory; both tools run there
with the same relative file name, qimg through a symlink named `qemu-img` so that message
prefixes match. stdout, stderr and the exit code must be identical, byte for byte.
"""

import json
import os
import shutil
import struct

import pytest

import qemu

ENV = {'TZ': 'UTC'}
OUTPUTS = [[], ['--output=json'], ['--backing-chain'], ['--backing-chain', '--output=json']]


def both(cwd, *args):
    a = qemu.run(qemu.tool_path('qemu'), *args, cwd=cwd, env=ENV)
    b = qemu.run(qemu.tool_path('qimg'), *args, cwd=cwd, env=ENV)
    return a, b


def assert_same(cwd, *args):
    a, b = both(cwd, *args)
    assert b == a, 'qemu-img %s differs' % ' '.join(args)
    return a


def io(d, name, *cmds, fmt='qcow2'):
    qemu.io(os.path.join(d, name), *cmds, fmt=fmt, cwd=d)


def create(d, name, size, *opts, backing=None, backing_fmt='qcow2'):
    args = ['create', '-q', '-f', 'qcow2']
    if backing:
        args += ['-b', backing, '-F', backing_fmt]
    if opts:
        args += ['-o', ','.join(opts)]
    qemu.qemu_img(*args, name, size, cwd=d, check=True)


# name -> function(d) building <name> in directory d (cwd-relative names, as users type them)
def _cluster(cs):
    def build(d, name):
        create(d, name, '3M', 'cluster_size=%s' % cs)
        io(d, name, 'write -P 0x11 0 100k', 'write -z 1M 64k', 'write -P 0x22 2047k 2k')
    return build


def _opts(*opts, writes=('write -P 0x5a 0 64k',)):
    def build(d, name):
        create(d, name, '1M', *opts)
        if writes:
            io(d, name, *writes)
    return build


def _snapshots(d, name):
    create(d, name, '4M')
    io(d, name, 'write -P 1 0 64k')
    qemu.qemu_img('snapshot', '-c', 'first', name, cwd=d, check=True)
    io(d, name, 'write -P 2 0 64k')
    qemu.qemu_img('snapshot', '-c', 'second snapshot with a rather long name', name, cwd=d,
                  check=True)
    qemu.qemu_img('snapshot', '-c', 'first', name, cwd=d, check=True)  # duplicate names are fine


def _chain(d, name):
    os.makedirs(os.path.join(d, 'chain'), exist_ok=True)
    create(d, 'chain/base.qcow2', '2M')
    io(d, 'chain/base.qcow2', 'write -P 1 0 1M')
    create(d, 'chain/mid.qcow2', '2M', backing='base.qcow2')
    io(d, 'chain/mid.qcow2', 'write -P 2 64k 64k')
    create(d, name, '3M', 'cluster_size=4096', backing='chain/mid.qcow2')


def _chain_raw(d, name):
    with open(os.path.join(d, 'chainbase.raw'), 'wb') as f:
        f.write(b'\x07' * 1000)
    create(d, name, '1M', backing='chainbase.raw', backing_fmt='raw')


def _data_file(d, name):
    create(d, name, '1M', 'data_file=%s.data' % name)
    io(d, name, 'write -P 3 64k 64k')


def _data_file_raw(d, name):
    create(d, name, '1M', 'data_file=%s.data' % name, 'data_file_raw=on')
    io(d, name, 'write -P 3 64k 64k')


def _bitmaps(d, name):
    create(d, name, '2M')
    qemu.qemu_img('bitmap', '--add', name, 'bm0', cwd=d, check=True)
    qemu.qemu_img('bitmap', '--add', '-g', '128k', name, 'bm-disabled', cwd=d, check=True)
    qemu.qemu_img('bitmap', '--disable', name, 'bm-disabled', cwd=d, check=True)


def _everything(d, name):
    create(d, name, '10M', 'extended_l2=on', 'compression_type=zstd', 'lazy_refcounts=on',
           'refcount_bits=64')
    qemu.qemu_img('snapshot', '-c', 'snap1', name, cwd=d, check=True)
    io(d, name, 'write -P 3 0 100k')
    qemu.qemu_img('bitmap', '--add', name, 'bm0', cwd=d, check=True)


def _compressed(d, name):
    create(d, 'csrc.qcow2', '1M')
    io(d, 'csrc.qcow2', 'write -P 9 0 200k')
    qemu.qemu_img('convert', '-c', '-O', 'qcow2', 'csrc.qcow2', name, cwd=d, check=True)


def _raw(d, name):
    qemu.qemu_img('create', '-q', '-f', 'raw', name, '1M', cwd=d, check=True)
    io(d, name, 'write -P 1 4k 4k', fmt='raw')


def _raw_unaligned(d, name):
    with open(os.path.join(d, name), 'wb') as f:
        f.write(os.urandom(1000))


def _poked(offset, fmt, value, base=_opts()):
    def build(d, name):
        base(d, name)
        with open(os.path.join(d, name), 'r+b') as f:
            f.seek(offset)
            f.write(struct.pack(fmt, value))
    return build


CASES = {
    'cs512.qcow2': _cluster(512),
    'cs4k.qcow2': _cluster('4k'),
    'cs64k.qcow2': _cluster('64k'),
    'cs2m.qcow2': _cluster('2M'),
    'compat010.qcow2': _opts('compat=0.10'),
    'compat11.qcow2': _opts('compat=1.1'),
    'rc1.qcow2': _opts('refcount_bits=1'),
    'rc16.qcow2': _opts('refcount_bits=16'),
    'rc64.qcow2': _opts('refcount_bits=64'),
    'lazy.qcow2': _opts('lazy_refcounts=on'),
    'extl2.qcow2': _opts('extended_l2=on', writes=('write -P 1 0 4k', 'write -z 8k 2k')),
    'zstd.qcow2': _opts('compression_type=zstd'),
    'prealloc.qcow2': _opts('preallocation=metadata'),
    'empty.qcow2': _opts(writes=()),
    'snapshots.qcow2': _snapshots,
    'chain.qcow2': _chain,
    'chainraw.qcow2': _chain_raw,
    'datafile.qcow2': _data_file,
    'datafileraw.qcow2': _data_file_raw,
    'bitmaps.qcow2': _bitmaps,
    'everything.qcow2': _everything,
    'compressed.qcow2': _compressed,
    'plain.raw': _raw,
    'unaligned.raw': _raw_unaligned,
    'dirty.qcow2': _poked(72, '>Q', 1, _opts('lazy_refcounts=on')),
    'corrupt.qcow2': _poked(72, '>Q', 2),
    'oddsize.qcow2': _poked(24, '>Q', 1000001),
}


@pytest.fixture(scope='module')
def images(tmp_path_factory, qimg_binary):
    d = str(tmp_path_factory.mktemp('info'))
    for name, build in CASES.items():
        build(d, name)
    return d


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize('out', OUTPUTS, ids=['human', 'json', 'chain', 'chain-json'])
def test_info_matches_qemu(images, name, out):
    rc, stdout, _ = assert_same(images, 'info', *out, name)
    assert rc == 0
    if '--output=json' in out:
        json.loads(stdout)


@pytest.mark.parametrize('name', ['cs64k.qcow2', 'plain.raw'])
def test_forced_format_and_share(images, name):
    for args in (['-f', 'raw'], ['-f', 'qcow2'], ['-U'], ['--force-share', '--output', 'json']):
        assert_same(images, 'info', *args, name)


def test_absolute_and_dotted_paths(images):
    assert_same(images, 'info', '--backing-chain', os.path.join(images, 'chain.qcow2'))
    assert_same(images, 'info', '--backing-chain', './chain/mid.qcow2')
    assert_same(images, 'info', '--output=json', '--backing-chain', 'chain/../chain.qcow2')


def test_missing_data_file_still_reports(images, tmp_path):
    d = str(tmp_path)
    _data_file(d, 'df.qcow2')
    os.unlink(os.path.join(d, 'df.qcow2.data'))
    assert_same(d, 'info', 'df.qcow2')
    assert_same(d, 'info', '--output=json', 'df.qcow2')


@pytest.mark.parametrize('args', [
    [], ['a', 'b'], ['--output=xml', 'x'], ['-f'], ['--bogus', 'x'], ['nonexistent.qcow2'],
    ['-f', 'nosuchfmt', 'x'], ['.'],
])
def test_usage_and_open_errors(images, args):
    rc, _, _ = assert_same(images, 'info', *args)
    assert rc == 1


# ---- broken images: qemu's verdict, one stderr line, exit 1 -------------------------------

def _truncate(n):
    def mutate(path):
        with open(path, 'r+b') as f:
            f.truncate(n)
    return mutate


def _put(offset, fmt, value):
    def mutate(path):
        with open(path, 'r+b') as f:
            f.seek(offset)
            f.write(struct.pack(fmt, value))
    return mutate


BROKEN = {
    'truncated-50': (_truncate(50), []),
    'truncated-50-forced': (_truncate(50), ['-f', 'qcow2']),
    'bad-magic-forced': (_put(0, '>I', 0x12345678), ['-f', 'qcow2']),
    'version-4': (_put(4, '>I', 4), []),
    'cluster-bits-30': (_put(20, '>I', 30), []),
    'cluster-bits-huge': (_put(20, '>I', 0xffffffff), []),
    'size-absurd': (_put(24, '>Q', 0xffffffffffffffff), []),
    'l1-size-huge': (_put(36, '>I', 0xffffffff), []),
    'l1-size-zero': (_put(36, '>I', 0), []),
    'l1-offset-unaligned': (_put(40, '>Q', 0x30001), []),
    'l1-offset-huge': (_put(40, '>Q', 0xffffffffffff0000), []),
    'reftable-offset-past-eof': (_put(48, '>Q', 0x7fff0000), []),
    'reftable-clusters-huge': (_put(56, '>I', 0xffffffff), []),
    'reftable-clusters-zero': (_put(56, '>I', 0), []),
    'snapshots-many': (_put(60, '>I', 70000), []),
    'snapshots-offset-unaligned': (_put(64, '>Q', 0x10001), []),
    'unknown-incompat': (_put(72, '>Q', 0x20), []),
    'refcount-order-7': (_put(96, '>I', 7), []),
    'header-length-96': (_put(100, '>I', 96), []),
    'header-length-huge': (_put(100, '>I', 0x100000), []),
    'backing-offset-huge': (_put(8, '>Q', 0x7fffffff0000), []),
    'backing-size-huge': ((lambda p: (_put(8, '>Q', 0x200)(p), _put(16, '>I', 5000)(p))), []),
    'compression-bit-without-type': (_put(72, '>Q', 8), []),
    'data-file-bit-without-name': (_put(72, '>Q', 4), []),
    'data-file-raw-without-file': (_put(88, '>Q', 2), []),
}


@pytest.mark.parametrize('case', sorted(BROKEN))
def test_broken_images(tmp_path, qimg_binary, case):
    d = str(tmp_path)
    _opts()(d, 'b.qcow2')
    mutate, args = BROKEN[case]
    mutate(os.path.join(d, 'b.qcow2'))
    for out in ([], ['--output=json']):
        rc, _, err = assert_same(d, 'info', *args, *out, 'b.qcow2')
        if rc != 0:
            assert rc == 1
            assert err.startswith('qemu-img: ')


def _snapshot_image(d):
    create(d, 's.qcow2', '1M')
    qemu.qemu_img('snapshot', '-c', 'snap', 's.qcow2', cwd=d, check=True)
    with open(os.path.join(d, 's.qcow2'), 'rb') as f:
        hdr = f.read(72)
    return struct.unpack('>Q', hdr[64:72])[0]


@pytest.mark.parametrize('field,fmt,value', [
    (36, '>I', 2000),            # extra_data_size too big (qemu adds a hint line)
    (12, '>H', 0xffff),          # id_str_size runs past EOF: reads zeros
    (16, '>I', 0xffffffff),      # date far in the future
    (24, '>Q', 0xffffffffffffffff),  # vm clock
    (56, '>Q', 0x7fffffffffffffff),  # icount
    (40, '>Q', 1 << 40),         # vm_state_size_large
])
def test_hostile_snapshot_fields(tmp_path, qimg_binary, field, fmt, value):
    d = str(tmp_path)
    off = _snapshot_image(d)
    with open(os.path.join(d, 's.qcow2'), 'r+b') as f:
        f.seek(off + field)
        f.write(struct.pack(fmt, value))
    for out in ([], ['--output=json']):
        assert_same(d, 'info', *out, 's.qcow2')


def test_backing_loop_is_refused(tmp_path, qimg_binary):
    d = str(tmp_path)
    qemu.qemu_img('create', '-q', '-u', '-f', 'qcow2', '-b', 'l2.qcow2', '-F', 'qcow2',
                  'l1.qcow2', '1M', cwd=d, check=True)
    qemu.qemu_img('create', '-q', '-u', '-f', 'qcow2', '-b', 'l1.qcow2', '-F', 'qcow2',
                  'l2.qcow2', '1M', cwd=d, check=True)
    rc, _, err = assert_same(d, 'info', '--backing-chain', 'l1.qcow2')
    assert rc == 1 and 'infinite loop' in err
    # qemu-img info without --backing-chain does not open the backing file at all
    assert_same(d, 'info', 'l1.qcow2')


def test_missing_backing_in_chain(tmp_path, qimg_binary):
    d = str(tmp_path)
    qemu.qemu_img('create', '-q', '-u', '-f', 'qcow2', '-b', 'gone.qcow2', '-F', 'qcow2',
                  't.qcow2', '1M', cwd=d, check=True)
    assert_same(d, 'info', 't.qcow2')
    rc, _, _ = assert_same(d, 'info', '--backing-chain', 't.qcow2')
    assert rc == 1


@pytest.mark.parametrize('args', [
    ['info', 'file:t:op.qcow2'], ['info', '--output=json', 'file:t:op.qcow2'],
    ['info', '--backing-chain', 'file:t:op.qcow2'], ['info', 'file:base.qcow2'],
    ['info', '--backing-chain', 'top2.qcow2'], ['info', 'file:file:x'],
    ['info', 'foo:bar'], ['info', 'file:nonexist'], ['info', 'file:b:c.qcow2'],
    ['check', 'file:t:op.qcow2'], ['check', 'foo:bar'], ['map', 'file:t:op.qcow2'],
    ['compare', 'file:t:op.qcow2', 'base.qcow2'], ['measure', '-O', 'qcow2', 'file:file:x'],
], ids=lambda a: '-'.join(a))
def test_file_protocol_prefix(tmp_path, qimg_binary, args):
    """iotest 126: "file:" is stripped ("./" put in front of a rest that looks like a
    prefix again), backing names are resolved from the stripped name, unknown prefixes
    are refused."""
    d = str(tmp_path)
    create(d, 'base.qcow2', '1M')
    create(d, './t:op.qcow2', '1M', backing='base.qcow2')
    create(d, 'top2.qcow2', '1M', backing='file:t:op.qcow2')
    create(d, './file:x', '1M')
    assert_same(d, *args)


@pytest.mark.parametrize('args', [
    ['info', 'json:{"driver":"qcow2","file.filename":"t.qcow2"}'],
    ['info', "json:{'driver':'qcow2','file':{'driver':'file','filename':'t.qcow2'}}"],
    ['info', '--backing-chain', '--image-opts', 'driver=qcow2,file.driver=file,file.filename=t.qcow2'],
    ['info', '--output=json', '--image-opts', 'driver=qcow2,file.filename=t.qcow2'],
    ['info', '--image-opts', 'file.filename=t.qcow2'],
    ['info', '--image-opts', 't.qcow2'],
    ['info', '-f', 'qcow2', '--image-opts', 'file.filename=t.qcow2'],
    ['info', '--image-opts', 'driver=qcow2,file.filename=t.qcow2,cache.direct=on'],
    ['info', 'json:{'], ['info', 'json:[1]'], ['info', 'json:{"driver":"qcow2"}'],
    ['info', 'json:{"driver":"qcow2","file.filename":"nonexist"}'],
    ['info', '--image-opts', 'data-file.filename=u.data,file.filename=d.qcow2'],
], ids=lambda a: ' '.join(a))
def test_image_opts_and_json(tmp_path, qimg_binary, args):
    """iotests 061, 089, 279: --image-opts and json: names of a format over a file."""
    d = str(tmp_path)
    create(d, 'b.qcow2', '1M')
    create(d, 'm.qcow2', '1M', backing='b.qcow2')
    create(d, 't.qcow2', '1M', backing=os.path.join(d, 'm.qcow2'))
    create(d, 'd.qcow2', '1M', 'data_file=t.data')
    qemu.qemu_img('amend', '-o', 'data_file=foo', 'd.qcow2', cwd=d, check=True)
    os.rename(os.path.join(d, 't.data'), os.path.join(d, 'u.data'))
    assert_same(d, *args)
