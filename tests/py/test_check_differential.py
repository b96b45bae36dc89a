"""Differential tests for `check`: qimg vs real qemu-img 7.2 on every injector
case and healthy image.  Expected results are never hard-coded; qemu-img is
run live on an identical copy of the image.

qimg is run through a symlink named `qemu-img` so that its message prefix
("<argv0>:") is the same, and both tools run with cwd = the copy's directory
and the same relative file name, so that "filename" and every message
naming the file are byte-identical.
"""

import json
import os

import pytest

import injector
import qemu
from conftest import case_params

ALL = case_params(injector.ALL)


def _ordered(out):
    try:
        return json.loads(out, object_pairs_hook=lambda pairs: pairs)
    except ValueError:
        return None


def _lines(s):
    return s.splitlines()


@pytest.mark.parametrize('case', ALL)
def test_check_json(case, image_factory):
    """Same exit code, same ImageCheck fields and values, same key order,
    same stderr diagnostics."""
    image_factory(case)
    da, db = image_factory.copy('qemu'), image_factory.copy('qimg')
    f = image_factory.filename
    (rc_q, js_q, out_q, err_q), (rc_i, js_i, out_i, err_i) = qemu.check_both_json(da, db, f)

    assert rc_i == rc_q, 'exit code: qimg %d, qemu-img %d\nqemu stderr:\n%s\nqimg stderr:\n%s' % (
        rc_i, rc_q, err_q, err_i)
    if js_q is None:
        # qemu printed no report (open failure, Check failed: ...): neither may qimg
        assert out_i.strip() == out_q.strip()
    else:
        assert js_i is not None, 'qimg printed no JSON report:\n%s' % out_i
        assert qemu.qemu_part(js_i) == js_q, 'ImageCheck fields differ'
        # key order of the qemu-compatible part (QDict hash order, digest §4)
        keys_q = [k for k, _ in _ordered(out_q)]
        keys_i = [k for k, _ in _ordered(out_i) if k in qemu.IMAGE_CHECK_KEYS]
        assert keys_i == keys_q, 'JSON key order differs'
    assert _lines(err_i) == _lines(err_q), 'stderr differs'


@pytest.mark.parametrize('case', ALL)
def test_check_human(case, image_factory):
    """Human output line for line, stdout and stderr, plus exit code."""
    image_factory(case)
    da, db = image_factory.copy('qemu'), image_factory.copy('qimg')
    f = image_factory.filename
    rc_q, out_q, err_q = qemu.check('qemu', f, cwd=da)
    rc_i, out_i, err_i = qemu.check('qimg', f, cwd=db)
    assert rc_i == rc_q, 'exit code: qimg %d, qemu-img %d' % (rc_i, rc_q)
    assert _lines(out_i) == _lines(out_q), 'stdout differs'
    assert _lines(err_i) == _lines(err_q), 'stderr differs'


@pytest.mark.parametrize('case', ALL)
def test_check_does_not_modify(case, image_factory):
    """A check without -r must leave every file of the image untouched
    (qemu opens read-only)."""
    orig, f = image_factory(case)
    d = image_factory.copy('qimg')

    def snapshot(directory):
        out = {}
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), 'rb') as fh:
                out[name] = fh.read()
        return out

    before = snapshot(d)
    qemu.check('qimg', f, cwd=d)
    qemu.check('qimg', f, cwd=d, output='json')
    after = snapshot(d)
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], '%s modified by a plain check' % name


def test_check_quiet_and_cli_errors(image_factory):
    """-q, and the argument errors of digest §4 / §14 #34."""
    c = injector.BY_NAME['leak_l2_entry_zeroed']
    image_factory(c)
    da, db = image_factory.copy('qemu'), image_factory.copy('qimg')
    f = image_factory.filename
    variants = [
        ['-q', f],
        ['-q', '--output=json', f],
        ['--output=xml', f],
        ['-r', 'foo', f],
        [],
        [f, f],
        ['-f', 'qcow2', f],
        ['-f', 'raw', f],
        ['-T', 'bogus', f],
        ['-U', f],
        ['does-not-exist.qcow2'],
    ]
    for v in variants:
        rq = qemu.run(qemu.tool_path('qemu'), 'check', *v, cwd=da)
        ri = qemu.run(qemu.tool_path('qimg'), 'check', *v, cwd=db)
        assert ri == rq, 'check %s: qimg %r vs qemu-img %r' % (' '.join(v), ri, rq)
