"""`qimg amend` against the real qemu-img 7.2 amend.

Each case builds an image directory with the real qemu-img/qemu-io, copies it, runs
`qemu-img amend ARGS` in one copy and qimg (through a symlink named qemu-img, so the message
prefix matches) in the other, and requires the same exit status, stdout and stderr and
byte-identical files afterwards (every file of the directory: image, data file, backing
file), plus the same real `qemu-img check` verdict on both results.

The fault cases cut qimg (QIMG_FAULT_AFTER_WRITES=N) after each write of a compat change and
a refcount width change and require real qemu-img check to find no corruption in what is
left. The port cases check --dry-run (nothing written) and --journal + `qimg undo`.
"""

import os

import pytest

import qemu
from portcheck import build_orig, cut_at_every_write, dry_run, journal_cut_then_undo, \
    journal_pair, no_corruption, read_all, real_run_changes, run_pair, same_files, \
    undo_restores

KIB, MIB = 1 << 10, 1 << 20


def _qcow2(size='1M', io=(), **opts):
    def build(d):
        qemu.make_image(os.path.join(d, 'img'), size=size, **opts)
        if io:
            qemu.io(os.path.join(d, 'img'), *io)
    return build


def _raw():
    def build(d):
        qemu.make_image(os.path.join(d, 'img'), size='1M', fmt='raw')
    return build


def _then(build, *steps):
    """build, then each step(d)."""
    def b(d):
        build(d)
        for s in steps:
            s(d)
    return b


def _snap(name='s1'):
    return lambda d: qemu.snapshot_create(os.path.join(d, 'img'), name)


def _bitmap(name='b0'):
    return lambda d: qemu.qemu_img('bitmap', '--add', os.path.join(d, 'img'), name,
                                   check=True)


def _io(*cmds):
    return lambda d: qemu.io(os.path.join(d, 'img'), *cmds)


def _backed(top_io=(), **opts):
    """img (qcow2) over base (qcow2, data everywhere)."""
    def build(d):
        qemu.make_image(os.path.join(d, 'base'), size='2M')
        qemu.write_pattern(os.path.join(d, 'base'), 0x11, 0, 2 * MIB)
        qemu.make_image(os.path.join(d, 'img'), size='2M', backing='base',
                        backing_fmt='qcow2', **opts)
        if top_io:
            qemu.io(os.path.join(d, 'img'), *top_io)
    return build


def _compressed(**opts):
    def build(d):
        src = os.path.join(d, 'src')
        qemu.make_image(src, size='4M')
        qemu.write_pattern(src, 0xaa, 0, 128 * KIB)
        qemu.write_pattern(src, 0xbb, 2 * MIB, 256 * KIB)
        args = ['-c']
        if opts:
            args += ['-o', ','.join('%s=%s' % kv for kv in opts.items())]
        qemu.convert(src, os.path.join(d, 'img'), *args)
        os.unlink(src)
    return build


def _dirty_lazy(d):
    """A lazy-refcounts image left dirty: qemu-io killed after writes (abort)."""
    qemu.make_image(os.path.join(d, 'img'), size='4M', lazy_refcounts=True)
    qemu.io(os.path.join(d, 'img'), 'write -P 0xaa 0 128k', 'write -P 0xbb 1M 64k', 'abort',
            allow_fail=True)


def _v2_snapshots_without_extra(d):
    """Rewrites img's snapshot table in place with extra_data_size 0 in every entry, as
    qemu before 1.1 wrote v2 snapshots (the table shrinks; the header keeps its offset)."""
    import struct
    p = os.path.join(d, 'img')
    f = bytearray(open(p, 'rb').read())
    nb, off = struct.unpack('>IQ', f[60:72])
    pos, out = off, bytearray()
    for _ in range(nb):
        pos = (pos + 7) & ~7
        hdr = f[pos:pos + 40]
        id_len, name_len = struct.unpack('>HH', hdr[12:16])
        extra = struct.unpack('>I', hdr[36:40])[0]
        ids = f[pos + 40 + extra:pos + 40 + extra + id_len + name_len]
        pos += 40 + extra + id_len + name_len
        while len(out) % 8:
            out.append(0)
        out += hdr[:36] + b'\0\0\0\0' + ids
    end = pos
    f[off:end] = bytes(out) + bytes(end - off - len(out))
    open(p, 'wb').write(f)


def _luks_qcow2(d):
    r = qemu.create_luks('-q', '-f', 'qcow2', '--object', 'secret,id=s0,data=abc', '-o',
                         'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10',
                         os.path.join(d, 'img'), '1M')
    assert r[0] == 0, r


def _poke_sn_l1(delta=None, size=None):
    """The first snapshot's L1 offset moved by delta / its L1 size set (hostile input)."""
    def step(d):
        import struct
        p = os.path.join(d, 'img')
        f = bytearray(open(p, 'rb').read())
        off = struct.unpack('>Q', f[64:72])[0]
        if delta is not None:
            l1 = struct.unpack('>Q', f[off:off + 8])[0]
            f[off:off + 8] = struct.pack('>Q', l1 + delta)
        if size is not None:
            f[off + 8:off + 12] = struct.pack('>I', size)
        open(p, 'wb').write(f)
    return step


DATA = ('write -P 0xaa 0 64k', 'write -P 0xbb 700k 200k')
ZEROS = ('write -P 0xaa 0 64k', 'write -z 128k 128k', 'write -P 0xbb 512k 64k',
         'write -z 512k 64k', 'write -P 0xcc 896k 64k',
         'write -z -u 896k 64k', 'write -z 832k 64k')

# (id, build, amend args after `amend`; the file is 'img')
CASES = [
    # the command line
    ('no-args', _raw(), []),
    ('no-options', _qcow2(), ['img']),
    ('no-file', _qcow2(), ['-o', 'compat=1.1']),
    ('two-files', _qcow2(), ['-o', 'compat=1.1', 'img', 'img']),
    ('bad-option-list', _qcow2(), ['-o', ',compat=1.1', 'img']),
    ('trailing-comma', _qcow2(), ['-o', 'compat=1.1,', 'img']),
    ('help', _qcow2(), ['-o', 'help', 'img']),
    ('help-q', _qcow2(), ['-o', '?', 'img']),
    ('help-f-nofile', _qcow2(), ['-f', 'qcow2', '-o', 'help']),
    ('help-with-others', _qcow2(), ['-f', 'qcow2', '-o', 'size=1,help']),
    ('help-raw', _raw(), ['-f', 'raw', '-o', 'help']),
    ('help-luks', _raw(), ['-f', 'luks', '-o', 'help']),
    ('help-vmdk', _raw(), ['-f', 'vmdk', '-o', 'help']),
    ('help-unknown', _raw(), ['-f', 'foo', '-o', 'help']),
    ('help-nofmt-nofile', _raw(), ['-o', 'help']),
    ('raw', _raw(), ['-f', 'raw', '-o', 'size=2M', 'img']),
    ('raw-probed', _raw(), ['-o', 'size=2M', 'img']),
    ('missing-file', _raw(), ['-o', 'compat=1.1', 'nonexistent']),
    ('wrong-fmt', _raw(), ['-f', 'qcow2', '-o', 'compat=1.1', 'img']),
    ('unknown-opt', _qcow2(), ['-o', 'foo=bar', 'img']),
    ('create-only-cluster-size', _qcow2(), ['-o', 'cluster_size=4k', 'img']),
    ('create-only-prealloc', _qcow2(), ['-o', 'preallocation=full', 'img']),
    ('create-only-ext-l2', _qcow2(), ['-o', 'extended_l2=on', 'img']),
    ('create-only-compression', _qcow2(), ['-o', 'compression_type=zstd', 'img']),
    ('create-only-encryption', _qcow2(), ['-o', 'encryption=on', 'img']),
    ('protocol-opt', _qcow2(), ['-o', 'nocow=on', 'img']),
    ('bad-bool', _qcow2(), ['-o', 'lazy_refcounts=maybe', 'img']),
    ('bad-number', _qcow2(), ['-o', 'refcount_bits=x', 'img']),
    ('bad-size', _qcow2(), ['-o', 'size=1x', 'img']),
    ('bad-compat', _qcow2(), ['-o', 'compat=2.0', 'img']),
    ('bad-cache', _qcow2(), ['-t', 'foo', '-o', 'compat=1.1', 'img']),
    ('cache-none', _qcow2(), ['-t', 'none', '-o', 'compat=1.1', 'img']),
    ('unknown-flag', _qcow2(), ['-U', '-o', 'compat=1.1', 'img']),
    # encrypted images do not open read-write without their secret (no --object in qimg)
    ('luks-encrypt-opts', _luks_qcow2, ['-o', 'encrypt.new-secret=x', 'img']),
    ('luks-compat', _luks_qcow2, ['-o', 'compat=0.10', 'img']),
    ('luks-help', _luks_qcow2, ['-o', 'help', 'img']),
    ('encrypt-none', _qcow2(), ['-o', 'encrypt.new-secret=x', 'img']),
    ('refcount-bits-3', _qcow2(), ['-o', 'refcount_bits=3', 'img']),
    ('refcount-bits-128', _qcow2(), ['-o', 'refcount_bits=128', 'img']),
    ('refcount-bits-0', _qcow2(), ['-o', 'refcount_bits=0', 'img']),
    ('errors-in-desc-order', _qcow2(), ['-o', 'refcount_bits=3,compat=9', 'img']),
    # header-only changes
    ('same-compat', _qcow2(), ['-o', 'compat=1.1', 'img']),
    ('lazy-on', _qcow2(io=DATA), ['-o', 'lazy_refcounts=on', 'img']),
    ('lazy-on-q-p', _qcow2(io=DATA), ['-q', '-p', '-o', 'lazy_refcounts=on', 'img']),
    ('lazy-off', _qcow2(io=DATA, lazy_refcounts=True), ['-o', 'lazy_refcounts=off', 'img']),
    # the dirty image is repaired at open by the check -r engine, whose rebuild leaves the
    # old reftable's bytes where qemu's zeroes them (`qimg check -r all` differs from
    # qemu's on this image too): not amend's, kept as a strict xfail until fixed there
    pytest.param('lazy-off-dirty', _dirty_lazy, ['-o', 'lazy_refcounts=off', 'img'],
                 marks=pytest.mark.xfail(strict=True, reason='dirty-open rebuild differs')),
    ('lazy-on-v2', _qcow2(compat='0.10'), ['-o', 'lazy_refcounts=on', 'img']),
    ('lazy-on-upgrade', _qcow2(compat='0.10'), ['-o', 'compat=1.1,lazy_refcounts=on', 'img']),
    ('lazy-short-bool', _qcow2(), ['-o', 'lazy_refcounts', 'img']),
    ('lazy-no-prefix', _qcow2(lazy_refcounts=True), ['-o', 'nolazy_refcounts', 'img']),
    ('backing-same', _backed(), ['-o', 'backing_file=base,backing_fmt=qcow2', 'img']),
    ('backing-same-file', _backed(), ['-o', 'backing_file=base', 'img']),
    ('backing-other', _backed(), ['-o', 'backing_file=other', 'img']),
    ('backing-fmt-other', _backed(), ['-o', 'backing_fmt=raw', 'img']),
    ('backing-none', _qcow2(), ['-o', 'backing_file=base', 'img']),
    ('data-file-none', _qcow2(), ['-o', 'data_file=x', 'img']),
    ('data-file-rename', _qcow2(io=DATA, data_file='img.data'), ['-o', 'data_file=other',
                                                                 'img']),
    ('data-file-same', _qcow2(io=DATA, data_file='img.data'), ['-o', 'data_file=img.data',
                                                               'img']),
    ('data-file-empty', _qcow2(data_file='img.data'), ['-o', 'data_file=', 'img']),
    ('data-file-raw-off', _qcow2(data_file='img.data', data_file_raw=True),
     ['-o', 'data_file_raw=off', 'img']),
    ('data-file-raw-on', _qcow2(data_file='img.data'), ['-o', 'data_file_raw=on', 'img']),
    ('data-file-raw-keep', _qcow2(data_file='img.data', data_file_raw=True),
     ['-o', 'data_file_raw=on', 'img']),
    ('size-grow', _qcow2(io=DATA), ['-o', 'size=3M', 'img']),
    ('size-shrink', _qcow2(size='4M', io=DATA), ['-o', 'size=1M', 'img']),
    ('size-shrink-snap', _then(_qcow2(size='4M', io=DATA), _snap()), ['-o', 'size=1M', 'img']),
    ('size-data-file', _qcow2(io=DATA, data_file='img.data'), ['-o', 'size=3M', 'img']),
    ('size-data-file-raw', _qcow2(io=DATA, data_file='img.data', data_file_raw=True),
     ['-o', 'size=3M,data_file_raw=off', 'img']),
    ('size-ext-l2-shrink', _qcow2(size='4M', io=DATA, extended_l2=True),
     ['-o', 'size=512K', 'img']),
    ('size-v2-snap', _then(_qcow2(io=DATA, compat='0.10'), _snap()), ['-o', 'size=3M', 'img']),
    ('size-v2-snap-upgrade', _then(_qcow2(io=DATA, compat='0.10'), _snap()),
     ['-o', 'size=3M,compat=1.1', 'img']),
    ('size-bitmap', _then(_qcow2(io=DATA), _bitmap()), ['-o', 'size=3M', 'img']),
    ('size-zero', _qcow2(io=DATA), ['-o', 'size=0', 'img']),
    ('size-unaligned', _qcow2(), ['-o', 'size=1000001', 'img']),
    # upgrade
    ('upgrade', _qcow2(io=DATA, compat='0.10'), ['-o', 'compat=1.1', 'img']),
    ('upgrade-v3', _qcow2(io=DATA, compat='0.10'), ['-o', 'compat=v3', 'img']),
    ('upgrade-p', _qcow2(io=DATA, compat='0.10'), ['-p', '-o', 'compat=1.1', 'img']),
    ('upgrade-c512', _qcow2(io=DATA, compat='0.10', cluster_size=512), ['-o', 'compat=1.1',
                                                                          'img']),
    ('upgrade-c4k', _qcow2(io=DATA, compat='0.10', cluster_size=4096), ['-o', 'compat=1.1',
                                                                          'img']),
    ('upgrade-c2M', _qcow2(io=DATA, compat='0.10', cluster_size=2 * MIB),
     ['-o', 'compat=1.1', 'img']),
    ('upgrade-snap', _then(_qcow2(io=DATA, compat='0.10'), _snap()), ['-o', 'compat=1.1',
                                                                      'img']),
    ('upgrade-snap-no-extra', _then(_qcow2(io=DATA, compat='0.10'), _snap(), _snap('s2'),
                                    _v2_snapshots_without_extra),
     ['-p', '-o', 'compat=1.1', 'img']),
    ('upgrade-backing', _backed(top_io=DATA, compat='0.10'), ['-o', 'compat=1.1', 'img']),
    ('upgrade-compressed', _compressed(compat='0.10'), ['-o', 'compat=1.1', 'img']),
    # downgrade
    ('downgrade', _qcow2(io=DATA), ['-o', 'compat=0.10', 'img']),
    ('downgrade-v2', _qcow2(io=DATA), ['-o', 'compat=v2', 'img']),
    ('downgrade-p', _qcow2(io=ZEROS), ['-p', '-o', 'compat=0.10', 'img']),
    ('downgrade-zeros', _qcow2(io=ZEROS), ['-o', 'compat=0.10', 'img']),
    ('downgrade-zeros-c512', _qcow2(io=ZEROS, cluster_size=512), ['-o', 'compat=0.10',
                                                                  'img']),
    ('downgrade-zeros-c2M', _qcow2(size='8M', io=('write -z 0 2M', 'write -P 1 4M 2M',
                                                  'write -z 4M 2M'), cluster_size=2 * MIB),
     ['-o', 'compat=0.10', 'img']),
    ('downgrade-zeros-backing', _backed(top_io=ZEROS), ['-o', 'compat=0.10', 'img']),
    ('downgrade-zeros-backing-p', _backed(top_io=ZEROS), ['-p', '-o', 'compat=0.10', 'img']),
    ('downgrade-zeros-snap', _then(_qcow2(io=ZEROS), _snap(), _io('write -z 64k 64k',
                                                                 'write -P 3 256k 64k')),
     ['-o', 'compat=0.10', 'img']),
    ('downgrade-zeros-snap-backing', _then(_backed(top_io=ZEROS), _snap(),
                                           _io('write -z 1536k 64k', 'write -z 0 64k')),
     ['-o', 'compat=0.10', 'img']),
    ('downgrade-zeros-2snaps-backing', _then(_backed(top_io=ZEROS), _snap(), _snap('s2'),
                                             _io('write -P 5 128k 64k')),
     ['-p', '-o', 'compat=0.10', 'img']),
    ('downgrade-lazy', _qcow2(io=DATA, lazy_refcounts=True), ['-o', 'compat=0.10', 'img']),
    ('downgrade-lazy-both', _qcow2(io=DATA, lazy_refcounts=True),
     ['-o', 'compat=0.10,lazy_refcounts=off', 'img']),
    ('downgrade-lazy-on', _qcow2(io=DATA), ['-o', 'compat=0.10,lazy_refcounts=on', 'img']),
    ('downgrade-rb1', _qcow2(io=DATA, refcount_bits=1), ['-o', 'compat=0.10', 'img']),
    ('downgrade-rb-v2', _qcow2(io=DATA), ['-o', 'compat=0.10,refcount_bits=8', 'img']),
    ('downgrade-ext-l2', _qcow2(io=DATA, extended_l2=True), ['-o', 'compat=0.10', 'img']),
    ('downgrade-zstd', _qcow2(io=ZEROS, compression_type='zstd'), ['-o', 'compat=0.10',
                                                                   'img']),
    ('downgrade-zstd-compressed', _compressed(compression_type='zstd'),
     ['-o', 'compat=0.10', 'img']),
    ('downgrade-zstd-compressed-zeros', _then(_compressed(compression_type='zstd'),
                                              _io('write -z 3M 64k')),
     ['-o', 'compat=0.10', 'img']),
    ('downgrade-zlib-compressed', _compressed(), ['-o', 'compat=0.10', 'img']),
    ('downgrade-data-file', _qcow2(io=DATA, data_file='img.data'), ['-o', 'compat=0.10',
                                                                    'img']),
    ('downgrade-bitmap', _then(_qcow2(io=DATA), _bitmap()), ['-o', 'compat=0.10', 'img']),
    ('downgrade-snap', _then(_qcow2(io=DATA), _snap()), ['-o', 'compat=0.10', 'img']),
    ('downgrade-snap-resized', _then(_qcow2(io=DATA), _snap(),
                                     lambda d: qemu.qemu_img('resize', os.path.join(d, 'img'),
                                                             '2M', check=True)),
     ['-o', 'compat=0.10', 'img']),
    ('downgrade-sn-l1-unaligned', _then(_qcow2(io=ZEROS), _snap(), _poke_sn_l1(delta=8)),
     ['-o', 'compat=0.10', 'img']),
    ('downgrade-sn-l1-too-large', _then(_qcow2(io=ZEROS), _snap(),
                                        _poke_sn_l1(size=0x400001)),
     ['-o', 'compat=0.10', 'img']),
    ('downgrade-size', _qcow2(io=ZEROS), ['-o', 'compat=0.10,size=4M', 'img']),
    ('downgrade-c4k', _qcow2(io=ZEROS, cluster_size=4096), ['-o', 'compat=0.10', 'img']),
    ('roundtrip-up', _qcow2(io=DATA, compat='0.10'), ['-o', 'compat=1.1,lazy_refcounts=on',
                                                      'img']),
    # refcount width
    ('rb-16-to-1', _qcow2(io=DATA, cluster_size=16384), ['-o', 'refcount_bits=1', 'img']),
    ('rb-16-to-2', _qcow2(io=DATA), ['-o', 'refcount_bits=2', 'img']),
    ('rb-16-to-4-p', _qcow2(io=DATA), ['-p', '-o', 'refcount_bits=4', 'img']),
    ('rb-16-to-8', _qcow2(io=DATA), ['-o', 'refcount_bits=8', 'img']),
    ('rb-16-to-32', _qcow2(io=DATA), ['-o', 'refcount_bits=32', 'img']),
    ('rb-16-to-64', _qcow2(io=DATA), ['-o', 'refcount_bits=64', 'img']),
    ('rb-1-to-64', _qcow2(io=DATA, refcount_bits=1, cluster_size=4096), ['-o', 'refcount_bits=64', 'img']),
    ('rb-64-to-1', _qcow2(io=DATA, refcount_bits=64, cluster_size=4096), ['-o', 'refcount_bits=1', 'img']),
    ('rb-2-to-16', _qcow2(io=DATA, refcount_bits=2, cluster_size=4096), ['-o', 'refcount_bits=16', 'img']),
    ('rb-8-to-4', _qcow2(io=DATA, refcount_bits=8), ['-o', 'refcount_bits=4', 'img']),
    ('rb-same', _qcow2(io=DATA), ['-o', 'refcount_bits=16', 'img']),
    ('rb-int-wrap', _qcow2(io=DATA), ['-o', 'refcount_bits=4294967304', 'img']),
    ('rb-c512-to-64', _qcow2(size='4M', io=DATA, cluster_size=512),
     ['-o', 'refcount_bits=64', 'img']),
    ('rb-c512-to-1', _qcow2(size='4M', io=DATA, cluster_size=512),
     ['-p', '-o', 'refcount_bits=1', 'img']),
    ('rb-snap-to-1', _then(_qcow2(io=DATA), _snap()), ['-o', 'refcount_bits=1', 'img']),
    ('rb-snap-to-2', _then(_qcow2(io=DATA), _snap(), _snap('s2'), _snap('s3')),
     ['-o', 'refcount_bits=2', 'img']),
    ('rb-snaps-to-1-refused', _then(_qcow2(io=DATA), _snap(), _snap('s2')),
     ['-o', 'refcount_bits=1', 'img']),
    ('rb-bitmap', _then(_qcow2(io=DATA), _bitmap()), ['-o', 'refcount_bits=8', 'img']),
    ('rb-compressed', _compressed(), ['-o', 'refcount_bits=4', 'img']),
    ('rb-ext-l2', _qcow2(io=DATA, extended_l2=True), ['-o', 'refcount_bits=32', 'img']),
    ('rb-data-file', _qcow2(io=DATA, data_file='img.data'), ['-o', 'refcount_bits=1',
                                                              'img']),
    ('rb-lazy', _qcow2(io=DATA, lazy_refcounts=True), ['-o', 'refcount_bits=64', 'img']),
    ('rb-big', _qcow2(size='300M', io=('write -P 1 0 1M', 'write -P 2 250M 1M')),
     ['-o', 'refcount_bits=64', 'img']),
    ('rb-backing', _backed(top_io=ZEROS), ['-o', 'refcount_bits=2', 'img']),
    ('rb-zstd-compressed', _compressed(compression_type='zstd'), ['-o', 'refcount_bits=32',
                                                                  'img']),
    ('rb-ext-l2-zeros', _qcow2(io=ZEROS, extended_l2=True, cluster_size=32768),
     ['-o', 'refcount_bits=1', 'img']),
    ('lazy-on-data-file', _qcow2(io=DATA, data_file='img.data'), ['-o', 'lazy_refcounts=on',
                                                                  'img']),
    ('upgrade-c2M-snap', _then(_qcow2(size='8M', io=('write -P 1 0 3M',), compat='0.10',
                                      cluster_size=2 * MIB), _snap()),
     ['-o', 'compat=1.1', 'img']),
    ('downgrade-c2M-backing', _then(_backed(cluster_size=2 * MIB), _io('write -z 0 2M')),
     ['-o', 'compat=0.10', 'img']),
    ('rb-v2', _qcow2(io=DATA, compat='0.10'), ['-o', 'refcount_bits=8', 'img']),
    ('rb-upgrade', _qcow2(io=DATA, compat='0.10'), ['-p', '-o', 'compat=1.1,refcount_bits=8',
                                                    'img']),
    ('rb-downgrade', _qcow2(io=ZEROS, refcount_bits=2, cluster_size=4096),
     ['-p', '-o', 'compat=0.10,refcount_bits=16', 'img']),
    ('rb-all', _qcow2(io=DATA, refcount_bits=4, cluster_size=4096),
     ['-p', '-o', 'refcount_bits=64,lazy_refcounts=on,size=5M', 'img']),
]


def _check_summary(d):
    rc, out, err = qemu.qemu_img('check', '--output=json', '-U', 'img', cwd=d)
    if not out.strip():
        return rc, err
    j = qemu.parse_json(out)
    return rc, {k: j.get(k) for k in ('corruptions', 'leaks', 'check-errors',
                                      'image-end-offset')}


def _params(cases):
    out = []
    for c in cases:
        if hasattr(c, 'marks'):
            out.append(pytest.param(*c.values[1:], id=c.values[0], marks=c.marks))
        else:
            out.append(pytest.param(*c[1:], id=c[0]))
    return out


# qemu 7.2's downgrade marks a preallocated zero cluster that a snapshot shares
# OFLAG_COPIED (qcow2_expand_zero_clusters looks at the L2 table's refcount only): its own
# check then finds corruption. qimg leaves the flag off: the files differ in exactly those
# COPIED bits (bit 63 of L2 entries, the top bit of an entry's first byte), qemu's check
# finds corruption in qemu's file and none in qimg's.
COPIED_FIXED = {'downgrade-zeros-snap', 'downgrade-zeros-snap-backing',
                'downgrade-zeros-2snaps-backing'}


def _only_copied_bits_differ(a, b):
    x = open(os.path.join(a, 'img'), 'rb').read()
    y = open(os.path.join(b, 'img'), 'rb').read()
    assert len(x) == len(y)
    diff = [i for i in range(len(x)) if x[i] != y[i]]
    assert diff
    for i in diff:
        assert i % 8 == 0 and x[i] ^ y[i] == 0x80 and x[i] & 0x80, hex(i)


@pytest.mark.parametrize('build,args', _params(CASES))
def test_amend_matches_qemu(tmp_path, request, build, args):
    _, a, b, ra, rb = run_pair(tmp_path, build, 'amend', args)
    assert rb == ra
    if request.node.callspec.id in COPIED_FIXED:
        _only_copied_bits_differ(a, b)
        assert qemu.check_json('qemu', 'img', cwd=a)[1]['corruptions']
        ok, detail = qemu.is_clean_by_qemu('img', cwd=b)
        assert ok, detail
        return
    same_files(a, b)
    if os.path.exists(os.path.join(a, 'img')):
        assert _check_summary(b) == _check_summary(a)


def test_help_lists_amend():
    rc, out, _ = qemu.qimg('--help')
    assert rc == 0
    assert [ln.split() for ln in out.splitlines() if ln.split()[:1] == ['amend']] == \
        [['amend']]
    rc, out, _ = qemu.qimg('amend', '--help')
    assert rc == 0 and '--journal' in out and '-o OPTIONS' in out


def test_amend_refcount_width_2m_clusters(tmp_path):
    """2 MiB clusters: qemu's walk steps through 2^18 reftable entries of 2^20 refcounts
    each (minutes); qimg skips runs of missing refblocks. Judged by real qemu-img."""
    d = str(tmp_path)
    qemu.make_image(os.path.join(d, 'img'), size='8M', cluster_size=2 * MIB)
    qemu.write_pattern(os.path.join(d, 'img'), 0x5a, 0, 3 * MIB)
    for bits in ('64', '1', '16'):
        rc, out, err = qemu.run(qemu.tool_path('qimg'), 'amend', '-o', 'refcount_bits=' + bits,
                                'img', cwd=d)
        assert (rc, out, err) == (0, '', '')
        ok, detail = qemu.is_clean_by_qemu('img', cwd=d)
        assert ok, detail
        rc, out, _ = qemu.qemu_img('info', '--output=json', 'img', cwd=d)
        assert qemu.parse_json(out)['format-specific']['data']['refcount-bits'] == int(bits)


# -- fault injection -------------------------------------------------------------------------

FAULT_CASES = [
    ('upgrade-snap-no-extra', _then(_qcow2(io=DATA, compat='0.10'), _snap(),
                                    _v2_snapshots_without_extra), ['-o', 'compat=1.1']),
    ('upgrade', _then(_qcow2(io=DATA, compat='0.10'), _snap()), ['-o', 'compat=1.1']),
    ('downgrade-zeros-backing-snap', _then(_backed(top_io=ZEROS), _snap(),
                                           _io('write -z 1536k 64k', 'write -z 0 64k')),
     ['-o', 'compat=0.10']),
    ('downgrade-zeros', _qcow2(io=ZEROS), ['-o', 'compat=0.10']),
    ('downgrade-lazy', _qcow2(io=ZEROS, lazy_refcounts=True), ['-o', 'compat=0.10']),
    ('rb-16-to-2', _then(_qcow2(io=DATA, cluster_size=4096), _snap()),
     ['-o', 'refcount_bits=2']),
    ('rb-16-to-1', _qcow2(io=DATA, cluster_size=4096), ['-o', 'refcount_bits=1']),
    ('rb-16-to-64', _qcow2(size='4M', io=DATA, cluster_size=512), ['-o', 'refcount_bits=64']),
    ('rb-4-to-64-upgrade', _qcow2(io=DATA, refcount_bits=4, cluster_size=4096),
     ['-o', 'refcount_bits=64,lazy_refcounts=on']),
    ('rb-2-downgrade', _qcow2(io=ZEROS, refcount_bits=2, cluster_size=4096),
     ['-o', 'refcount_bits=16,compat=0.10']),
    ('v2-up-rb8', _qcow2(io=DATA, compat='0.10'), ['-o', 'compat=1.1,refcount_bits=8']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in FAULT_CASES],
                         ids=[c[0] for c in FAULT_CASES])
def test_amend_cut_at_every_write(tmp_path, build, args):
    """qimg cut after its n-th write (QIMG_FAULT_AFTER_WRITES=n) for every n: what is left
    is no corrupt image to the real qemu-img check (leaks allowed: a cut between an
    allocation and the write that uses it leaks, as a crash of qemu's amend does)."""
    orig = build_orig(tmp_path, build)
    n = cut_at_every_write(tmp_path, orig, 'amend', [*args, 'img'], no_corruption('img'),
                           limit=2000)
    assert n > 1


# -- --dry-run and --journal (beyond qemu-img) -----------------------------------------------

PORT_CASES = [
    ('upgrade', _then(_qcow2(io=DATA, compat='0.10'), _snap()), ['-o', 'compat=1.1']),
    ('downgrade-zeros-backing', _backed(top_io=ZEROS), ['-o', 'compat=0.10']),
    ('downgrade-zeros-snap', _then(_qcow2(io=ZEROS), _snap(), _io('write -z 64k 64k')),
     ['-o', 'compat=0.10']),
    ('downgrade-zeros-snap-unshared', _then(_qcow2(io=ZEROS), _snap(), _io('write -z 64k 64k'),
                                            lambda d: qemu.qemu_img('snapshot', '-d', 's1',
                                                                    os.path.join(d, 'img'),
                                                                    check=True)),
     ['-o', 'compat=0.10']),
    ('lazy-on', _qcow2(io=DATA), ['-o', 'lazy_refcounts=on']),
    ('rb-16-to-2', _qcow2(io=DATA, cluster_size=4096), ['-o', 'refcount_bits=2']),
    ('rb-16-to-64-c512', _qcow2(size='4M', io=DATA, cluster_size=512),
     ['-o', 'refcount_bits=64']),
    ('bitmap-rb', _then(_qcow2(io=DATA), _bitmap()), ['-o', 'refcount_bits=8']),
    ('size', _qcow2(io=DATA), ['-o', 'size=5M']),
    ('no-change', _qcow2(io=DATA), ['-o', 'compat=1.1']),
]


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_amend_dry_run_writes_nothing(tmp_path, build, args):
    orig = build_orig(tmp_path, build)
    rc, out, err = dry_run(tmp_path, orig, 'amend', [*args, 'img'])
    assert (rc, err) == (0, '')
    assert out.startswith("Amend plan for 'img' (dry run, nothing was written): ")
    # the plan lists writes exactly when the real amend changes the file
    _, changed = real_run_changes(tmp_path, orig, 'amend', [*args, 'img'])
    assert (len(out.splitlines()) > 1) == changed


@pytest.mark.parametrize('build,args', [c[1:] for c in PORT_CASES],
                         ids=[c[0] for c in PORT_CASES])
def test_amend_journal_then_undo(tmp_path, request, build, args):
    orig = build_orig(tmp_path, build)
    d, ref, before, jr, ra, rb = journal_pair(tmp_path, orig, 'amend', [*args, 'img'],
                                              'amend.journal')
    assert rb == ra
    if 'snap' not in request.node.callspec.id:
        assert read_all(d) == read_all(ref)   # the journaled amend is qemu's
    ok, detail = qemu.is_clean_by_qemu('img', cwd=d)
    assert ok, detail
    undo_restores(jr, 'img', d, before)


def test_amend_dry_run_and_journal_refusals(tmp_path):
    d = str(tmp_path)
    qemu.make_image(os.path.join(d, 'img'), size='1M', data_file='img.data')
    before = read_all(d)
    rc, out, err = qemu.qimg('amend', '--dry-run', '-o', 'data_file=x', 'img', cwd=d)
    assert rc == 1 and 'not supported for images with an external data file' in err
    rc, out, err = qemu.qimg('amend', '--dry-run', '--journal', 'j', '-o', 'compat=1.1',
                             'img', cwd=d)
    assert rc == 1 and '--dry-run and --journal cannot be used together' in err
    assert read_all(d) == before


def test_amend_journal_cut_then_undo(tmp_path):
    """--journal cut at every write: undo restores the original bytes each time."""
    orig = build_orig(tmp_path, _qcow2(io=ZEROS, refcount_bits=4, cluster_size=4096))
    n = journal_cut_then_undo(tmp_path, orig, 'amend',
                              ['-o', 'refcount_bits=16,compat=0.10', 'img'], limit=2000)
    assert n > 1


def test_amend_downgrade_unknown_header_fields(tmp_path):
    """A v3 header longer than qemu knows (header_length 120): qemu 7.2's downgrade writes
    the unknown bytes right after the 72-byte v2 header, where v2 readers look for
    extensions, and cannot open its own result ("Header extension too large"). qimg drops
    them (a v2 header has no length to keep them under): a clean v2 image."""
    import struct
    d = str(tmp_path)
    p = os.path.join(d, 'img')
    qemu.make_image(p, size='1M')
    qemu.write_pattern(p, 0x33, 0, 64 * KIB)
    f = bytearray(open(p, 'rb').read())
    f[120:65536] = f[112:65536 - 8]
    f[112:120] = b'\xaa' * 8
    f[100:104] = struct.pack('>I', 120)
    open(p, 'wb').write(f)
    a = qemu.copy_dir(d, str(tmp_path / 'qemu'))
    assert qemu.run(qemu.QEMU_IMG, 'amend', '-o', 'compat=0.10', 'img', cwd=a)[0] == 0
    rc, _, err = qemu.qemu_img('info', 'img', cwd=a)
    assert rc == 1 and 'Header extension too large' in err
    rc, out, err = qemu.qimg('amend', '-o', 'compat=0.10', 'img', cwd=d)
    assert (rc, out, err) == (0, '', '')
    ok, detail = qemu.is_clean_by_qemu('img', cwd=d)
    assert ok, detail
    rc, out, _ = qemu.qemu_img('info', '--output=json', 'img', cwd=d)
    assert qemu.parse_json(out)['format-specific']['data']['compat'] == '0.10'
    rc, out, _ = qemu.qemu_io('-c', 'read -P 0x33 0 64k', 'img', cwd=d)
    assert rc == 0 and 'Pattern verification failed' not in out
