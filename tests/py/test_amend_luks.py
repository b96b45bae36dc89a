"""amend with --object/--image-opts and LUKS key slot management (encrypt.* options of
LUKS in qcow2, the luks format's options without prefix), against the real qemu-img 7.2:
images made and written by qemu-img/qemu-io, key slots added and erased by qimg, then the
real qemu-io and qimg open them with each password (the new one reads the data, an erased
one is refused); every refusal has qemu-img's stdout/stderr/exit code and leaves the file
untouched. iter-time=10 keeps the PBKDF2 work small."""

import os
import re
import shutil

import pytest

import qemu
from qemu import create_luks, qemu_img, qemu_io, qimg

SECRETS = ['secret,id=sec%d,data=hunter%d' % (i, i) for i in range(4)]
OBJ = [a for s in SECRETS for a in ('--object', s)]

# kind -> (driver, option prefix, create options)
KINDS = {
    'qcow2-luks': ('qcow2', 'encrypt.',
                   'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10'),
    'luks': ('luks', '', 'key-secret=sec0,iter-time=10'),
    # another cipher, IV generator and hash (qemu 7.2 itself cannot make aes-192 volumes:
    # their key material ends inside a sector and its create asserts)
    'luks-aes128-cbc': ('luks', '', 'key-secret=sec0,iter-time=10,cipher-alg=aes-128,'
                        'cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1'),
}

INVALID = 'Invalid password, cannot unlock any keyslot'


def spec(kind, path, sec='sec0'):
    drv, pre, _ = KINDS[kind]
    return 'driver=%s,file.filename=%s,%skey-secret=%s' % (drv, path, pre, sec)


def o(kind, **kw):
    pre = KINDS[kind][1]
    return ','.join('%s%s=%s' % (pre, k.replace('_', '-'), v) for k, v in kw.items())


def make(tmp_path, kind, name='img'):
    drv, _, copt = KINDS[kind]
    path = str(tmp_path / (name + '.' + drv))
    r = create_luks(*OBJ, '-f', drv, '-o', copt, path, '2M')
    assert r[0] == 0, r
    r = qemu_io(*OBJ, '--image-opts', '-c', 'write -P 0x5a 0 64k', spec(kind, path))
    assert r[0] == 0, r
    # the guest bytes as qemu decrypts them (a raw luks volume's unwritten payload too)
    r = qemu_img('convert', *OBJ, '--image-opts', spec(kind, path), '-O', 'raw', path + '.ref')
    assert r[0] == 0, r
    return path


def read_ok(path, kind, sec):
    """qemu-io reads the data with this secret: True, or False when the password is refused"""
    r = qemu_io(*OBJ, '--image-opts', '-c', 'read -P 0x5a 0 64k', spec(kind, path, sec))
    if r[0] == 0 and 'Pattern verification failed' not in r[1]:
        return True
    assert INVALID in r[1] + r[2], r
    return False


def qimg_opens(path, kind, sec):
    """qimg reads the data with this secret: compare with the guest bytes qemu-io wrote"""
    ref = path + '.ref'
    return qimg('compare', *OBJ, '--image-opts', 'driver=raw,file.filename=' + ref,
                spec(kind, path, sec))


def active_slots(path):
    r = qemu_img('info', '--output=json', path)
    assert r[0] == 0, r
    info = qemu.parse_json(r[1])
    enc = info['format-specific']['data']
    slots = (enc['encrypt'] if 'encrypt' in enc else enc)['slots']
    return [i for i, s in enumerate(slots) if s['active']]


def amend(tool, kind, path, opts, *extra, sec='sec0'):
    return tool('amend', *OBJ, '--image-opts', spec(kind, path, sec), '-o', opts, *extra)


def qemu_amend(*args, **kw):
    """qemu-img amend that adds a slot times PBKDF2 like create: retry its CPU clock flake"""
    for _ in range(100):
        r = amend(qemu_img, *args, **kw)
        if r[0] == 0 or 'Unable to get accurate CPU usage' not in r[2]:
            return r
    return r


def norm(r):
    return r[0], r[1], r[2].replace('qimg:', 'qemu-img:')


@pytest.mark.parametrize('kind', sorted(KINDS))
def test_add_and_erase_keyslots(tmp_path, kind):
    path = make(tmp_path, kind)
    r = amend(qimg, kind, path, o(kind, state='active', new_secret='sec1', iter_time=10))
    assert r == (0, '', ''), r
    assert active_slots(path) == [0, 1]
    # qemu-img's own check of the image is clean, both passwords read the data
    assert qemu_img('check', *OBJ, '--image-opts', spec(kind, path))[0] in (0, 63)
    assert read_ok(path, kind, 'sec0') and read_ok(path, kind, 'sec1')
    # an explicit slot, opened with the new password
    r = amend(qimg, kind, path, o(kind, state='active', new_secret='sec2', iter_time=10,
                                  keyslot=5), sec='sec1')
    assert r == (0, '', ''), r
    assert active_slots(path) == [0, 1, 5]
    assert read_ok(path, kind, 'sec2')
    # erase by password: slot 0 goes, its key material is overwritten
    with open(path, 'rb') as f:
        before = f.read()
    r = amend(qimg, kind, path, o(kind, state='inactive', old_secret='sec0'), sec='sec1')
    assert r == (0, '', ''), r
    assert active_slots(path) == [1, 5]
    assert not read_ok(path, kind, 'sec0')
    assert read_ok(path, kind, 'sec1') and read_ok(path, kind, 'sec2')
    r = qimg_opens(path, kind, 'sec0')
    assert r[0] == 2 and r[2].endswith(INVALID + '\n'), r
    assert qimg_opens(path, kind, 'sec2')[:2] == (0, 'Images are identical.\n')
    with open(path, 'rb') as f:
        after = f.read()
    hdr = 0x40000 if KINDS[kind][0] == 'qcow2' else 0   # qemu puts it in cluster 4
    assert after[hdr:hdr + 6] == b'LUKS\xba\xbe'
    slot0 = after[hdr + 208:hdr + 208 + 48]
    assert slot0[:4] == b'\x00\x00\xde\xad' and slot0[4:40] == bytes(36)  # state, iters, salt
    koff = hdr + int.from_bytes(slot0[40:44], 'big') * 512
    assert after[koff:koff + 4096] != before[koff:koff + 4096]
    # erase by slot
    r = amend(qimg, kind, path, o(kind, state='inactive', keyslot=5), sec='sec1')
    assert r == (0, '', ''), r
    assert active_slots(path) == [1]
    assert not read_ok(path, kind, 'sec2')


@pytest.mark.parametrize('kind', ['qcow2-luks', 'luks'])
def test_slot_added_by_qemu_erased_by_qimg(tmp_path, kind):
    path = make(tmp_path, kind)
    r = qemu_amend(kind, path, o(kind, state='active', new_secret='sec2', iter_time=10))
    assert r[0] == 0, r
    assert qimg_opens(path, kind, 'sec2')[:2] == (0, 'Images are identical.\n')
    r = amend(qimg, kind, path, o(kind, state='inactive', old_secret='sec0'), sec='sec2')
    assert r == (0, '', ''), r
    assert active_slots(path) == [1]
    assert read_ok(path, kind, 'sec2') and not read_ok(path, kind, 'sec0')


def test_replace_with_force_and_fill_all_slots(tmp_path):
    kind = 'luks'
    path = make(tmp_path, kind)
    r = amend(qimg, kind, path, o(kind, state='active', new_secret='sec1', keyslot=0))
    assert norm(r) == (1, '', 'qemu-img: Refusing to overwrite active keyslot 0 - please '
                       'erase it first\n')
    r = amend(qimg, kind, path, o(kind, state='active', new_secret='sec1', keyslot=0,
                                  iter_time=10), '--force')
    assert r == (0, '', ''), r
    assert active_slots(path) == [0]
    assert read_ok(path, kind, 'sec1') and not read_ok(path, kind, 'sec0')
    for _ in range(7):
        r = amend(qimg, kind, path, o(kind, state='active', new_secret='sec2', iter_time=10),
                  sec='sec1')
        assert r == (0, '', ''), r
    assert active_slots(path) == list(range(8))
    a = qemu_amend(kind, path, o(kind, state='active', new_secret='sec3', iter_time=10),
                   sec='sec1')
    b = amend(qimg, kind, path, o(kind, state='active', new_secret='sec3', iter_time=10),
              sec='sec1')
    assert norm(b) == a == (1, '', "qemu-img: Can't add a keyslot - all keyslots are in use\n")
    # force erases even the last slot: then no password opens the image
    r = amend(qimg, kind, path, o(kind, state='inactive', old_secret='sec2'), sec='sec1')
    assert r == (0, '', ''), r
    r = amend(qimg, kind, path, o(kind, state='inactive', keyslot=0), sec='sec1')
    assert 'Attempt to erase the only active keyslot 0' in r[2] and r[0] == 1
    r = amend(qimg, kind, path, o(kind, state='inactive', keyslot=0), '--force', sec='sec1')
    assert r == (0, '', ''), r
    assert active_slots(path) == []
    assert not read_ok(path, kind, 'sec1')


# refusals: same stdout, stderr and exit code, the file untouched by either tool
ERRORS = [
    dict(state='foo'),
    dict(keyslot=1),
    dict(state='active'),
    dict(state='active', new_secret='sec9'),
    dict(state='active', new_secret='sec1', keyslot=9),
    dict(state='active', new_secret='sec1', keyslot=-1),
    dict(state='active', new_secret='sec1', keyslot='abc'),
    dict(state='active', new_secret='sec1', keyslot=99999999999),
    dict(state='active', new_secret='sec1', keyslot=18446744073709551615),
    dict(state='active', new_secret='sec1', iter_time='x'),
    dict(state='active', new_secret='sec1', old_secret='sec0'),
    dict(state='active', new_secret='sec1', keyslot=0),
    dict(state='inactive', new_secret='sec1'),
    dict(state='inactive', iter_time=10),
    dict(state='inactive'),
    dict(state='inactive', keyslot=3),
    dict(state='inactive', keyslot=-1),
    dict(state='inactive', keyslot=3, old_secret='sec0'),
    dict(state='inactive', keyslot=0, old_secret='sec1'),
    dict(state='inactive', keyslot=0),
    dict(state='inactive', old_secret='sec0'),
    dict(state='inactive', old_secret='sec1'),
    dict(state='inactive', old_secret='sec9'),
]


@pytest.fixture(scope='module')
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp('orig')
    return {k: make(d, k) for k in ('qcow2-luks', 'luks')}


@pytest.mark.parametrize('kind', ['qcow2-luks', 'luks'])
@pytest.mark.parametrize('kw', ERRORS, ids=lambda kw: ','.join('%s=%s' % i for i in kw.items()))
def test_refusals_as_qemu(tmp_path, originals, kind, kw):
    orig = originals[kind]
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    shutil.copy(orig, a)
    shutil.copy(orig, b)
    ra = amend(qemu_img, kind, a, o(kind, **kw))
    rb = amend(qimg, kind, b, o(kind, **kw))
    assert ra[0] == 1, ra
    assert norm(rb) == ra
    with open(orig, 'rb') as f0, open(b, 'rb') as fb:
        assert f0.read() == fb.read()


OPEN_ERRORS = [
    # (driver args, -o) with %s the image path
    (['%s'], 'encrypt.state=active'),
    (['-f', 'qcow2', '%s'], 'encrypt.state=active'),
    (['--image-opts', 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec1'],
     'encrypt.state=active'),
    (['--image-opts', 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec9'],
     'encrypt.state=active'),
    (['--image-opts', '-f', 'qcow2', 'driver=qcow2,file.filename=%s'], 'encrypt.state=active'),
    (['json:{"driver":"qcow2","file":{"driver":"file","filename":"%s"},'
      '"encrypt.key-secret":"sec1"}'], 'encrypt.state=active'),
    (['--image-opts', 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec0'],
     'encrypt.format=luks'),
    (['--image-opts', 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec0'],
     'encrypt.key-secret=sec0'),
    (['--image-opts', 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec0'], 'help'),
]


@pytest.mark.parametrize('args,opts', OPEN_ERRORS)
def test_qcow2_names_and_options_as_qemu(tmp_path, originals, args, opts):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    shutil.copy(originals['qcow2-luks'], a)
    shutil.copy(originals['qcow2-luks'], b)
    ra = qemu_img('amend', *OBJ, *[x.replace('%s', a) for x in args], '-o', opts)
    rb = qimg('amend', *OBJ, *[x.replace('%s', b) for x in args], '-o', opts)
    assert norm(rb) == (ra[0], ra[1], ra[2].replace(a, b))


@pytest.mark.parametrize('args,opts', [
    (['%s'], 'state=active'),
    (['-f', 'luks', '%s'], 'state=active'),
    (['--image-opts', 'driver=luks,file.filename=%s,key-secret=sec0'], 'size=1M'),
    (['--image-opts', 'driver=luks,file.filename=%s,key-secret=sec0'], 'foo=1'),
    (['--image-opts', 'driver=luks,file.filename=%s,key-secret=sec0'], 'encrypt.state=active'),
    (['--image-opts', 'driver=luks,file.filename=%s,key-secret=sec0'], 'help'),
    (['-f', 'luks'], 'help'),
])
def test_luks_names_and_options_as_qemu(tmp_path, originals, args, opts):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    shutil.copy(originals['luks'], a)
    shutil.copy(originals['luks'], b)
    ra = qemu_img('amend', *OBJ, *[x.replace('%s', a) for x in args], '-o', opts)
    rb = qimg('amend', *OBJ, *[x.replace('%s', b) for x in args], '-o', opts)
    assert norm(rb) == (ra[0], ra[1], ra[2].replace(a, b))


def test_iter_time_overflow_message(tmp_path, originals):
    """a negative iter-time is a huge unsigned one in qemu: its ERANGE error and the hint
    it prints without a final newline (the measured rate differs from run to run)"""
    kind = 'luks'
    pat = (r"^qemu-img: PBKDF iterations \d+ too large to scale: Numerical result out of "
           r"range\nFailed to write to keyslot 1$")
    for tool in (qemu_img, qimg):
        p = str(tmp_path / tool.__name__)
        shutil.copy(originals[kind], p)
        r = amend(tool, kind, p, o(kind, state='active', new_secret='sec1', iter_time=-5))
        if 'Unable to get accurate CPU usage' in r[2]:
            continue   # qemu-img's flake (see qemu.create_luks)
        assert r[0] == 1 and r[1] == '' and re.match(pat, norm(r)[2]), (tool, r)


def test_other_encryption_refused_as_qemu(tmp_path):
    plain = str(tmp_path / 'plain.qcow2')
    qemu.make_image(plain, '1M')
    aes = str(tmp_path / 'aes.qcow2')
    r = qemu_img('create', *OBJ, '-f', 'qcow2', '-o', 'encrypt.format=aes,encrypt.key-secret=sec0',
                 aes, '1M')
    assert r[0] == 0, r
    for args in (['-f', 'qcow2', plain],
                 ['--image-opts', 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec0' % aes]):
        ra = qemu_img('amend', *OBJ, *args, '-o', 'encrypt.state=active,encrypt.new-secret=sec1')
        rb = qimg('amend', *OBJ, *args, '-o', 'encrypt.state=active,encrypt.new-secret=sec1')
        assert ra[0] == 1 and norm(rb) == ra, (ra, rb)


def test_progress_as_qemu(tmp_path, originals):
    kind = 'qcow2-luks'
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    shutil.copy(originals[kind], a)
    shutil.copy(originals[kind], b)
    opts = o(kind, state='active', new_secret='sec1', iter_time=10)
    ra = qemu_amend(kind, a, opts, '-p')
    rb = amend(qimg, kind, b, opts, '-p')
    assert ra[0] == 0 and rb == ra, (ra, rb)
    assert read_ok(b, kind, 'sec1')


@pytest.mark.parametrize('kind', ['qcow2-luks', 'luks'])
def test_dry_run_plans_material_before_header(tmp_path, originals, kind):
    """--dry-run writes nothing and shows the crash-safe order: an added slot's key material
    before the header that activates it; an erase's header before the overwrites"""
    p = str(tmp_path / 'img')
    shutil.copy(originals[kind], p)
    with open(p, 'rb') as f:
        before = f.read()
    hdr = 0x40000 if KINDS[kind][0] == 'qcow2' else 0
    r = amend(qimg, kind, p, o(kind, state='active', new_secret='sec1', iter_time=10),
              '--dry-run')
    assert r[0] == 0 and r[2] == '', r
    lines = r[1].splitlines()
    assert lines[0].startswith("Amend plan for '%s' (dry run, nothing was written)" % p)
    offs = [int(re.search(r'offset (0x[0-9a-f]+)', l).group(1), 16) for l in lines[1:]]
    assert offs[0] > hdr and hdr in offs and offs.index(hdr) > 0, r
    r = amend(qimg, kind, p, o(kind, state='inactive', keyslot=0), '--dry-run', '--force')
    assert r[0] == 0, r
    offs = [int(re.search(r'offset (0x[0-9a-f]+)', l).group(1), 16)
            for l in r[1].splitlines()[1:]]
    assert offs[0] == hdr and len(offs) == 17 and set(offs[1:]) == {hdr + 4096}, r
    with open(p, 'rb') as f:
        assert f.read() == before
    assert active_slots(p) == [0]


@pytest.mark.parametrize('kind', ['qcow2-luks', 'luks'])
def test_journal_refused_for_keyslots(tmp_path, originals, kind):
    p = str(tmp_path / 'img')
    shutil.copy(originals[kind], p)
    j = str(tmp_path / 'j')
    r = amend(qimg, kind, p, o(kind, state='active', new_secret='sec1', iter_time=10),
              '--journal', j)
    assert r[0] == 1 and r[1] == '' and r[2] == (
        'qimg: --journal is not supported for LUKS keyslot changes: the journal would keep '
        'copies of key material\n'), r
    assert not os.path.exists(j)
    assert active_slots(p) == [0]


def test_other_amend_options_of_encrypted_qcow2(tmp_path, originals):
    """--image-opts with a key opens an encrypted qcow2 for the plain amend options too"""
    kind = 'qcow2-luks'
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    shutil.copy(originals[kind], a)
    shutil.copy(originals[kind], b)
    ra = qemu_img('amend', *OBJ, '--image-opts', spec(kind, a), '-o', 'lazy_refcounts=on')
    rb = qimg('amend', *OBJ, '--image-opts', spec(kind, b), '-o', 'lazy_refcounts=on')
    assert ra == rb == (0, '', '')
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        assert fa.read() == fb.read()
    assert read_ok(b, kind, 'sec0')


@pytest.mark.parametrize('kind', ['qcow2-luks', 'luks'])
@pytest.mark.parametrize('op', ['add', 'erase'])
def test_cut_at_every_write(tmp_path, originals, kind, op):
    """qimg killed after its n-th write (QIMG_FAULT_AFTER_WRITES=n) for every n: the real
    qemu-io still opens the image with every password that was to survive (the key material
    lands before the header that activates it; an erase disables the slot before it destroys
    the material), and the changed slot either works or is off, never half there"""
    base = str(tmp_path / 'base')
    shutil.copy(originals[kind], base)
    r = amend(qimg, kind, base, o(kind, state='active', new_secret='sec1', iter_time=10))
    assert r[0] == 0, r
    if op == 'add':
        opts, keep, changed = o(kind, state='active', new_secret='sec2', iter_time=10), \
            ['sec0', 'sec1'], 'sec2'
    else:
        opts, keep, changed = o(kind, state='inactive', old_secret='sec0'), ['sec1'], 'sec0'
    n = 1
    while True:
        p = str(tmp_path / ('cut%d' % n))
        shutil.copy(base, p)
        rc, out, err = qemu.run(qemu.QIMG, 'amend', *OBJ, '--image-opts', spec(kind, p, 'sec1'),
                                '-o', opts, env={'QIMG_FAULT_AFTER_WRITES': str(n)})
        for sec in keep:
            assert read_ok(p, kind, sec), 'cut after write %d: %s lost' % (n, sec)
        works = read_ok(p, kind, changed)
        slots = active_slots(p)
        if op == 'add':
            assert works == (2 in slots), (n, slots)
        else:
            assert works == (0 in slots), (n, slots)
        if kind == 'qcow2-luks':
            c = qemu_img('check', *OBJ, '--image-opts', spec(kind, p, 'sec1'))
            assert c[0] == 0, (n, c)
        os.unlink(p)
        if rc != 86:
            assert rc == 0, err
            assert works == (op == 'add')
            break
        n += 1
        assert n < 100
    assert n > 2
