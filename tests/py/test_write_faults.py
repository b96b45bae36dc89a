"""Crash safety of qimg's writes: qimg-io killed after each of its file writes.

QIMG_FAULT_AFTER_WRITES=N makes the process _exit(86) right after its Nth completed write,
truncate or fallocate (src/io/file.c; one count for the image and its data file). A mixed
workload per layout (allocating writes that allocate L2 tables and refblocks, overwrites,
copy-on-write from snapshots and backing files, zero writes with and without unmap,
discards, a compressed write, a flush in the middle; with 512-byte clusters and 64-bit
refcounts the reftable grows) runs with N = 1, 2, ... until qimg-io completes. After each
cut:
  - the real `qemu-img check` finds no corruption (leaks are allowed: exit 0 or 3); a
    lazy_refcounts image left dirty is first opened read-write by the real qemu-io, which
    rebuilds its refcounts as qemu does on the next open (qcow2_do_open), and checked after;
    no other layout may be left dirty, none corrupt;
  - every byte reads as in one of the states the cut may leave: the real qemu-io's guest
    bytes after each prefix of the workload, from the last durable one to the one after the
    command in flight. qemu-io's default cache mode, writethrough, flushes after each write
    (qimg-io does the same), so a write whose "wrote ..." line was printed is durable, as is
    everything before a flush that returned; a returned discard is not (see window()).
Besides the fixed workloads, random differential scripts are cut the same way (3 at scale 1,
more with QIMG_WRITEDIFF_SCALE), and seeds that once found writer bugs stay in the list.
"""

import os
import re
import struct

import pytest

import qemu
import writediff
from writediff import KIB, MIB, LAYOUTS


@pytest.fixture(scope='module', autouse=True)
def qimg_io_binary():
    if not os.access(writediff.QIMG_IO, os.X_OK):
        pytest.fail('qimg-io not found at %s (build it with `make`)' % writediff.QIMG_IO)


def workload(layout):
    """The mixed workload for a layout: commands relative to its cluster size."""
    cs = layout.cluster
    far = layout.size // 2 + cs            # another L2 table, also for 512-byte clusters
    w = [
        'write -P 0x11 0 %d' % (3 * cs + 512),           # allocates, first L2 table
        'write -P 0x12 %d %d' % (far, cs),                # another L2 table
        'write -P 0x13 %d 1k' % (cs // 2),                # overwrite in place
        'write -z %d %d' % (cs, cs),                      # zero an allocated cluster
        'write -z -u %d %d' % (2 * cs, cs),               # and unmap one
        'discard %d %d' % (far, cs),
        'write -P 0x15 %d 3000' % (5 * cs + 100),         # copy-on-write head and tail
    ]
    if layout.compressed:                                  # onto an unallocated cluster
        w.append('write -c -P 0x14 %d %d' % (far + 6 * cs, cs))
    w += [
        'flush',
        'write -P 0x21 %d %d' % (cs // 4, cs),            # over flushed data
        'discard %d %d' % (5 * cs, cs),
        'write -z %d %d' % (0, cs // 2),
        'write -P 0x22 %d %d' % (far + 2 * cs, 2 * cs + 512),
        'write -z -u %d %d' % (6 * cs, 2 * cs),
    ]
    if layout.compressed:
        w.append('write -c -P 0x23 %d %d' % (far + 8 * cs, cs))
    return w


def _growth_layout():
    """512-byte clusters, 64-bit refcounts: a refblock covers 32 KiB of host file and the
    reftable's first cluster 2 MiB. The base image ends at 1963 KiB (qemu-img check's image
    end: 2010112), so the workload allocates refblocks and its last writes grow the
    reftable (qemu moves it from 512 to 2130944, two clusters)."""
    name = 'fault-cs512-rc64'
    if name not in LAYOUTS:
        LAYOUTS[name] = writediff.Layout(name, writediff._plain(
            4 * MIB, 'cluster_size=512', 'refcount_bits=64',
            writes=('write -P 0x5a 0 1900k',)), 4 * MIB, cluster=512,
            data=((0, 1900 * KIB),))
    return LAYOUTS[name]


def growth_workload(layout):
    return workload(layout) + ['write -P 0x31 %d 100k' % (3 * MIB), 'flush',
                               'write -P 0x32 %d 4k' % (3 * MIB + 50 * KIB),
                               'write -P 0x33 %d 1k' % (3 * MIB + 200 * KIB)]


CASES = {
    'fault-cs512-rc64': (_growth_layout, growth_workload),
    'cs4k': (lambda: LAYOUTS['cs4k'], workload),
    'compat010-cs4k': (lambda: LAYOUTS['compat010-cs4k'], workload),
    'extl2-cs16k': (lambda: LAYOUTS['extl2-cs16k'], workload),
    'snapshots': (lambda: LAYOUTS['snapshots'], workload),
    'chain': (lambda: LAYOUTS['chain'], workload),
    'lazy': (lambda: LAYOUTS['lazy'], workload),
    'dirty': (lambda: LAYOUTS['dirty'], workload),      # repaired at open, then written
    'datafile-raw': (lambda: LAYOUTS['datafile-raw'], workload),
    'raw': (lambda: LAYOUTS['raw'], workload),
}

CHANGES = ('write', 'discard')                 # commands that change guest data
# the line each completed command prints (flush prints nothing): its first word, or "failed"
DONE_WORD = re.compile(r'^(?:(wrote|discard|read) [0-9]+/[0-9]+ bytes at offset'
                       r'|[a-z]+ (failed): )', re.M)


def changing(script):
    return [c for c in script if c.split()[0] in CHANGES]


def references(layout, script, workdir):
    """qemu-io's guest bytes after each prefix of the data-changing commands."""
    ch = changing(script)
    refs = []
    for k in range(len(ch) + 1):
        rc, out, err, d = writediff.run_tool('qemu', layout, ch[:k], workdir, sync=False)
        data, e = writediff.guest_bytes(layout, d)
        assert data is not None, e
        refs.append(data)
    return refs


def cmd_range(c):
    w = c.split()
    return writediff.parse_size(w[-2]), writediff.parse_size(w[-1])


def header_flags(path):
    with open(path, 'rb') as f:
        h = f.read(80)
    if h[:4] != b'QFI\xfb' or struct.unpack('>I', h[4:8])[0] < 3:
        return 0
    return struct.unpack('>Q', h[72:80])[0]


def judge_cut(layout, script, refs, d, out):
    """None if the image left by a cut is fine, else what is wrong."""
    path = os.path.join(d, layout.image)
    if layout.fmt == 'qcow2':
        incompat = header_flags(path)
        if incompat & 2 and not header_flags(os.path.join(writediff.base_image(layout),
                                                          layout.image)) & 2:
            return 'corrupt bit set'
        if incompat & 1:
            if not layout.lazy:
                return 'dirty bit set on an image without lazy_refcounts'
            # qemu's next read-write open repairs a dirty image (qcow2_do_open)
            rc, o, e = qemu.qemu_io('-f', 'qcow2', '-c', 'read 0 512', layout.image, cwd=d)
            if rc != 0:
                return 'qemu-io cannot open the dirty image: %s' % (o + e)
        rc, j, text = writediff.img_check(layout, d)
        if rc not in (0, 3) or j is None or j.get('corruptions') or j.get('check-errors'):
            return 'qemu-img check: rc %d %s' % (rc, text)
    lo, hi, what = window(script, out)
    data, e = writediff.guest_bytes(layout, d)
    if data is None:
        return 'qemu-img convert failed: %s' % e
    states = refs[lo:hi + 1]
    if any(data == r for r in states):
        return None
    if any(len(data) != len(r) for r in states):
        return 'virtual size %d, expected %d' % (len(data), len(refs[hi]))
    for s in range(0, len(data), 512):
        x = data[s:s + 512]
        if any(x == r[s:s + 512] for r in states):
            continue
        for i in range(len(x)):
            if all(x[i] != r[s + i] for r in states):
                return ('byte %d reads %02x, in none of the states the cut may leave (%s): %s'
                        % (s + i, x[i], what, ' '.join('%02x' % r[s + i] for r in states)))
    return None


def window(script, out):
    """The reference states a cut may leave, as (lo, hi, description): every byte must read
    as in one of refs[lo..hi]. hi: after the command in flight. lo: the last durable state.
    A successful write is durable when it returns (writethrough: qemu-io flushes after it,
    qimg-io too), as is everything before a flush that returned; a discard is not (qemu
    does not flush after it), so its effect may still be undone by a cut until the next
    write or flush returns."""
    results = [a or b for a, b in DONE_WORD.findall(out)]
    k = durable = 0
    flush_k = None
    i = 0
    inflight = None
    for c in script:
        op = c.split()[0]
        if op == 'flush':
            flush_k = k
            continue
        if i == len(results):
            inflight = c
            break
        word = results[i]
        i += 1
        if flush_k is not None:                 # a command after the flush returned
            durable, flush_k = max(durable, flush_k), None
        if op in CHANGES:
            k += 1
            if op == 'write' and word == 'wrote':
                durable = k
    hi = k + (1 if inflight and inflight.split()[0] in CHANGES else 0)
    what = '%d changing commands done, durable up to %d, in flight: %s' % (
        k, durable, inflight or 'close')
    return durable, hi, what


def fault_cases():
    return [pytest.param(name, id=name, marks=writediff.pending_mark('fault:' + name))
            for name in CASES]


def cut_every_write(work, what, layout, script, repro):
    refs = references(layout, script, work)
    env = {}
    n = 0
    failures = []
    while True:
        n += 1
        env['QIMG_FAULT_AFTER_WRITES'] = str(n)
        rc, out, err, d = writediff.run_tool('qimg', layout, script, work, env=env,
                                             sync=False)
        if rc != 86:
            break
        why = judge_cut(layout, script, refs, d, out)
        if why:
            failures.append('cut after write %d: %s' % (n, why))
            if len(failures) >= 5:
                break
        assert n < 20000, 'qimg-io still writing after 20000 writes'
    if not failures:
        # the complete run: every command's data (qemu-io's exit status: failed commands)
        q = writediff.run_tool('qemu', layout, script, work, sync=False)
        assert rc == q[0], 'qimg-io without a cut: rc %d (qemu-io %d)\n%s%s' % (
            rc, q[0], out, err)
        why = judge_cut(layout, script, refs, d, out)
        if why:
            failures.append('after the complete run: %s' % why)
    assert not failures, ('%s, workload (%d writes; QIMG_FAULT_AFTER_WRITES=N qimg-io -f %s '
                          '-c ... %s):\n    %s\n%s\nreproduce: %s' % (
                              what, n, layout.fmt, layout.image, '\n    '.join(script),
                              '\n'.join(failures), repro))


@pytest.mark.parametrize('name', fault_cases())
def test_cut_at_every_write(tmp_path, name):
    make_layout, make_script = CASES[name]
    layout = make_layout()
    cut_every_write(str(tmp_path), 'layout ' + name, layout, make_script(layout),
                    'python3 -m pytest tests/py/test_write_faults.py -k %s' % name)


# -- random scripts, cut at every write ------------------------------------------------------
# The random differential scripts (writediff.case_script) less truncate (it prints nothing,
# so the completed-command count could not see it): 3 cases at scale 1, more with
# QIMG_WRITEDIFF_SCALE.

RANDOM_FAULT_LAYOUTS = ['cs4k', 'snapshots', 'chain-extl2', 'everything', 'cs512', 'datafile',
                        'compressed', 'lazy', 'compat010-cs4k', 'rc64']


# seeds that found writer bugs (F6, F7, F10 of the i11-difftest notes), kept at every scale
FOUND_FAULT_SEEDS = [('chain', 101), ('chain-extl2', 101), ('everything', 101), ('cs64k', 101),
                     ('rc32', 102)]


def random_fault_params():
    cases = []
    for i in range(3 * writediff.SCALE):
        cases.append((RANDOM_FAULT_LAYOUTS[i % len(RANDOM_FAULT_LAYOUTS)],
                      100 + i // len(RANDOM_FAULT_LAYOUTS)))
    cases += [c for c in FOUND_FAULT_SEEDS if c not in cases]
    return [pytest.param(name, seed, id='%s-seed%d' % (name, seed),
                         marks=writediff.pending_mark('fault:%s:%d' % (name, seed)))
            for name, seed in cases]


@pytest.mark.parametrize('name,seed', random_fault_params())
def test_cut_random_script(tmp_path, name, seed):
    layout = LAYOUTS[name]
    script = [c for c in writediff.case_script(layout, seed) if c.split()[0] != 'truncate']
    cut_every_write(str(tmp_path), '%s seed %d' % (name, seed), layout, script,
                    'python3 -m pytest tests/py/test_write_faults.py -k %s-seed%d' % (name, seed))


# -- the judge itself -------------------------------------------------------------------------

def test_judge_catches_lost_and_corrupt(tmp_path):
    """judge_cut fails a cut that lost a completed command's data, and one that qemu-img check
    finds corrupt (so the cases above can fail)."""
    layout = LAYOUTS['cs4k']
    script = workload(layout)
    work = str(tmp_path)
    refs = references(layout, script, work)
    ch = changing(script)
    # the real qemu-io ran 3 commands; claim 4 were done: command 4's zeroing is missing
    rc, out, err, d = writediff.run_tool('qemu', layout, ch[:3], work, sync=False)
    assert rc == 0
    out4 = out + 'wrote 4096/4096 bytes at offset 4096\n'
    assert judge_cut(layout, script, refs, d, out) is None
    why = judge_cut(layout, script, refs, d, out4)
    assert why and 'in none of the states' in why, why
    # an L2 entry pointing at the L1 table: qemu-img check reports corruption
    rc, out, err, d = writediff.run_tool('qemu', layout, ch, work, sync=False)
    path = os.path.join(d, layout.image)
    with open(path, 'r+b') as f:
        h = f.read(48)
        l1 = struct.unpack('>Q', h[40:48])[0]
        f.seek(l1)
        l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
        f.seek(l2)
        f.write(struct.pack('>Q', (1 << 63) | l1))
    why = judge_cut(layout, script, refs, d, out)
    assert why and 'qemu-img check' in why, why
