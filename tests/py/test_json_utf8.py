"""Strings that are not valid UTF-8 in JSON output: qemu's to_json decodes them with
mod_utf8_codepoint and prints each invalid sequence as one \\uFFFD, where a sequence is a bad
byte alone or the bytes before the one that broke it; surrogates, noncharacters and overlong
forms are invalid, C0 80 is NUL. Backing file names of random bytes from a pool of lead,
continuation and impossible bytes, compared with the real qemu-img info --output=json."""

import os
import random
import subprocess

import pytest

POOL = [0xc0, 0x80, 0xc6, 0xe9, 0xf0, 0x9f, 0x98, 0xed, 0xa0, 0xef, 0xbf, 0xbe, 0xf8, 0xfc,
        0xfe, 0xff, 0x41, 0xe0, 0xf4, 0x90, 0xc2, 0xb7, 0xdf, 0xfd, 0x7f, 0x01, 0xb6, 0xf5]


def names(seed, n):
    rnd = random.Random(seed)
    return [bytes(rnd.choice(POOL) for _ in range(rnd.randint(1, 10))) for _ in range(n)]


FIXED = [
    bytes.fromhex('c6e9e8f69ff5f5b6'),   # the data file name of diffcheck case datafile-13-2308
    bytes.fromhex('4180e0c6edbfa0e041e9'),  # a surrogate (ED BF A0)
    bytes.fromhex('c080'),               # modified UTF-8 NUL
    bytes.fromhex('efbfbe41efb790'),     # noncharacters U+FFFE, U+FDD0
    bytes.fromhex('e08080f08080800a'),   # overlong forms
    bytes.fromhex('f09f9880f4908080'),   # U+1F600 (a surrogate pair out), U+110000
    bytes.fromhex('fc8080808080fd'),     # 6-byte forms
]


@pytest.mark.parametrize('seed', range(4))
def test_backing_name_bytes_as_qemu(tmp_path, qimg_binary, seed):
    img = str(tmp_path / 'i.qcow2')
    for name in (FIXED if seed == 0 else []) + names(seed, 40):
        subprocess.run([b'qemu-img', b'create', b'-q', b'-f', b'qcow2', b'-u', b'-b', name,
                        b'-F', b'raw', os.fsencode(img), b'1M'], check=True)
        want = subprocess.run(['qemu-img', 'info', '--output=json', img], capture_output=True)
        got = subprocess.run([qimg_binary, 'info', '--output=json', img], capture_output=True)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout), name.hex()
