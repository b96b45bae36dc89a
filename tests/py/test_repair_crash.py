"""Crash safety of `qimg check -r all`: QIMG_FAULT_AFTER_WRITES=N kills qimg (exit 86,
no flush, no cleanup) right after its Nth write to the image.  For every N on several
cases (leaks, raised refcounts, COPIED, a preallocated-zero fix, a snapshot table rewrite,
and refcount rebuilds, including qemu's broken one), the crashed image must be no worse than
before by real qemu-img check (no more corruptions or check errors, still opens), its guest
content must be the original's or the repaired one's, and a second `-r all` must finish
with the same result as an uninterrupted repair."""

import json
import os
import shutil

import pytest

import injector
import qemu

CASES = ['leak_l2_entry_zeroed', 'refcount_too_low_shared', 'copied_cleared_l2_and_leak',
         'unaligned_prealloc_zero', 'snap_extra_data_8', 'refcount_zero_data',
         'refblock_past_eof', 'reftable_reserved_bits']


def counts(d, f):
    rc, js, out, err = qemu.check_json('qemu', f, cwd=d)
    return rc, qemu.check_counts(js), out + err


@pytest.mark.parametrize('name', CASES)
def test_crash_after_every_write(name, image_factory, tmp_path):
    image_factory(injector.BY_NAME[name])
    f = image_factory.filename
    orig = image_factory.orig
    rc0, c0, _ = counts(orig, f)
    sha0, _ = qemu.guest_sha256(f, cwd=orig)

    # the uninterrupted repair, and how many writes it makes
    full = image_factory.copy('full')
    rc, out, err = qemu.check('qimg', f, '-r', 'all', '--dry-run', cwd=full, output='json')
    nwrites = len(json.loads(out)['repair-plan'])
    assert nwrites > 0, out + err
    rc_full, c_full, det_full = counts(full, f)
    qemu.check('qimg', f, '-r', 'all', cwd=full)
    rc_full, c_full, det_full = counts(full, f)
    sha_full, _ = qemu.guest_sha256(f, cwd=full)

    for n in range(1, nwrites + 1):
        d = str(tmp_path / ('crash%d' % n))
        shutil.copytree(orig, d)
        rc, out, err = qemu.run(qemu.qimg_as_qemu_img(), 'check', '-r', 'all', f, cwd=d,
                                env={'QIMG_FAULT_AFTER_WRITES': str(n)})
        assert rc == 86, 'write %d/%d: qimg did not stop (rc %d)\n%s%s' % (n, nwrites, rc, out, err)
        rc1, c1, det = counts(d, f)
        what = '%s after write %d of %d: %s' % (name, n, nwrites, det)
        assert c1 is not None, 'crashed image cannot be checked: ' + what
        if c0 is not None:
            assert c1['corruptions'] <= c0['corruptions'], 'new corruption: ' + what
            assert c1['check-errors'] <= c0['check-errors'], 'new check error: ' + what
        sha1, e1 = qemu.guest_sha256(f, cwd=d)
        if sha0 is not None:
            assert sha1 in (sha0, sha_full), 'guest data changed: ' + what
        # a second repair completes, as the uninterrupted one did
        qemu.check('qimg', f, '-r', 'all', cwd=d)
        rc2, c2, det2 = counts(d, f)
        assert c2 == c_full or (c2 is not None and c_full is not None and
                                c2['corruptions'] <= c_full['corruptions'] and
                                c2['leaks'] <= c_full['leaks'] and
                                c2['check-errors'] <= c_full['check-errors']), \
            'second repair after write %d: %s\nuninterrupted: %s' % (n, det2, det_full)
        assert qemu.guest_sha256(f, cwd=d)[0] == sha_full, 'guest data after second repair: ' + what
