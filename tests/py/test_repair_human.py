"""The human output of a repair run (stdout and stderr, line for line) equals qemu-img's,
for every injector case whose qemu repair is not known broken, under -r all and -r leaks."""

import pytest

import injector
import qemu
from conftest import case_params

QIMG_BETTER = {'snap_l1_size_too_big'}   # qemu's run fails there (test_repair_improvements)
CASES = case_params([c for c in injector.ALL if 'qemu-repair-broken' not in c.tags
                     and c.name not in QIMG_BETTER])


@pytest.mark.repair_output
@pytest.mark.parametrize('mode', ['all', 'leaks'])
@pytest.mark.parametrize('case', CASES)
def test_repair_human_output(case, mode, image_factory):
    image_factory(case)
    f = image_factory.filename
    dq, di = image_factory.copy('qemu'), image_factory.copy('qimg')
    rq = qemu.check('qemu', f, '-r', mode, cwd=dq)
    ri = qemu.check('qimg', f, '-r', mode, cwd=di)
    info = '\nqemu rc=%d\n%s%s\nqimg rc=%d\n%s%s' % (rq[0], rq[1], rq[2], ri[0], ri[1], ri[2])
    assert ri[0] == rq[0], info
    assert ri[1].splitlines() == rq[1].splitlines(), 'stdout' + info
    assert ri[2].splitlines() == rq[2].splitlines(), 'stderr' + info
