"""qemu's qcow2 snapshot operations answer ENOTSUP for an image with an external data file,
so info lists no snapshots there whatever the header's snapshot table claims (diffcheck case
datafile-13-2838: nb_snapshots 1 at offset 0). Compared with the real qemu-img, human and
JSON, with the data file present and missing."""

import os
import subprocess

import pytest


@pytest.mark.parametrize('data_present', [True, False])
@pytest.mark.parametrize('nb', [1, 2])
def test_no_snapshots_with_data_file(tmp_path, qimg_binary, data_present, nb):
    img = str(tmp_path / 'e.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'data_file=e.data', img,
                    '8M'], check=True, cwd=tmp_path)
    with open(img, 'r+b') as f:
        f.seek(60)
        f.write(nb.to_bytes(4, 'big'))      # nb_snapshots; snapshots_offset stays 0
    if not data_present:
        os.unlink(tmp_path / 'e.data')
    for fmt in (['--output=json'], []):
        want = subprocess.run(['qemu-img', 'info'] + fmt + [img], capture_output=True)
        got = subprocess.run([qimg_binary, 'info'] + fmt + [img], capture_output=True)
        assert want.returncode == 0
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout)
        assert b'"snapshots"' not in got.stdout and b'Snapshot list' not in got.stdout
