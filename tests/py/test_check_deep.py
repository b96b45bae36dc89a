"""qimg-only deep checks (--deep): each test states what qemu-img says and what qimg says."""
import json
import os
import struct

import qemu


def _mk(tmp_path, *create_args):
    p = str(tmp_path / 'd.qcow2')
    qemu.qemu_img('create', '-f', 'qcow2', *create_args, p, '1M', check=True)
    return p


def test_deep_clean_compressed_image_is_clean(tmp_path):
    src = str(tmp_path / 's.raw')
    with open(src, 'wb') as f:
        f.write(os.urandom(65536) + b'\0' * 65536 + b'\x11' * 65536)
    p = str(tmp_path / 'c.qcow2')
    qemu.qemu_img('convert', '-c', '-O', 'qcow2', src, p, check=True)
    rc, out, err = qemu.qimg('check', '--deep', p)
    assert rc == 0, err


def test_deep_data_file_offset_mismatch(tmp_path):
    p = str(tmp_path / 'd.qcow2')
    qemu.qemu_img('create', '-f', 'qcow2', '-o', 'data_file=df.raw', p, '1M',
                  cwd=str(tmp_path), check=True)
    qemu.qemu_io('-c', 'write -P 0xaa 64k 64k', p, cwd=str(tmp_path), check=True)
    rc, out, _ = qemu.qemu_img('check', '--output=json', p, cwd=str(tmp_path))
    l1 = struct.unpack('>Q', open(p, 'rb').read()[40:48])[0]
    with open(p, 'r+b') as f:
        f.seek(l1)
        l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
        f.seek(l2 + 8)
        e = struct.unpack('>Q', f.read(8))[0]
        f.seek(l2 + 8)
        f.write(struct.pack('>Q', (e & ~0x00fffffffffffe00) | 0x30000))
    rc_q, _, _ = qemu.qemu_img('check', p, cwd=str(tmp_path))
    assert rc_q == 0            # qemu-img: "No errors were found on the image."
    rc_i, _, _ = qemu.qimg('check', p, cwd=str(tmp_path))
    assert rc_i == 0            # without --deep, qimg agrees
    rc_d, out, err = qemu.qimg('check', '--deep', '--output=json', p, cwd=str(tmp_path))
    assert rc_d == 2, err       # with --deep, qimg reports the mismatch
    kinds = [f['kind'] for f in json.loads(out)['findings']]
    assert 'data-file-offset-mismatch' in kinds


def test_deep_corrupt_compressed_cluster(tmp_path):
    src = str(tmp_path / 's.raw')
    with open(src, 'wb') as f:
        f.write(b'\x5a' * 65536)
    p = str(tmp_path / 'c.qcow2')
    qemu.qemu_img('convert', '-c', '-O', 'qcow2', src, p, check=True)
    data = bytearray(open(p, 'rb').read())
    l1 = struct.unpack('>Q', data[40:48])[0]
    l2 = struct.unpack('>Q', data[l1:l1 + 8])[0] & 0x00fffffffffffe00
    e = struct.unpack('>Q', data[l2:l2 + 8])[0]
    coff = e & ((1 << 54) - 1)
    data[coff:coff + 16] = b'\xff' * 16
    open(p, 'wb').write(bytes(data))
    assert qemu.qemu_img('check', p)[0] == 0    # qemu-img never decompresses
    rc, _, err = qemu.qimg('check', '--deep', p)
    assert rc == 2 and 'DEEP compressed cluster' in err
