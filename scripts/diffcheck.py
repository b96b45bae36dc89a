#!/usr/bin/python3
"""Differential fuzzing against the real qemu-img: damage the metadata of images made by
qemu-img at random (1-3 mutations: a bit, a byte or a whole 8-byte word set to a value
that matters: 0, an aligned offset inside or past the file, an unaligned one, a flag), then
run the read-only commands with both tools and compare everything a script would see:
exit code, stdout and stderr (qimg runs as `qemu-img` through a symlink, so its message
prefix is the same), for `check`, `check --output=json` (qemu's fields; qimg's extra
`findings` dropped), `info --output=json`, `map --output=json` and `compare` with the
undamaged image.

    scripts/diffcheck.py [--seconds N] [--seed S] [--out DIR] [--only A,B] [--repair]

With --repair, images with persistent bitmaps can differ by design: qemu-img rewrites the
header and stores the bitmaps again when it opens and closes an image read-write, which
incidentally drops a broken snapshot table or moves a bitmap table that lay past EOF (README,
"Header rewrite on open"); qimg writes only its plan.

Each mismatch is kept in DIR (default build/diffcheck) as the damaged image plus a .txt
with both outputs; the exit status is 1 if there was any. Cases where qemu-img itself
times out or crashes are skipped (counted). Not a test: run it by hand, turn what it finds
into tests/py regressions.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'py'))
import qcow2poke  # noqa: E402

QEMU_IMG = shutil.which('qemu-img') or '/usr/bin/qemu-img'
QEMU_IO = shutil.which('qemu-io') or '/usr/bin/qemu-io'
QIMG = os.path.abspath(os.environ.get('QIMG', os.path.join(ROOT, 'build', 'qimg')))
TIMEOUT = 20


def sh(*cmd, cwd=None):
    subprocess.run([str(c) for c in cmd], check=True, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def base_images(d):
    """Small images covering the layouts check walks (name -> path)."""
    def create(name, size, opts, writes=(), snaps=(), post=None):
        p = os.path.join(d, name)
        sh(QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-o', opts, p, size, cwd=d)
        for i, group in enumerate([writes] + [s for s in snaps]):
            if i:
                sh(QEMU_IMG, 'snapshot', '-c', 'snap%d' % i, p)
            if group:
                args = []
                for w in group:
                    args += ['-c', w]
                sh(QEMU_IO, '-f', 'qcow2', *args, p, cwd=d)
        if post:
            post(p)
        return p

    w = ['write -P 1 0 64k', 'write -P 2 1M 128k', 'write -z 3M 64k', 'write -P 3 5M 4k']
    imgs = {
        'plain64k': create('plain64k.qcow2', '8M', 'cluster_size=65536', w),
        'c512': create('c512.qcow2', '2M', 'cluster_size=512', ['write -P 1 0 8k',
                       'write -P 2 300k 3k', 'write -z 1M 4k']),
        'c4k_snap': create('c4k_snap.qcow2', '16M', 'cluster_size=4096',
                           ['write -P 1 0 64k', 'write -P 2 8M 16k'],
                           snaps=[['write -P 5 4k 8k'], ['write -P 6 8M 4k']]),
        'v2': create('v2.qcow2', '8M', 'compat=0.10', w[:2] + ['write -P 3 5M 4k'],
                     snaps=[['write -P 4 0 4k']]),
        'rc1': create('rc1.qcow2', '8M', 'refcount_bits=1', w),
        'rc64': create('rc64.qcow2', '8M', 'refcount_bits=64', w, snaps=[['write -P 9 0 4k']]),
        'extl2': create('extl2.qcow2', '8M', 'extended_l2=on,cluster_size=65536',
                        ['write -P 1 0 4k', 'write -P 2 70k 8k', 'write -z 1M 4k',
                         'write -P 3 2M 64k']),
        'lazy': create('lazy.qcow2', '8M', 'lazy_refcounts=on', w),
    }
    src = imgs['plain64k']
    for name, ctype in (('zlib', 'zlib'), ('zstd', 'zstd')):
        p = os.path.join(d, name + '.qcow2')
        sh(QEMU_IMG, 'convert', '-c', '-O', 'qcow2', '-o', 'compression_type=' + ctype,
           src, p)
        imgs[name] = p
    imgs['c2m_snap'] = create('c2m_snap.qcow2', '64M', 'cluster_size=2097152',
                              ['write -P 1 0 64k', 'write -P 2 10M 2M'],
                              snaps=[['write -P 3 0 4k']])
    imgs['extl2_snap'] = create('extl2_snap.qcow2', '8M', 'extended_l2=on,cluster_size=32768',
                                ['write -P 1 0 4k', 'write -z 64k 2k', 'write -P 2 1M 40k'],
                                snaps=[['write -P 3 2k 1k']])
    base = create('chain_base.qcow2', '8M', 'cluster_size=65536', ['write -P 7 0 1M'])
    imgs['chain_top'] = create('chain_top.qcow2', '8M',
                               'cluster_size=65536,backing_file=%s,backing_fmt=qcow2'
                               % os.path.basename(base), ['write -P 8 64k 64k'])
    imgs['datafile'] = create('datafile.qcow2', '8M', 'data_file=datafile.data',
                              ['write -P 1 0 64k', 'write -P 2 1M 128k'])
    imgs['v2_compressed_snap'] = os.path.join(d, 'v2c.qcow2')
    sh(QEMU_IMG, 'convert', '-c', '-O', 'qcow2', '-o', 'compat=0.10,cluster_size=4096',
       imgs['plain64k'], imgs['v2_compressed_snap'])
    sh(QEMU_IMG, 'snapshot', '-c', 's1', imgs['v2_compressed_snap'])
    sh(QEMU_IO, '-f', 'qcow2', '-c', 'write -P 5 0 8k', imgs['v2_compressed_snap'])
    for fmt, opts in (('qed', 'cluster_size=65536'), ('vdi', 'static=off')):
        p = os.path.join(d, 'base.' + fmt)
        sh(QEMU_IMG, 'create', '-q', '-f', fmt, '-o', opts, p, '8M', cwd=d)
        sh(QEMU_IO, '-f', fmt, '-c', 'write -P 1 0 64k', '-c', 'write -P 2 3M 1M', p, cwd=d)
        imgs[fmt] = p
    bm = create('bitmap.qcow2', '8M', 'cluster_size=65536', w)
    sh(QEMU_IMG, 'bitmap', '--add', bm, 'b0')
    sh(QEMU_IMG, 'bitmap', '--add', '-g', '128k', bm, 'b1')
    imgs['bitmap'] = bm
    return imgs


def regions(path):
    """(name, offset, length) of every metadata structure of a pristine image."""
    out = []
    if not path.endswith('.qcow2'):
        # qed / vdi: the header and the tables behind it (the first 1 MiB of the file)
        return [('head', 0, min(os.path.getsize(path), 1 << 20))]
    with qcow2poke.Qcow2(path, writable=False) as q:
        cs = q.cs
        hl = q.h['header_length'] if q.h['version'] >= 3 else 72
        out.append(('header', 0, hl))
        ext_end = max([o + l for _, o, l in q.extensions] + [hl])
        out.append(('extensions', hl, ext_end - hl + 8))
        out.append(('l1', q.l1_table_offset, 8 * q.l1_size))
        for i, e in enumerate(q.l1_table()):
            off = e & qcow2poke.L1E_OFFSET_MASK
            if off:
                out.append(('l2[%d]' % i, off, cs))
        out.append(('reftable', q.refcount_table_offset, q.refcount_table_clusters * cs))
        for i in range(q.reftable_size()):
            off = q.rt_entry(i) & qcow2poke.REFT_OFFSET_MASK
            if off:
                out.append(('refblock[%d]' % i, off, cs))
        if q.nb_snapshots:
            out.append(('snaptable', q.snapshots_offset, q.snapshot_table_size()))
            for s in q.snapshots():
                out.append(('snap-l1[%s]' % s.id_str, s.l1_table_offset,
                            8 * s.l1_size))
        bm = q.find_extension(0x23852875)
        if bm:
            raw = q.pread(bm[0], 24)
            dir_size = int.from_bytes(raw[8:16], 'big')
            dir_off = int.from_bytes(raw[16:24], 'big')
            out.append(('bitmap-dir', dir_off, dir_size))
    return [r for r in out if r[2] > 0]


def mutate(path, regs, rnd):
    """1-3 random mutations inside the regions; returns their description."""
    done = []
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        for _ in range(rnd.choice((1, 1, 2, 3))):
            name, off, length = rnd.choice(regs)
            kind = rnd.choice(('bit', 'byte', 'word', 'word', 'word'))
            if kind == 'word' and length >= 8:
                at = off + rnd.randrange(length // 8) * 8
                f.seek(at)
                old = int.from_bytes(f.read(8), 'big')
                cs = 1 << 16
                v = rnd.choice((
                    0, 1, old ^ (1 << 63), old ^ (1 << 62), old ^ 1,
                    old + 512, old - 512 if old >= 512 else old + 4096,
                    (old & ~0xffff) + rnd.randrange(0, size, 512),
                    rnd.randrange(0, size, 512), size + rnd.randrange(0, 1 << 20, 512),
                    (1 << 63) | rnd.randrange(0, size, cs), old ^ rnd.getrandbits(64),
                    0xffffffffffffffff, old * 2))
                v &= 0xffffffffffffffff
                f.seek(at)
                f.write(v.to_bytes(8, 'big'))
                done.append('%s word @0x%x: 0x%x -> 0x%x' % (name, at, old, v))
            else:
                at = off + rnd.randrange(length)
                f.seek(at)
                old = f.read(1)[0]
                v = old ^ (1 << rnd.randrange(8)) if kind == 'bit' else rnd.randrange(256)
                f.seek(at)
                f.write(bytes([v]))
                done.append('%s byte @0x%x: 0x%02x -> 0x%02x' % (name, at, old, v))
    return done


def run(tool, args, cwd):
    try:
        p = subprocess.run([tool] + args, cwd=cwd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=TIMEOUT,
                           env=dict(os.environ, LC_ALL='C'))
    except subprocess.TimeoutExpired:
        return ('timeout', '', '')
    return (p.returncode, p.stdout.decode('utf-8', 'replace'),
            p.stderr.decode('utf-8', 'replace'))


def normalize_json(cmd, r):
    if 'json' not in ' '.join(cmd) or r[0] == 'timeout':
        return r
    try:
        d = json.loads(r[1])
    except ValueError:
        return r
    if isinstance(d, dict):
        d.pop('findings', None)
        d.pop('findings-omitted', None)
    return (r[0], json.dumps(d, sort_keys=True), r[2])


COMMANDS = (['check'], ['check', '--output=json'], ['info', '--output=json'],
            ['map', '--output=json'], ['compare', 'orig{ext}'])


def repair_case(img, case_dir, alias):
    """--repair: `check -r all` by each tool on its own copy, then the real qemu-img judges
    both results. A mismatch: qimg's result checks worse than qemu-img's (exit 0 clean,
    3 leaks, 2 corruptions, 1 not checkable: in that order of badness), or both are clean
    and the guest sees different bytes (qemu-img compare). None if qemu-img timed out."""
    a = os.path.join(case_dir, 'a.qcow2')
    b = os.path.join(case_dir, 'b.qcow2')
    shutil.copyfile(img, a)
    shutil.copyfile(img, b)
    rq = run(QEMU_IMG, ['check', '-r', 'all', 'a.qcow2'], case_dir)
    if rq[0] == 'timeout' or rq[0] < 0:
        return None
    ri = run(alias, ['check', '-r', 'all', 'b.qcow2'], case_dir)
    if ri[0] == 'timeout' or ri[0] < 0:
        return ('repair', rq, ri)
    ja = run(QEMU_IMG, ['check', 'a.qcow2'], case_dir)
    jb = run(QEMU_IMG, ['check', 'b.qcow2'], case_dir)
    if 'timeout' in (ja[0], jb[0]):
        return None
    bad = {0: 0, 3: 1, 2: 2, 1: 3}
    if bad.get(jb[0], 4) > bad.get(ja[0], 4):
        return ('check after repair', ja, jb)
    if ja[0] == 0 and jb[0] == 0:
        c = run(QEMU_IMG, ['compare', '-f', 'qcow2', '-F', 'qcow2', 'a.qcow2', 'b.qcow2'],
                case_dir)
        if c[0] == 1:      # 1: differ; 2-4: open/read errors on both sides (unreadable data)
            return ('guest bytes after repair', c, ri)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=float, default=300)
    ap.add_argument('--seed', type=int, default=int(time.time()))
    ap.add_argument('--out', default=os.path.join(ROOT, 'build', 'diffcheck'))
    ap.add_argument('--only', help='comma-separated base image names (default: all)')
    ap.add_argument('--repair', action='store_true',
                    help='compare check -r all results instead of the read-only commands')
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    work = tempfile.mkdtemp(prefix='diffcheck-')
    alias = os.path.join(work, 'qemu-img')
    os.symlink(QIMG, alias)
    os.makedirs(a.out, exist_ok=True)
    bases = base_images(work)
    regs = {k: regions(p) for k, p in bases.items()}
    cases = mismatches = skipped = 0
    names = sorted(k for k in bases if (not a.repair or bases[k].endswith('.qcow2')) and
                   (not a.only or k in a.only.split(',')))
    end = time.time() + a.seconds
    case_dir = os.path.join(work, 'case')
    os.makedirs(case_dir)
    for aux in ('chain_base.qcow2', 'datafile.data'):   # backing file, external data file
        shutil.copyfile(os.path.join(work, aux), os.path.join(case_dir, aux))
    while time.time() < end:
        name = rnd.choice(names)
        img = os.path.join(case_dir, 'img' + os.path.splitext(bases[name])[1])
        shutil.copyfile(bases[name], img)
        if not a.repair:   # the undamaged image, for compare
            shutil.copyfile(bases[name], os.path.join(case_dir, 'orig' + os.path.splitext(img)[1]))
        what = mutate(img, regs[name], rnd)
        cases += 1
        if a.repair:
            r = repair_case(img, case_dir, alias)
            if r is None:
                skipped += 1
            elif r:
                mismatches += 1
                tag = 'repair-%s-%d-%d' % (name, a.seed, cases)
                shutil.copyfile(img, os.path.join(a.out, tag + '.qcow2'))
                with open(os.path.join(a.out, tag + '.txt'), 'w') as f:
                    f.write('base %s\n%s\nrepair: %s\n\n' % (name, '\n'.join(what), r[0]))
                    for who, res in (('qemu-img side', r[1]), ('qimg side', r[2])):
                        f.write('== %s rc=%s\n-- stdout\n%s\n-- stderr\n%s\n'
                                % (who, res[0], res[1], res[2]))
                print('MISMATCH %s: %s (%s)' % (tag, r[0], '; '.join(what)), flush=True)
            continue
        for cmd in COMMANDS:
            ext = os.path.splitext(img)[1]
            args = [c.format(ext=ext) for c in cmd] + [os.path.basename(img)]
            rq = run(QEMU_IMG, args, case_dir)
            if rq[0] == 'timeout' or (isinstance(rq[0], int) and rq[0] < 0):
                skipped += 1
                break
            ri = run(alias, args, case_dir)
            if normalize_json(cmd, rq) != normalize_json(cmd, ri):
                mismatches += 1
                tag = '%s-%d-%d' % (name, a.seed, cases)
                shutil.copyfile(img, os.path.join(a.out, tag + os.path.splitext(img)[1]))
                with open(os.path.join(a.out, tag + '.txt'), 'w') as f:
                    f.write('base %s\n%s\ncommand: %s\n\n' % (name, '\n'.join(what),
                                                              ' '.join(args)))
                    for who, r in (('qemu-img', rq), ('qimg', ri)):
                        f.write('== %s rc=%s\n-- stdout\n%s\n-- stderr\n%s\n'
                                % (who, r[0], r[1], r[2]))
                print('MISMATCH %s: %s (%s)' % (tag, ' '.join(cmd), '; '.join(what)),
                      flush=True)
                break
    shutil.rmtree(work, True)
    print('diffcheck seed %d: %d cases, %d mismatches, %d skipped (qemu-img timeout/crash)'
          % (a.seed, cases, mismatches, skipped))
    return 1 if mismatches else 0


if __name__ == '__main__':
    sys.exit(main())
