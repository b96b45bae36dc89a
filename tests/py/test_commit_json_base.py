"""commit into a base named by a json: backing name (iotest 020's failing commit): the base
is reopened read-write by that name, so a blkdebug filter in it keeps its rules (an ENOSPC
on the first write_aio: "Block job failed: No space left on device"); without rules the
commit lands in the base. Differential against the real qemu-img 7.2, on copies.
"""

import os
import shutil

import pytest

import qemu

ENV = {'TZ': 'UTC'}


def make(d, rules):
    base = os.path.join(d, 't.qcow2.base')
    qemu.qemu_img('create', '-q', '-f', 'qcow2', base, '1M', check=True)
    qemu.io(base, 'write -P 7 0 1M')
    inj = ("'inject-error': [{'event': 'write_aio', 'errno': 28, 'once': true}], "
           if rules else '')
    # relative to the working directory (json: names are not combined with the overlay's
    # directory), so that each tool commits into its own copy
    backing = ("json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', %s'image': "
               "{'driver': 'file', 'filename': 't.qcow2.base'}}}" % inj)
    top = os.path.join(d, 't.qcow2')
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', top, cwd=d,
                  check=True)
    qemu.io(top, 'write -P 9 0 64k', cwd=d)


@pytest.mark.parametrize('rules', [True, False])
def test_commit_into_json_base(tmp_path, rules):
    orig = str(tmp_path / 'orig')
    os.mkdir(orig)
    make(orig, rules)
    res = {}
    for tool in ('qemu', 'qimg'):
        d = str(tmp_path / tool)
        shutil.copytree(orig, d)
        rc, out, err = qemu.run(qemu.tool_path(tool), 'commit', os.path.join(d, 't.qcow2'),
                                cwd=d, env=ENV)
        res[tool] = (rc, out, err.replace(d, 'D'),
                     qemu.guest_sha256(os.path.join(d, 't.qcow2.base')))
    assert res['qimg'] == res['qemu']
    if rules:
        assert res['qimg'][0] == 1
        assert 'Block job failed: No space left on device' in res['qimg'][2]
    else:
        assert res['qimg'][0] == 0 and res['qimg'][1] == 'Image committed.\n'
