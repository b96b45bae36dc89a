"""The qcow2 allocator (src/qcow2/alloc.c) against real qemu 7.2.

The cmocka unit test tests/unit/test_qcow2_alloc.c builds images in memory the way
`qemu-img create` does and replays qemu-io writes in qemu's allocation order through the
allocator; with QIMG_ALLOC_OUT it writes the images it made into that directory. Here:
  - the real `qemu-img check` finds every one of them free of corruption (images whose name
    ends in -leaks may leak clusters by design: failed writes, allocations left unused;
    all others must be clean);
  - the images of the layout scenarios are compared with qemu's own: qemu-img create plus
    the same qemu-io writes and discards on the same geometry must give the same file from the
    second cluster on (header extensions are not the allocator's), the same
    `qemu-img map --output=json`, and the same guest bytes.
The unit binary is the one `make unit` builds beside $QIMG (build/tests/)."""

import json
import os
import struct

import pytest

import qemu

UNIT = os.path.join(os.path.dirname(qemu.QIMG), 'tests', 'test_qcow2_alloc')

# name in the unit test -> (cluster_size, refcount_bits, virtual size, qemu-io commands)
LAYOUTS = {
    'fresh-64k': (65536, 16, '1M', ['write -P 0xcd 0 64k']),
    'fresh-512-r1': (512, 1, '1M', ['write -P 0xcd 0 64k']),
    'growth-512-r64': (512, 64, '4M', ['write -P 0xcd 0 2M']),
    'growth-512-r1': (512, 1, '136M', ['write -P 0xcd 0 130M']),
    'reuse-64k': (65536, 16, '8M', ['write -P 0xcd 0 1M', 'discard 0 128k',
                                    'write -P 0xcd 2M 64k', 'write -P 0xcd 3M 256k']),
}


@pytest.fixture(scope='module')
def unit_images(tmp_path_factory):
    if not os.access(UNIT, os.X_OK):
        pytest.fail('%s not built (make unit)' % UNIT)
    out = tmp_path_factory.mktemp('alloc-out')
    rc, so, se = qemu.run(UNIT, env={'QIMG_ALLOC_OUT': str(out)}, timeout=600)
    assert rc == 0, so + se
    names = sorted(f[:-6] for f in os.listdir(out) if f.endswith('.qcow2'))
    return str(out), names


def test_unit_images_pass_qemu_check(unit_images):
    out, names = unit_images
    # every scenario of the unit test wrote its image, the failure-injection ones included
    assert set(LAYOUTS) <= set(names)
    assert any(n.startswith('eio-alloc-') for n in names)
    assert any(n.startswith('eio-range-') for n in names)
    assert len([n for n in names if n.startswith('crash-alloc-')]) > 5
    assert len([n for n in names if n.startswith('widths-')]) == 7
    for n in names:
        path = os.path.join(out, n + '.qcow2')
        rc, so, se = qemu.qemu_img('check', '--output=json', path)
        assert so.startswith('{'), (n, rc, so, se)
        d = json.loads(so)
        assert not d.get('corruptions') and not d.get('check-errors'), (n, so, se)
        if n.endswith('-leaks'):
            assert rc in (0, 3), (n, rc, so, se)
        else:
            assert rc == 0 and not d.get('leaks'), (n, rc, so, se)


def _header(path):
    with open(path, 'rb') as f:
        h = f.read(64)
    return {
        'cluster_size': 1 << struct.unpack('>I', h[20:24])[0],
        'refcount_table_offset': struct.unpack('>Q', h[48:56])[0],
        'refcount_table_clusters': struct.unpack('>I', h[56:60])[0],
    }


@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_layout_matches_qemu(unit_images, tmp_path, name):
    out, _ = unit_images
    cs, rbits, size, cmds = LAYOUTS[name]
    ref = str(tmp_path / 'qemu.qcow2')
    qemu.make_image(ref, size=size, cluster_size=cs, refcount_bits=rbits)
    qemu.io(ref, *cmds)
    ours = os.path.join(out, name + '.qcow2')
    assert _header(ours) == _header(ref)
    with open(ref, 'rb') as f:
        a = f.read()
    with open(ours, 'rb') as f:
        b = f.read()
    assert len(a) == len(b)
    # refcount structures, L1/L2 tables and data: byte for byte
    first_diff = next((i for i in range(cs, len(a)) if a[i] != b[i]), None) \
        if a[cs:] != b[cs:] else None
    assert first_diff is None, 'first difference at %#x' % first_diff
    rc1, m1, _ = qemu.qemu_img('map', '--output=json', ref)
    rc2, m2, _ = qemu.qemu_img('map', '--output=json', ours)
    assert rc1 == 0 and rc2 == 0 and m1 == m2
    rc, so, se = qemu.qemu_img('compare', ref, ours)
    assert rc == 0, so + se


@pytest.mark.parametrize('cmd', [['check'], ['info'], ['map'], ['check', '-r', 'all']])
def test_reftable_past_max_length(tmp_path, qimg_binary, cmd):
    """A reftable ending past qemu's BDRV_MAX_LENGTH: qemu's qcow2_refcount_init read fails
    in every open mode, read-only ones included (the model loads it for check and read-write,
    and checks the range for read-only opens)."""
    img = str(tmp_path / 'x.qcow2')
    qemu.make_image(img, size='1M')
    with open(img, 'r+b') as f:
        f.seek(48)
        f.write(struct.pack('>Q', 0x7fffffffc0000000))
    rq, oq, eq = qemu.qemu_img(*cmd, img, cwd=str(tmp_path))
    ri, oi, ei = qemu.qimg(*cmd, img, cwd=str(tmp_path))
    assert 'Could not initialize refcount handling: Input/output error' in eq
    assert (ri, oi, ei.replace('qimg:', 'qemu-img:')) == (rq, oq, eq)
