"""pytest configuration and fixtures shared by the differential tests.

QIMG (env) selects the binary under test; default <repo>/build/qimg.
Sanity-check the harness against the oracle itself:
    QIMG=/usr/bin/qemu-img python3 -m pytest -q tests/py -m 'not qemu_repair_broken'
"""

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import qemu  # noqa: E402
import injector  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'qemu_repair_broken: qemu 7.2 own repair of this case is known broken '
        '(digest §13 items 1, 4, 12 and §3.8); the test only requires qimg to leave a clean '
        'image. Deselect with -m "not qemu_repair_broken" when QIMG is qemu-img itself.')
    config.addinivalue_line(
        'markers', 'repair_output: compares the output of the repair run itself with qemu-img')


def pytest_report_header(config):
    return 'qimg under test: %s\noracle: %s / %s' % (qemu.QIMG, qemu.QEMU_IMG, qemu.QEMU_IO)


@pytest.fixture(scope='session')
def qimg_binary():
    if not (os.path.isfile(qemu.QIMG) and os.access(qemu.QIMG, os.X_OK)):
        pytest.fail('qimg binary not found at %s (build it with `make`, or set QIMG)' % qemu.QIMG)
    return qemu.QIMG


@pytest.fixture
def image_factory(tmp_path, qimg_binary):
    """image_factory(case) -> (orig_dir, filename): builds an injector case in
    tmp_path/orig.  image_factory.copy(name) copies orig to tmp_path/<name>."""

    class Factory:
        orig = None
        filename = None

        def __call__(self, case):
            self.orig = str(tmp_path / 'orig')
            self.filename = injector.build_case(case, self.orig)
            return self.orig, self.filename

        def copy(self, name):
            dst = str(tmp_path / name)
            shutil.copytree(self.orig, dst, symlinks=True)
            return dst

        def make(self, name, size='1M', **opts):
            """Plain qemu-img create in tmp_path/<name>/img.qcow2."""
            d = tmp_path / name
            d.mkdir(exist_ok=True)
            p = str(d / 'img.qcow2')
            qemu.make_image(p, size, **opts)
            return p

    return Factory()


def case_params(cases, mark_repair_broken=False):
    """pytest.param list with case-name ids; optionally with the
    qemu_repair_broken marker on the cases tagged so (repair tests only)."""
    out = []
    for c in cases:
        marks = []
        if mark_repair_broken and 'qemu-repair-broken' in c.tags:
            marks.append(pytest.mark.qemu_repair_broken)
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


def pytest_collection_modifyitems(config, items):
    """PYTEST_SHARD=i/n keeps every n-th test (from i): `make pytest` runs one shard per core."""
    shard = os.environ.get("PYTEST_SHARD")
    if not shard:
        return
    i, n = (int(x) for x in shard.split("/"))
    keep, drop = [], []
    for k, item in enumerate(items):
        (keep if k % n == i else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
