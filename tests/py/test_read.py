"""Guest-content tests: what qimg reads from an image equals what qemu-img
reads (`qemu-img convert -O raw`).

qimg has no raw dump command, so the reader is exercised through `compare`
against the conversion, twice: against the sparse conversion (zero ranges
are holes, so metadata settles them) and against a dense copy (every byte
is data, so every range the image does not mark as zero is read and
compared byte for byte, and ranges it marks as zero are checked against
the dense bytes). qemu-img compare must agree, which validates the
conversion itself.
"""

import os

import pytest

import guest_images
import injector
import qemu
from conftest import case_params


def _dense_copy(src, dst):
    """A raw file with every block allocated (no holes)."""
    with open(src, 'rb') as f, open(dst, 'wb') as g:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            g.write(chunk)
        g.flush()
        os.fsync(g.fileno())


def _check_reads(d, f, fmt=None):
    fa = ['-f', fmt] if fmt else []
    qemu.qemu_img('convert', *fa, '-O', 'raw', f, 'guest.raw', cwd=d, check=True)
    _dense_copy(os.path.join(d, 'guest.raw'), os.path.join(d, 'dense.raw'))
    for raw in ('guest.raw', 'dense.raw'):
        for tool in ('qimg', 'qemu'):
            rc, out, err = qemu.run(qemu.tool_path(tool), 'compare', *fa, '-F', 'raw', f, raw,
                                    cwd=d)
            assert (rc, out, err) == (0, 'Images are identical.\n', ''), \
                '%s compare %s %s: rc %d\n%s%s' % (tool, f, raw, rc, out, err)


@pytest.mark.parametrize('name', guest_images.NAMES)
def test_read_catalogue(tmp_path, name):
    d = str(tmp_path / name)
    f = guest_images.build(name, d)
    _check_reads(d, f)


@pytest.mark.parametrize('case', case_params(injector.HEALTHY))
def test_read_healthy_injector_images(case, image_factory):
    d, f = image_factory(case)
    _check_reads(d, f)


def test_read_qcow2_as_raw(tmp_path):
    """-f raw on a qcow2 file reads the file bytes themselves."""
    d = str(tmp_path)
    f = guest_images.build('mixed-64k', d)
    _check_reads(d, f, fmt='raw')
