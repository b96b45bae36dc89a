"""info of LUKS images without a key: qcow2's `encrypt:` block and the raw `luks` format's
details (cipher, ivgen, hash, uuid, payload offset, master key iters, key slots) are
qemu-img 7.2's, human and JSON; a damaged LUKS header fails with qemu's message and exit
code; check, map and compare of a raw LUKS volume fail as qemu's do without a key-secret."""

import os
import shutil
import struct

import pytest

import qcow2poke
import qemu

CRYPTO_EXT = 0x0537be77
SLOTS = 208        # key slot i at SLOTS + 48 * i: active, iters, salt[32], key offset, stripes


def create(path, fmt, opts):
    """qemu-img create with a key; qemu-img times its PBKDF on the thread's CPU clock and
    gives up ("Unable to get accurate CPU usage") on a loaded machine: try again."""
    prefix = 'encrypt.' if fmt == 'qcow2' else ''
    o = '%sformat=luks,' % prefix if fmt == 'qcow2' else ''
    o += ','.join('%s%s' % (prefix, kv) for kv in ['key-secret=s0', 'iter-time=10'] + opts)
    r = qemu.create_luks('-q', '-f', fmt, '--object', 'secret,id=s0,data=abc', '-o', o,
                         path, '1M')
    if r[0] == 0:
        return path
    raise AssertionError('qemu-img could not create a LUKS image: %r' % (r,))


VARIANTS = {
    'default': [],
    'aes128-cbc-essiv-sha256': ['cipher-alg=aes-128', 'cipher-mode=cbc', 'ivgen-alg=essiv',
                                'ivgen-hash-alg=sha256'],
    'twofish256-xts-sha512': ['cipher-alg=twofish-256', 'cipher-mode=xts', 'hash-alg=sha512'],
    'cast5-cbc-essiv-md5': ['cipher-alg=cast5-128', 'cipher-mode=cbc', 'ivgen-alg=essiv',
                            'ivgen-hash-alg=md5'],
}


@pytest.fixture(scope='module')
def bases(tmp_path_factory):
    d = tmp_path_factory.mktemp('luks')
    out = {}
    for name, opts in VARIANTS.items():
        out[('luks', name)] = create(str(d / (name + '.luks')), 'luks', opts)
        out[('qcow2', name)] = create(str(d / (name + '.qcow2')), 'qcow2', opts)
    return out


def same_info(path, *extra):
    """info human and JSON, qimg vs qemu-img: stdout, stderr (program name aside) and rc."""
    d, f = os.path.split(path)
    results = []
    for out in ('human', 'json'):
        rq = qemu.run(qemu.tool_path('qemu'), 'info', '--output=' + out, *extra, f, cwd=d)
        ri = qemu.run(qemu.qimg_as_qemu_img(), 'info', '--output=' + out, *extra, f, cwd=d)
        assert ri == rq, '%s\nqemu: %r\nqimg: %r' % (out, rq, ri)
        results.append(rq)
    return results


@pytest.mark.parametrize('variant', sorted(VARIANTS))
@pytest.mark.parametrize('fmt', ['luks', 'qcow2'])
def test_luks_info_matches_qemu(bases, fmt, variant):
    (rc, out, _), (rcj, outj, _) = same_info(bases[(fmt, variant)])
    assert rc == 0 and rcj == 0
    assert 'encrypted: yes' in out
    assert 'payload offset: ' in out and 'master key iters: ' in out and 'slots:' in out
    if 'essiv' in variant:
        assert 'ivgen hash alg: ' in out
    else:
        assert 'ivgen hash alg' not in out
    assert '"cipher-alg"' in outj
    if fmt == 'qcow2':
        assert '    encrypt:\n        ' in out and 'format: luks' in out


def header_offset(path, fmt):
    if fmt == 'luks':
        return 0
    with qcow2poke.open_image(path) as q:
        off, _ = q.find_extension(CRYPTO_EXT)
        return struct.unpack('>Q', q.pread(off, 8))[0]


def poke(path, off, data):
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(data)


def u32(v):
    return struct.pack('>I', v)


# (name, [(offset in the LUKS header, bytes)]): every check qemu applies before it would
# need the key, in its order
MUTATIONS = [
    ('magic', [(0, b'LUKZ')]),
    ('version2', [(6, b'\x00\x02')]),
    ('cipher_name_no_nul', [(8, b'a' * 32)]),
    ('cipher_mode_no_nul', [(40, b'x' * 32)]),
    ('hash_spec_no_nul', [(72, b'h' * 32)]),
    ('payload_in_header', [(104, u32(7))]),
    ('slot3_stripes', [(SLOTS + 48 * 3 + 44, u32(3999))]),
    ('slot0_stripes_zero', [(SLOTS + 44, u32(0))]),
    ('slot2_active_garbage', [(SLOTS + 48 * 2, u32(0x1234))]),
    ('slot0_in_header', [(SLOTS + 40, u32(1))]),
    ('slot7_into_payload', [(SLOTS + 48 * 7 + 40, u32(4030))]),
    ('slots_overlap', [(SLOTS + 48 + 40, u32(8))]),
    ('mode_no_dash', [(40, b'xts\0\0\0\0\0\0\0\0\0\0')]),
    ('mode_unknown', [(40, b'foo-plain64\0')]),
    ('ivhash_unknown', [(40, b'xts-plain64:sha999\0')]),
    ('ivgen_unknown', [(40, b'xts-bogus\0\0\0')]),
    ('essiv_no_hash', [(40, b'xts-essiv\0\0\0')]),
    ('essiv_sha1_aes', [(40, b'xts-essiv:sha1\0')]),
    ('essiv_sha512_aes', [(40, b'xts-essiv:sha512\0')]),
    ('essiv_sha256_ok', [(40, b'xts-essiv:sha256\0')]),
    ('plain_with_hash_ignored', [(40, b'xts-plain64:md5\0')]),
    ('cipher_unknown', [(8, b'des\0')]),
    ('essiv_cast5', [(8, b'cast5\0'), (40, b'cbc-essiv:sha256\0'), (108, u32(16))]),
    ('essiv_cast5_md5_ok', [(8, b'cast5\0'), (40, b'cbc-essiv:md5\0'), (108, u32(16))]),
    ('serpent_essiv_sha1', [(8, b'serpent\0'), (40, b'cbc-essiv:sha1\0'), (108, u32(32))]),
    ('twofish_ecb', [(8, b'twofish\0'), (40, b'ecb-plain\0'), (108, u32(24))]),
    ('empty_mode', [(40, b'-plain64\0')]),
    ('key_bytes_odd', [(108, u32(20))]),
    ('key_bytes_48_aes192', [(108, u32(48))]),
    ('key_bytes_huge', [(108, u32(0x80000001))]),
    ('hash_unknown', [(72, b'sha3\0')]),
    ('uuid_full_binary', [(168, bytes(range(0x80, 0xa8)))]),
    ('iters_max', [(164, u32(0xffffffff)), (SLOTS + 4, u32(0xffffffff))]),
    ('disabled_slot_garbage_iters', [(SLOTS + 48 + 4, u32(12345))]),
]


@pytest.mark.parametrize('fmt', ['luks', 'qcow2'])
@pytest.mark.parametrize('name,pokes', MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_luks_damaged_header_info(bases, tmp_path, fmt, name, pokes):
    p = str(tmp_path / ('img.' + fmt))
    shutil.copyfile(bases[(fmt, 'default')], p)
    base = header_offset(p, fmt)
    for off, data in pokes:
        poke(p, base + off, data)
    same_info(p)
    if fmt == 'luks':
        same_info(p, '-f', 'luks')     # probing aside (magic and version decide it)


def test_qcow2_crypto_ext_too_short(bases, tmp_path):
    p = str(tmp_path / 'img.qcow2')
    shutil.copyfile(bases[('qcow2', 'default')], p)
    with qcow2poke.open_image(p) as q:
        off, _ = q.find_extension(CRYPTO_EXT)
        q.pwrite(off + 8, struct.pack('>Q', 591))
    (rc, _, err), _ = same_info(p)
    assert rc == 1 and 'Request for data outside of extension header' in err


def test_qcow2_crypto_header_past_eof(bases, tmp_path):
    p = str(tmp_path / 'img.qcow2')
    shutil.copyfile(bases[('qcow2', 'default')], p)
    with qcow2poke.open_image(p) as q:
        off, _ = q.find_extension(CRYPTO_EXT)
        q.pwrite(off, struct.pack('>Q', 1 << 40))
    (rc, _, err), _ = same_info(p)
    assert rc == 1 and 'Volume is not in LUKS format' in err


def test_raw_luks_payload_past_eof(bases, tmp_path):
    p = str(tmp_path / 'img.luks')
    shutil.copyfile(bases[('luks', 'default')], p)
    poke(p, 104, u32(0x100000))   # 512 MiB in sectors, the file is about 3 MiB
    # the key slots must still end before it: keep them valid, only the payload moves
    (rc, _, err), _ = same_info(p)
    assert rc == 1 and 'Could not refresh total sector count' in err


@pytest.mark.parametrize('args', [['check'], ['check', '--output=json'], ['check', '-r', 'all'],
                                  ['map'], ['compare', 'img.luks']])
def test_raw_luks_io_needs_key(bases, tmp_path, args):
    p = str(tmp_path / 'img.luks')
    shutil.copyfile(bases[('luks', 'default')], p)
    rq = qemu.run(qemu.tool_path('qemu'), *args, 'img.luks', cwd=str(tmp_path))
    ri = qemu.run(qemu.qimg_as_qemu_img(), *args, 'img.luks', cwd=str(tmp_path))
    assert ri == rq
    assert "Parameter 'key-secret' is required for cipher" in rq[2]
    with open(p, 'rb') as a, open(bases[('luks', 'default')], 'rb') as b:
        assert a.read() == b.read()
