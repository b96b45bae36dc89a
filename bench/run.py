#!/usr/bin/env python3
"""Side-by-side benchmark of qimg and qemu-img on the same images, in one run.

Writes reports/bench.md: per case, the median wall time of several runs and the peak RSS of
each tool, and the speed-up. Images are built with the real qemu-img/qemu-io in BENCH_DIR
(default build/bench), reused between runs when present. Timing is never asserted in tests.
"""
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QIMG = os.environ.get("QIMG", os.path.join(ROOT, "build", "qimg"))
QEMU_IMG = shutil.which("qemu-img")
QEMU_IO = shutil.which("qemu-io")
BENCH_DIR = os.environ.get("BENCH_DIR", os.path.join(ROOT, "build", "bench"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SHORT_RUNS = int(os.environ.get("BENCH_SHORT_RUNS", "21"))
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))


def sh(*args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, **kw)


def qemu_io(img, *cmds):
    args = [QEMU_IO, "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    sh(*args, img)


TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def timed(cmd, prep=None):
    """Runs prep() untimed, then cmd once; returns (wall seconds, peak RSS KiB, exit code).

    Linux carries a process's RSS high-water mark across fork and exec, so a child forked
    from this Python process reports at least Python's own RSS. GNU time forks the command
    from its own small image, so its %M is the command's real peak."""
    rss_file = os.path.join(BENCH_DIR, ".rss")
    wrap = [TIME, "-q", "-f", "%M", "-o", rss_file] if TIME else []
    if prep:
        prep()
    t0 = time.perf_counter()
    p = subprocess.Popen(wrap + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    rss = ru.ru_maxrss
    if TIME:
        with open(rss_file) as f:
            rss = int(f.read().split()[-1])
    return wall, rss, os.waitstatus_to_exitcode(status)


def measure_pair(cmd_a, cmd_b, prep=None):
    """Both commands, alternating run by run (after one warm-up each, so both read from the
    page cache): whatever else loads the machine loads both alike. prep runs untimed
    before every run. Per command: median wall seconds, peak RSS KiB, sorted exit codes."""
    wa, _, _ = timed(cmd_a, prep)
    wb, _, _ = timed(cmd_b, prep)
    # sub-second cases: a scheduler hiccup moves a median of 5 by 10-20 %, so they get
    # more runs (SHORT_RUNS); long cases keep RUNS
    runs = max(RUNS, SHORT_RUNS) if max(wa, wb) < 1.0 else RUNS
    res = [([], [], set()), ([], [], set())]
    for _ in range(runs):
        for cmd, (walls, rss, rcs) in zip((cmd_a, cmd_b), res):
            w, r, rc = timed(cmd, prep)
            walls.append(w)
            rss.append(r)
            rcs.add(rc)
    return [(statistics.median(w), max(r), sorted(c)) for w, r, c in res]


# --- images ---------------------------------------------------------------------------------

def img_compare_pair():
    """Two 4 GiB qcow2 images with mixed data / zero / unallocated regions, equal content."""
    a = os.path.join(BENCH_DIR, "cmp-a.qcow2")
    b = os.path.join(BENCH_DIR, "cmp-b.qcow2")
    if not (os.path.exists(a) and os.path.exists(b)):
        sh(QEMU_IMG, "create", "-q", "-f", "qcow2", a, "4G")
        cmds = []
        gib = 1 << 30
        for i in range(64):  # 64 regions of 64 MiB; every 4th has 8 MiB data, some zero writes
            off = i * 64 * (1 << 20)
            if i % 4 == 0:
                cmds.append(f"write -P {i % 250 + 1} {off} 8M")
            elif i % 4 == 1:
                cmds.append(f"write -z {off} 16M")
        qemu_io(a, *cmds)
        # b: same content, different cluster size and data laid out via convert
        sh(QEMU_IMG, "convert", "-f", "qcow2", "-O", "qcow2", "-o", "cluster_size=65536", a, b)
        del gib
    return a, b


def img_prealloc_1t():
    p = os.path.join(BENCH_DIR, "prealloc-1t.qcow2")
    if not os.path.exists(p):
        sh(QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", p, "1T")
    return p


def fragmented_image(name, size, cluster_size):
    """Four rounds of 25,000 scattered 4 KiB writes (guest order unrelated to host order),
    a snapshot after each of the first three: most L2 tables exist four times (copied on
    write) and data clusters are shared at refcounts 1 to 4."""
    p = os.path.join(BENCH_DIR, name)
    if not os.path.exists(p):
        tmp = p + ".tmp"
        sh(QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster_size}",
           tmp, str(size))
        blocks = size // 4096
        for snap in range(4):
            lines = []
            for i in range(25000):
                c = (i * 2654435761 + snap * 40503 + 12345) % blocks
                lines.append(f"write -P {(i + snap) % 250 + 1} {c * 4096} 4k")
            lines.append("quit")
            subprocess.run([QEMU_IO, "-f", "qcow2", tmp], input="\n".join(lines).encode(),
                           check=True, stdout=subprocess.DEVNULL)
            if snap < 3:
                sh(QEMU_IMG, "snapshot", "-c", f"s{snap}", tmp)
        os.rename(tmp, p)
    return p


def img_fragmented_snapshots():
    """8 GiB of 4 KiB clusters: about 400 MiB of data, 2.1M host clusters."""
    return fragmented_image("frag-snap-4k.qcow2", 8 << 30, 4096)


def img_fragmented_snapshots_64k():
    """qemu's default 64 KiB clusters over a 1 TiB disk: nearly every write allocates its
    own cluster, and the 2,048 L2 tables are copied on write in each round (about 8,000
    L2 tables, 512 MiB of metadata, 6.5 GB of file)."""
    return fragmented_image("frag-snap-64k.qcow2", 1 << 40, 65536)


def img_convert_mixed(fmt):
    """A 4 GiB disk of 64 regions of 64 MiB: every 4th holds 8 MiB of half-compressible data
    (16 byte values), every 4th after it 4 MiB of random bytes then 4 MiB of written zeros,
    every 4th after that 8 MiB of data with 64 KiB zero gaps, the rest holes; in qcow2 a
    64 MiB zero write on top. Built as raw by Python, then converted by qemu-img."""
    raw = os.path.join(BENCH_DIR, "conv-mixed.raw")
    q = os.path.join(BENCH_DIR, "conv-mixed.qcow2")
    if not os.path.exists(raw):
        import random
        r = random.Random(1)
        mib = 1 << 20
        alphabet = bytes(range(0, 256, 16))
        chunk = bytes(r.choice(alphabet) for _ in range(mib))
        with open(raw + ".tmp", "wb") as f:
            f.truncate(4 << 30)
            for i in range(64):
                f.seek(i * 64 * mib)
                if i % 4 == 0:
                    for k in range(8):
                        f.write(chunk[k * 4096:] + chunk[:k * 4096])
                elif i % 4 == 1:
                    f.write(r.randbytes(4 * mib))
                    f.write(bytes(4 * mib))
                elif i % 4 == 2:
                    for k in range(32):
                        f.write(chunk[:192 * 1024] + bytes(64 * 1024))
        os.rename(raw + ".tmp", raw)
    if not os.path.exists(q):
        sh(QEMU_IMG, "convert", "-O", "qcow2", raw, q + ".tmp")
        qemu_io(q + ".tmp", "write -z 200M 64M")
        os.rename(q + ".tmp", q)
    return raw if fmt == "raw" else q


CONVERT_OUT = os.path.join(BENCH_DIR, "conv-out.img")


def convert_case(src_fmt, *opts):
    return lambda: ["convert", *opts, img_convert_mixed(src_fmt), CONVERT_OUT]


def new_target():
    """Before each convert run, untimed: the previous target deleted and the file system
    synced (its blocks freed, their discards done). Every run then creates its target on
    the same quiet file system; converting over the previous output instead made each run
    pay for truncating the other tool's leftovers (still dirty, or allocated), unequal
    costs that depended on which tool ran before."""
    if os.path.exists(CONVERT_OUT):
        os.unlink(CONVERT_OUT)
    os.sync()


IMAGE_DOCS = {
    "convert": "4 GiB, 64 regions of 64 MiB: every 4th 8 MiB of half-compressible data, every "
               "4th after it 4 MiB random + 4 MiB written zeros, every 4th after that 8 MiB "
               "of data with 64 KiB zero gaps, the rest holes (288 MiB of data); the qcow2 "
               "copy made by qemu-img convert plus a 64 MiB zero write. Each run creates a new "
               "target (conv-out.img; the previous one deleted and the file system synced "
               "before the run, untimed).",
    "compare": "two 4 GiB qcow2 images with equal content, 64 regions of 64 MiB: every 4th "
               "holds 8 MiB of data, every 4th after it a 16 MiB zero write, the rest "
               "unallocated; the second made by convert with 64 KiB clusters.",
    "map": "1 TiB, preallocation=metadata (16.7M clusters of 64 KiB, all mapped).",
    "check": "the same 1 TiB preallocation=metadata image.",
    "check-frag": "8 GiB, 4 KiB clusters, four rounds of 25,000 scattered 4 KiB writes with "
                  "a snapshot after each of the first three (2.1M host clusters).",
    "check-frag64": "1 TiB, 64 KiB clusters, the same writes and snapshots: about 8,000 L2 "
                    "tables (512 MiB of metadata), 100,000 data clusters, 6.6 GB file.",
}

CASES = [
    ("compare 4 GiB mixed", "compare", lambda: ["compare", *img_compare_pair()]),
    ("map --output=json 1 TiB prealloc=metadata", "map",
     lambda: ["map", "--output=json", img_prealloc_1t()]),
    ("check 1 TiB prealloc=metadata", "check", lambda: ["check", img_prealloc_1t()]),
    ("check fragmented 4 KiB clusters + 3 snapshots", "check-frag", lambda: ["check", img_fragmented_snapshots()]),
    ("check fragmented 64 KiB clusters, 1 TiB + 3 snapshots", "check-frag64",
     lambda: ["check", img_fragmented_snapshots_64k()]),
    ("convert qcow2 to raw, 4 GiB mixed", "convert", convert_case("qcow2", "-O", "raw"), new_target),
    ("convert raw to qcow2, 4 GiB mixed", "convert", convert_case("raw", "-O", "qcow2"), new_target),
    ("convert qcow2 to qcow2, 4 GiB mixed", "convert", convert_case("qcow2", "-O", "qcow2"), new_target),
    ("convert -c zlib, 4 GiB mixed", "convert-c", convert_case("qcow2", "-O", "qcow2", "-c"), new_target),
    ("convert -c zstd, 4 GiB mixed", "convert-c",
     convert_case("qcow2", "-O", "qcow2", "-c", "-o", "compression_type=zstd"), new_target),
]


def main():
    os.makedirs(BENCH_DIR, exist_ok=True)
    rows = []
    for title, key, args, *prep in CASES:
        if ONLY and key not in ONLY:
            continue
        a = args()
        q, m = measure_pair([QEMU_IMG, *a], [QIMG, *a], prep[0] if prep else None)
        speed = q[0] / m[0] if m[0] > 0 else float("inf")
        rows.append((title, q, m, speed))
        print(f"{title}: qemu-img {q[0]:.3f}s {q[1]} KiB rc{q[2]} | qimg {m[0]:.3f}s {m[1]} KiB "
              f"rc{m[2]} | {speed:.2f}x", flush=True)
    out = os.path.join(ROOT, "reports", "bench.md")
    # BENCH_ONLY runs keep the other cases' rows from the previous report
    done = {r[0] for r in rows}
    kept = []
    if ONLY and os.path.exists(out):
        titles = [c[0] for c in CASES]
        for line in open(out):
            cells = line.split("|")
            if len(cells) > 2 and cells[1].strip() in titles and cells[1].strip() not in done:
                kept.append(line)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("# Benchmarks: qimg vs qemu-img, same images, one run\n\n")
        f.write(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}. "
                f"qemu-img: {subprocess.run([QEMU_IMG, '--version'], capture_output=True, text=True).stdout.splitlines()[0]}. "
                f"Median of {RUNS} runs ({max(RUNS, SHORT_RUNS)} for cases under a second) after "
                "one warm-up run (page cache warm), the two "
                "tools alternating run by run. "
                "Peak RSS is the maximum over the runs. Produced by `make bench`. "
                f"Load average at the end of the run: {os.getloadavg()[0]:.1f} "
                "(other work on the machine slows both tools alike).\n\n")
        f.write("| case | qemu-img median | qimg median | speed-up | qemu-img peak RSS | qimg peak RSS | exit codes (qemu-img / qimg) |\n")
        f.write("|---|---|---|---|---|---|---|\n")
        for title, q, m, speed in rows:
            f.write(f"| {title} | {q[0]:.3f} s | {m[0]:.3f} s | {speed:.2f}x | {q[1]} KiB | {m[1]} KiB | {q[2]} / {m[2]} |\n")
        f.writelines(kept)
        f.write("\nImages (built once by the real qemu-img/qemu-io in build/bench):\n\n")
        for title, key, *_ in CASES:
            doc = IMAGE_DOCS.get(key)
            if doc:
                f.write(f"- {title}: {doc}\n")
    print("wrote", out)


if __name__ == "__main__":
    sys.exit(main())
