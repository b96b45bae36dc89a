"""Key order of check --output=json: qemu's own keys in qemu-img's order (its QDict hash
order), each of qimg's findings in one fixed order (kind, severity, fixable-by, message,
then where and what), and the dry run's repair-plan writes likewise (op, offset, length,
class, reason). Runs over every injector case."""

import json

import pytest

import injector
import qemu
from conftest import case_params

FIRST = ['kind', 'severity', 'fixable-by', 'message']
LOCATIONS = ['host-offset', 'size', 'cluster', 'entry', 'entry-offset', 'l1-index',
             'l2-index', 'refcount-table-index', 'guest-offset', 'guest-length', 'expected',
             'found', 'snapshot-index', 'snapshot-id', 'error']
PLAN = ['op', 'offset', 'length', 'class', 'reason']
QIMG_ONLY = {'findings', 'findings-omitted', 'repair-plan'}


def ordered(out):
    return json.loads(out, object_pairs_hook=lambda pairs: pairs)


def keys(pairs):
    return [k for k, _ in pairs]


def check_finding_order(f):
    ks = keys(f)
    assert ks[:3] == FIRST[:3], ks
    rest = ks[3:]
    if rest and rest[0] == 'message':
        rest = rest[1:]
    assert set(rest) <= set(LOCATIONS), ks
    assert rest == [k for k in LOCATIONS if k in rest], ks


@pytest.mark.parametrize('case', case_params(injector.CASES))
def test_check_json_key_order(case, image_factory):
    image_factory(case)
    f = image_factory.filename
    d = image_factory.orig
    rq, oq, _ = qemu.qemu_img('check', '--output=json', f, cwd=d)
    ri, oi, ei = qemu.qimg('check', '--output=json', f, cwd=d)
    assert ri == rq, ei
    if not oq.strip():
        return    # qemu could not open the image: no JSON on either side
    top_q = ordered(oq)
    top_i = ordered(oi)
    # qemu's keys: same keys, same order; qimg adds its own after them
    assert [k for k in keys(top_i) if k not in QIMG_ONLY] == keys(top_q)
    findings = dict(top_i)['findings']
    q = dict(top_q)
    if q.get('corruptions') or q.get('leaks'):
        assert findings, 'qemu counts damage, qimg lists no finding'
    for fd in findings:
        check_finding_order(fd)


@pytest.mark.parametrize('name', ['leak_orphan_cluster_at_eof', 'refcount_zero_data',
                                  'copied_cleared_l2'])
def test_dry_run_plan_order(name, image_factory):
    image_factory(next(c for c in injector.CASES if c.name == name))
    f, d = image_factory.filename, image_factory.orig
    path = '%s/%s' % (d, f)
    before = open(path, 'rb').read()
    rc, out, err = qemu.qimg('check', '-r', 'all', '--dry-run', '--output=json', f, cwd=d)
    assert rc in (2, 3), err   # the plain check's exit code: damage found
    top = dict(ordered(out))
    assert top['repair-plan'], out
    for w in top['repair-plan']:
        assert keys(w) == PLAN, w
    for fd in top['findings']:
        check_finding_order(fd)
    assert open(path, 'rb').read() == before
