/* The qcow2 allocator and refcount updates (qcow2/alloc.h) on the in-memory backend.
 *
 * Images are made as `qemu-img create` makes them (qemu's qcow2_co_create: header, a
 * one-cluster reftable at cluster 1 naming an empty refblock at cluster 2, then
 * qcow2_alloc_clusters(3 clusters) and the L1 grown by qcow2_grow_l1_table), and guest
 * writes are replayed in qemu's allocation order (per L2 table: the table, then the data
 * clusters). The expected offsets were read from images made by real qemu 7.2:
 *   qemu-img create -f qcow2 -o cluster_size=C,refcount_bits=R x SIZE
 *   qemu-io -c 'write 0 LEN' x
 *   qemu-img map --output=json x; the header and reftable read with od
 * With QIMG_ALLOC_OUT set to a directory, the resulting images are written there as files;
 * tests/py/test_qcow2_alloc.py runs the real `qemu-img check` on them and compares them with
 * qemu's own images (map, reftable, guest bytes). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_format_helpers.h"
#include "format/be.h"
#include "format/qcow2_header.h"
#include "format/qcow2_l2.h"
#include "qcow2/alloc.h"
#include "qcow2/image.h"

#define MEM_MAX ((size_t)512 << 20)

struct img {
    qio_t *q;
    struct qcow2_image m;
    uint64_t l1_off, l1_size, size;
};

static void img_open(struct img *t)
{
    char *err = NULL;
    struct qcow2_open_opts o = { .mode = QCOW2_MODE_RDWR };
    memset(&t->m, 0, sizeof(t->m));
    int rc = qcow2_image_open(&t->m, t->q, "x", &o, &err);
    if (rc < 0)
        fprintf(stderr, "open: %s\n", err ? err : "?");
    assert_int_equal(rc, 0);
}

/* Flush and reopen (qemu-io opens the image qemu-img created anew: free_cluster_index 0). */
static void img_reopen(struct img *t)
{
    assert_int_equal(qcow2_refcount_cache_flush(&t->m), 0);
    qcow2_image_close(&t->m);
    img_open(t);
}

/* qemu-img create -f qcow2 -o cluster_size=1<<cb,refcount_bits=1<<order x size */
static void img_create(struct img *t, unsigned cb, unsigned order, uint64_t size)
{
    uint64_t cs = UINT64_C(1) << cb;
    uint8_t *b = calloc(1, 3 * cs);
    be32_put(b + QCOW2_OFF_MAGIC, 0x514649fb);
    be32_put(b + QCOW2_OFF_VERSION, 3);
    be32_put(b + QCOW2_OFF_CLUSTER_BITS, cb);
    be64_put(b + QCOW2_OFF_REFTABLE_OFFSET, cs);
    be32_put(b + QCOW2_OFF_REFTABLE_CLUSTERS, 1);
    be32_put(b + QCOW2_OFF_REFCOUNT_ORDER, order);
    be32_put(b + QCOW2_OFF_HEADER_LENGTH, 112);
    be64_put(b + cs, 2 * cs);
    t->q = qio_open_mem(b, 3 * cs, true, MEM_MAX);
    free(b);
    img_open(t);
    /* "Huh, first cluster in empty image is already in use?" otherwise */
    assert_int_equal(qcow2_alloc_clusters(&t->m, 3 * cs), 0);
    /* blk_truncate -> qcow2_grow_l1_table(exact size) */
    uint64_t l2_span = cs * (cs / 8);
    t->size = size;
    t->l1_size = (size + l2_span - 1) / l2_span;
    int64_t l1 = qcow2_alloc_clusters(&t->m, t->l1_size * 8);
    assert_true(l1 > 0);
    t->l1_off = (uint64_t)l1;
    uint8_t *z = calloc(1, t->l1_size * 8 + 1);
    assert_int_equal(qio_pwrite(t->q, z, t->l1_size * 8, t->l1_off), 0);
    free(z);
    uint8_t f[8];
    be64_put(f, size);
    assert_int_equal(qio_pwrite(t->q, f, 8, QCOW2_OFF_SIZE), 0);
    be32_put(f, (uint32_t)t->l1_size);
    assert_int_equal(qio_pwrite(t->q, f, 4, QCOW2_OFF_L1_SIZE), 0);
    be64_put(f, t->l1_off);
    assert_int_equal(qio_pwrite(t->q, f, 8, QCOW2_OFF_L1_OFFSET), 0);
    img_reopen(t);
}

static void img_close(struct img *t, const char *name)
{
    assert_int_equal(qcow2_refcount_cache_flush(&t->m), 0);
    const char *dir = getenv("QIMG_ALLOC_OUT");
    if (dir && name) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s.qcow2", dir, name);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(t->q->mem, 1, t->q->mem_len, f), t->q->mem_len);
        assert_int_equal(fclose(f), 0);
    }
    qcow2_image_close(&t->m);
    qio_close(t->q);
}

static uint64_t refcount(struct img *t, uint64_t off)
{
    uint64_t v;
    assert_int_equal(qcow2_image_refcount(&t->m, off >> t->m.h.cluster_bits, &v), 0);
    return v;
}

/* The reftable entry ti as the file holds it. */
static uint64_t disk_rt(struct img *t, uint64_t ti)
{
    uint8_t e[8];
    uint8_t h[64];
    assert_int_equal(qio_pread(t->q, h, sizeof(h), 0), 0);
    assert_int_equal(qio_pread(t->q, e, 8, be64_get(h + QCOW2_OFF_REFTABLE_OFFSET) + ti * 8), 0);
    return be64_get(e);
}

/* qemu-io -c 'write -P 0xcd off len' on a fresh image (cluster aligned; no L2 tables yet in
 * the range): per L2 table the table is allocated first (qcow2's l2_allocate), then the
 * data clusters of that table's part of the request (do_alloc_cluster_offset; the next
 * table then takes the host offset the request would have continued at, so each table's
 * data is one allocation). */
static void guest_write(struct img *t, uint64_t off, uint64_t len)
{
    uint64_t cs = t->m.cs, per_l2 = cs / 8;
    uint8_t *buf = malloc(per_l2 * cs);
    memset(buf, 0xcd, per_l2 * cs);
    uint8_t e[8];
    for (uint64_t g = off; g < off + len;) {
        uint64_t ci = g / cs, l1i = ci / per_l2, l2i = ci % per_l2;
        uint64_t n = per_l2 - l2i;
        if (n > (off + len - g) / cs)
            n = (off + len - g) / cs;
        uint8_t l1e[8];
        assert_int_equal(qio_pread(t->q, l1e, 8, t->l1_off + l1i * 8), 0);
        uint64_t l2 = be64_get(l1e) & QCOW2_L1E_OFFSET_MASK;
        if (!l2) {
            int64_t a = qcow2_alloc_clusters(&t->m, cs);
            assert_true(a > 0);
            l2 = (uint64_t)a;
            uint8_t *z = calloc(1, cs);
            assert_int_equal(qio_pwrite(t->q, z, cs, l2), 0);
            free(z);
            be64_put(e, l2 | QCOW2_OFLAG_COPIED);
            assert_int_equal(qio_pwrite(t->q, e, 8, t->l1_off + l1i * 8), 0);
        }
        int64_t d = qcow2_alloc_clusters(&t->m, n * cs);
        assert_true(d > 0);
        assert_int_equal(qio_pwrite(t->q, buf, n * cs, (uint64_t)d), 0);
        for (uint64_t i = 0; i < n; i++) {
            be64_put(e, ((uint64_t)d + i * cs) | QCOW2_OFLAG_COPIED);
            assert_int_equal(qio_pwrite(t->q, e, 8, l2 + (l2i + i) * 8), 0);
        }
        g += n * cs;
    }
    free(buf);
}

/* The L2 table offset and the data offset of guest cluster ci. */
static void lookup(struct img *t, uint64_t ci, uint64_t *l2, uint64_t *data)
{
    uint64_t per_l2 = t->m.cs / 8;
    uint8_t e[8];
    assert_int_equal(qio_pread(t->q, e, 8, t->l1_off + ci / per_l2 * 8), 0);
    *l2 = be64_get(e) & QCOW2_L1E_OFFSET_MASK;
    assert_int_equal(qio_pread(t->q, e, 8, *l2 + ci % per_l2 * 8), 0);
    *data = be64_get(e) & QCOW2_L2E_OFFSET_MASK;
}

/* qemu-io -c 'discard off len' (cluster aligned, v3, no backing file): qemu's
 * discard_in_l2_slice turns each allocated entry into a zero entry and frees its cluster
 * (QCOW2_DISCARD_REQUEST, passed down as a hole punched in the file: zeros here). */
static void guest_discard(struct img *t, uint64_t off, uint64_t len)
{
    uint64_t cs = t->m.cs;
    uint8_t *z = calloc(1, cs);
    for (uint64_t ci = off / cs; ci < (off + len) / cs; ci++) {
        uint64_t l2, d;
        lookup(t, ci, &l2, &d);
        if (!l2 || !d)
            continue;
        uint8_t e[8];
        be64_put(e, QCOW2_OFLAG_ZERO);
        assert_int_equal(qio_pwrite(t->q, e, 8, l2 + ci % (cs / 8) * 8), 0);
        qcow2_free_any_cluster(&t->m, d | QCOW2_OFLAG_COPIED, QCOW2_DISCARD_REQUEST);
        assert_int_equal(refcount(t, d), 0);
        assert_int_equal(qio_pwrite(t->q, z, cs, d), 0);
    }
    free(z);
}

/* Freed clusters are reused from the lowest, a run that does not fit goes to the end.
 * qemu: `write 0 1M; discard 0 128k; write 2M 64k; write 3M 256k` on an 8 MiB image with
 * 64 KiB clusters maps guest 2M to 0x50000 (the first freed cluster) and guest 3M to
 * 0x150000 (the end: one free cluster at 0x60000 is too small). */
static void test_reuse_64k(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 16, 4, 8 << 20);
    guest_write(&t, 0, 1 << 20);
    img_reopen(&t);
    guest_discard(&t, 0, 128 << 10);
    /* the search index of a fresh open (0) stays below the freed clusters */
    assert_int_equal(t.m.free_cluster_index, 0);
    img_reopen(&t);
    guest_write(&t, 2 << 20, 64 << 10);
    img_reopen(&t);
    guest_write(&t, 3 << 20, 256 << 10);
    uint64_t l2, d;
    lookup(&t, 32, &l2, &d);
    assert_int_equal(d, 0x50000);
    lookup(&t, 48, &l2, &d);
    assert_int_equal(d, 0x150000);
    lookup(&t, 1, &l2, &d);
    assert_int_equal(d, 0);
    img_close(&t, "reuse-64k");
}

/* Fresh 1 MiB image, 64 KiB clusters: L1 at cluster 3, the first write's L2 table at 4 and
 * its data at 5 (qemu: `map` offset 0x50000, L1[0] 0x40000). */
static void test_fresh_64k(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 16, 4, 1 << 20);
    assert_int_equal(t.l1_off, 0x30000);
    guest_write(&t, 0, 65536);
    uint64_t l2, d;
    lookup(&t, 0, &l2, &d);
    assert_int_equal(l2, 0x40000);
    assert_int_equal(d, 0x50000);
    assert_int_equal(refcount(&t, 0x50000), 1);
    assert_int_equal(refcount(&t, 0x60000), 0);
    img_close(&t, "fresh-64k");
}

/* 512-byte clusters, refcount_bits=1, 1 MiB, `write 0 64k` (qemu: L1 at 0x600, L2 tables at
 * 0x800 and 0x8a00, data at 2560 and 35840, the refblock's first bytes ff.. 3f). */
static void test_fresh_512_r1(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 9, 0, 1 << 20);
    assert_int_equal(t.l1_off, 0x600);
    guest_write(&t, 0, 65536);
    uint64_t l2, d;
    lookup(&t, 0, &l2, &d);
    assert_int_equal(l2, 0x800);
    assert_int_equal(d, 2560);
    lookup(&t, 64, &l2, &d);
    assert_int_equal(l2, 0x8a00);
    assert_int_equal(d, 35840);
    assert_int_equal(qcow2_refcount_flush(&t.m), 0);
    uint8_t rb[18];
    assert_int_equal(qio_pread(t.q, rb, sizeof(rb), 0x400), 0);
    for (int i = 0; i < 16; i++)
        assert_int_equal(rb[i], 0xff);
    assert_int_equal(rb[16], 0x3f);
    assert_int_equal(rb[17], 0);
    img_close(&t, "fresh-512-r1");
}

/* 512-byte clusters, refcount_bits=64 (64 clusters per refblock, 64 refblocks per reftable
 * cluster), 4 MiB, `write 0 2M`: past the first refblock and past the reftable's first
 * cluster. qemu: reftable moved to 0x208400 (2 clusters), 68 entries: [1] 0x8c00,
 * [2] 0x11000, [64] 0x200400, [65] 0x208000, [66] 0x208200, [67] 0x218a00; L1[0..2] 0xa00,
 * 0x8e00, 0x11200; last L1 entry 0x210800; data of guest 0 at 3072, of 2M-32k at 2165248;
 * file 2198528 bytes. */
static void test_growth_512_r64(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 9, 6, 4 << 20);
    assert_int_equal(t.l1_off, 0x600);
    guest_write(&t, 0, 2 << 20);
    assert_int_equal(t.m.h.refcount_table_offset, 0x208400);
    assert_int_equal(t.m.h.refcount_table_clusters, 2);
    assert_int_equal(t.m.rt_entries, 128);
    assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
    static const struct { uint64_t ti, off; } rt[] = {
        {0, 0x400}, {1, 0x8c00}, {2, 0x11000}, {64, 0x200400}, {65, 0x208000},
        {66, 0x208200}, {67, 0x218a00}, {68, 0},
    };
    for (size_t i = 0; i < sizeof(rt) / sizeof(rt[0]); i++) {
        assert_int_equal(t.m.rt[rt[i].ti], rt[i].off);
        assert_int_equal(disk_rt(&t, rt[i].ti), rt[i].off);
    }
    uint64_t l2, d;
    lookup(&t, 0, &l2, &d);
    assert_int_equal(l2, 0xa00);
    assert_int_equal(d, 3072);
    lookup(&t, 64, &l2, &d);
    assert_int_equal(l2, 0x8e00);
    lookup(&t, 128, &l2, &d);
    assert_int_equal(l2, 0x11200);
    lookup(&t, 4095, &l2, &d);
    assert_int_equal(l2, 0x210800);
    assert_int_equal(d, 2165248 + 32768 - 512);
    assert_int_equal(t.q->mem_len, 2198528);
    /* the old one-cluster table at 0x200 is free again, the new one counted */
    assert_int_equal(refcount(&t, 0x200), 0);
    assert_int_equal(refcount(&t, 0x208400), 1);
    assert_int_equal(refcount(&t, 0x208600), 1);
    /* the header on disk names the new table */
    uint8_t h[12];
    assert_int_equal(qio_pread(t.q, h, 12, QCOW2_OFF_REFTABLE_OFFSET), 0);
    assert_int_equal(be64_get(h), 0x208400);
    assert_int_equal(be32_get(h + 8), 2);
    img_close(&t, "growth-512-r64");
}

/* 512-byte clusters, refcount_bits=1 (4096 clusters per refblock, 64 refblocks per reftable
 * cluster), 136 MiB, `write 0 130M`. qemu: reftable moved to 0x8200200 (2 clusters), 67
 * entries: [1] 0x200a00, [63] 0x7e00a00, [64] 0x8000a00, [65] 0x8200000, [66] 0x8400200;
 * L1[0] 0x8e00, L1[1] 0x11000, last 0x8418a00; data of guest 0 at 36864, of 130M-32k at
 * 138513408; file 138546176 bytes. */
static void test_growth_512_r1(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 9, 0, 136 << 20);
    assert_int_equal(t.l1_off, 0x600);
    guest_write(&t, 0, 130 << 20);
    assert_int_equal(t.m.h.refcount_table_offset, 0x8200200);
    assert_int_equal(t.m.h.refcount_table_clusters, 2);
    assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
    static const struct { uint64_t ti, off; } rt[] = {
        {0, 0x400}, {1, 0x200a00}, {2, 0x400a00}, {63, 0x7e00a00}, {64, 0x8000a00},
        {65, 0x8200000}, {66, 0x8400200}, {67, 0},
    };
    for (size_t i = 0; i < sizeof(rt) / sizeof(rt[0]); i++) {
        assert_int_equal(t.m.rt[rt[i].ti], rt[i].off);
        assert_int_equal(disk_rt(&t, rt[i].ti), rt[i].off);
    }
    uint64_t l2, d;
    lookup(&t, 0, &l2, &d);
    assert_int_equal(l2, 0x8e00);
    assert_int_equal(d, 36864);
    lookup(&t, 64, &l2, &d);
    assert_int_equal(l2, 0x11000);
    lookup(&t, (130 << 20) / 512 - 1, &l2, &d);
    assert_int_equal(l2, 0x8418a00);
    assert_int_equal(d, 138513408 + 32768 - 512);
    assert_int_equal(t.q->mem_len, 138546176);
    img_close(&t, "growth-512-r1");
}


/* A copy of t's image bytes as a new image (t stays open). */
static void img_copy(struct img *dst, struct img *src)
{
    assert_int_equal(qcow2_refcount_cache_flush(&src->m), 0);
    dst->q = qio_open_mem(src->q->mem, src->q->mem_len, true, MEM_MAX);
    dst->l1_off = src->l1_off;
    dst->l1_size = src->l1_size;
    dst->size = src->size;
    img_open(dst);
}

/* Refcount i of the refblock at off, as the file holds it. */
static uint64_t disk_refcount(struct img *t, uint64_t rb_off, uint64_t i)
{
    uint8_t *b = malloc(t->m.cs);
    assert_int_equal(qio_pread(t->q, b, t->m.cs, rb_off), 0);
    uint64_t v = qcow2_refblock_entry(b, t->m.h.refcount_order, i);
    free(b);
    return v;
}

/* 512-byte clusters, 64-bit refcounts (64 per refblock), 4 MiB: clusters 0..4 in use (header,
 * reftable, refblock, two L1 clusters). Filling the first refblock's range, the next cluster
 * (64) needs refblock 1: placed by the allocator at 65, in its own range, it counts itself;
 * the allocation then starts over and gets 64. */
static void test_self_describing(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 9, 6, 4 << 20);
    assert_int_equal(qcow2_alloc_clusters(&t.m, 59 * 512), 5 * 512);
    assert_int_equal(t.m.rt[1], 0);
    assert_int_equal(qcow2_alloc_clusters(&t.m, 512), 64 * 512);
    assert_int_equal(t.m.rt[1], 65 * 512);
    assert_int_equal(disk_rt(&t, 1), 65 * 512);
    assert_int_equal(refcount(&t, 64 * 512), 1);
    assert_int_equal(refcount(&t, 65 * 512), 1);
    assert_int_equal(qcow2_refcount_flush(&t.m), 0);
    assert_int_equal(disk_refcount(&t, 65 * 512, 1), 1);
    assert_int_equal(disk_refcount(&t, 65 * 512, 0), 1);
    /* next: 66 */
    assert_int_equal(qcow2_alloc_clusters(&t.m, 512), 66 * 512);
    img_close(&t, "self-describing-leaks");
}

/* A refblock that falls outside its own range: a free cluster (10) lies below, the
 * allocation is at cluster 200 (refblock 3). The new block goes to 10, counted in refblock
 * 0 first, then hooked up; cluster 200 is taken after the retry. */
static void test_refblock_elsewhere(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 9, 6, 4 << 20);
    assert_int_equal(qcow2_alloc_clusters(&t.m, 59 * 512), 5 * 512);
    qcow2_free_clusters(&t.m, 10 * 512, 512, QCOW2_DISCARD_NEVER);
    assert_int_equal(t.m.free_cluster_index, 10);
    assert_int_equal(qcow2_alloc_clusters_at(&t.m, 200 * 512, 1), 1);
    assert_int_equal(t.m.rt[3], 10 * 512);
    assert_int_equal(disk_rt(&t, 3), 10 * 512);
    assert_int_equal(refcount(&t, 10 * 512), 1);
    assert_int_equal(refcount(&t, 200 * 512), 1);
    assert_int_equal(qcow2_refcount_flush(&t.m), 0);
    assert_int_equal(disk_refcount(&t, 10 * 512, 200 % 64), 1);
    assert_int_equal(disk_refcount(&t, 0x400, 10), 1);
    /* in use: nothing allocated there */
    assert_int_equal(qcow2_alloc_clusters_at(&t.m, 199 * 512, 3), 1);
    assert_int_equal(qcow2_alloc_clusters_at(&t.m, 199 * 512, 3), 0);
    assert_int_equal(qcow2_alloc_clusters_at(&t.m, 513, 1), -EINVAL);
    /* refblocks 1 and 2 were never needed; the image stays consistent for qemu-img check
     * once cluster 199..200 are freed again */
    qcow2_free_clusters(&t.m, 199 * 512, 2 * 512, QCOW2_DISCARD_NEVER);
    img_close(&t, "refblock-elsewhere-leaks");
}

/* A range update across a refblock boundary (clusters 60..69 over refblocks 0 and 1), up
 * and down again. */
static void test_update_across_blocks(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 9, 6, 4 << 20);
    int64_t a = qcow2_alloc_clusters(&t.m, 130 * 512);
    assert_int_equal(a, 5 * 512);
    /* cluster 5..134 plus refblocks for 64..127 and 128..: 65 (first after the range? no:
     * the allocator places them before retrying, so the run moves up) */
    uint64_t before[200];
    for (uint64_t k = 0; k < 200; k++)
        before[k] = refcount(&t, k * 512);
    assert_int_equal(qcow2_update_refcount(&t.m, 60 * 512 + 7, 10 * 512 - 7, 2,
                                           QCOW2_DISCARD_NEVER), 0);
    for (uint64_t k = 0; k < 200; k++)
        assert_int_equal(refcount(&t, k * 512), before[k] + (k >= 60 && k < 70 ? 2 : 0));
    assert_int_equal(qcow2_refcount_flush(&t.m), 0);
    assert_int_equal(disk_refcount(&t, 0x400, 63), before[63] + 2);
    assert_int_equal(disk_refcount(&t, t.m.rt[1], 0), before[64] + 2);
    assert_int_equal(qcow2_update_refcount(&t.m, 60 * 512, 10 * 512, -2, QCOW2_DISCARD_NEVER),
                     0);
    for (uint64_t k = 0; k < 200; k++)
        assert_int_equal(refcount(&t, k * 512), before[k]);
    qcow2_free_clusters(&t.m, (uint64_t)a, 130 * 512, QCOW2_DISCARD_NEVER);
    img_close(&t, "update-across-blocks-leaks");
}

/* Freed clusters are found again from the lowest (free_cluster_index moves back), a run
 * that does not fit a hole goes past it. */
static void test_free_reuse(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 16, 4, 1 << 20);
    uint64_t cs = 65536;
    int64_t a = qcow2_alloc_clusters(&t.m, cs), b = qcow2_alloc_clusters(&t.m, cs);
    int64_t c = qcow2_alloc_clusters(&t.m, cs);
    assert_int_equal(a, 4 * cs);
    assert_int_equal(b, 5 * cs);
    assert_int_equal(c, 6 * cs);
    qcow2_free_clusters(&t.m, (uint64_t)b, cs, QCOW2_DISCARD_NEVER);
    assert_int_equal(refcount(&t, (uint64_t)b), 0);
    assert_int_equal(t.m.free_cluster_index, 5);
    /* two clusters do not fit the hole at 5 */
    assert_int_equal(qcow2_alloc_clusters(&t.m, 2 * cs), 7 * cs);
    /* the search went on from 7: the hole is found again only after a free moves back */
    assert_int_equal(qcow2_alloc_clusters(&t.m, cs), 9 * cs);
    qcow2_free_clusters(&t.m, (uint64_t)a, cs, QCOW2_DISCARD_NEVER);
    assert_int_equal(qcow2_alloc_clusters(&t.m, 2 * cs), 4 * cs);
    assert_int_equal(qcow2_alloc_clusters(&t.m, 100), 10 * cs);
    /* an L2 entry frees what it names */
    qcow2_free_any_cluster(&t.m, (uint64_t)c | QCOW2_OFLAG_COPIED, QCOW2_DISCARD_REQUEST);
    assert_int_equal(refcount(&t, (uint64_t)c), 0);
    qcow2_free_any_cluster(&t.m, QCOW2_OFLAG_ZERO, QCOW2_DISCARD_REQUEST);
    qcow2_free_any_cluster(&t.m, 0, QCOW2_DISCARD_REQUEST);
    /* unaligned: nothing freed */
    qcow2_free_any_cluster(&t.m, (7 * cs + 512) | QCOW2_OFLAG_COPIED, QCOW2_DISCARD_REQUEST);
    assert_int_equal(refcount(&t, 7 * cs), 1);
    /* zero cluster with allocation */
    qcow2_free_any_cluster(&t.m, 7 * cs | QCOW2_OFLAG_ZERO, QCOW2_DISCARD_REQUEST);
    assert_int_equal(refcount(&t, 7 * cs), 0);
    for (uint64_t k = 4; k < 11; k++)
        if (refcount(&t, k * cs))
            qcow2_free_clusters(&t.m, k * cs, cs, QCOW2_DISCARD_NEVER);
    img_close(&t, "free-reuse");
}

/* qemu-io 'write -c' of three 64 KiB clusters (patterns 0xcd, 0x11, 0): qemu compresses them
 * to 79, 79 and 78 bytes and packs them at 0x50000, 0x5004f, 0x5009e (the L2 table at
 * 0x40000 first); with refcount_bits=1 a cluster cannot be shared, so each goes to a cluster
 * of its own (0x50000, 0x60000, 0x70000). */
static void test_alloc_bytes(void **state)
{
    (void)state;
    static const uint64_t sizes[3] = {79, 79, 78};
    static const uint64_t packed[3] = {0x50000, 0x5004f, 0x5009e};
    struct img t;
    img_create(&t, 16, 4, 1 << 20);
    assert_int_equal(qcow2_alloc_clusters(&t.m, 65536), 0x40000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(qcow2_alloc_bytes(&t.m, sizes[i]), packed[i]);
    assert_int_equal(refcount(&t, 0x50000), 3);
    assert_int_equal(t.m.free_byte_offset, 0x500ec);
    /* across the cluster's end: the next cluster is the free one, so it packs on, taking a
     * reference on both */
    assert_int_equal(qcow2_alloc_bytes(&t.m, 65536 - 0xec - 10), 0x500ec);
    assert_int_equal(qcow2_alloc_bytes(&t.m, 100), 0x5fff6);
    assert_int_equal(refcount(&t, 0x50000), 5);
    assert_int_equal(refcount(&t, 0x60000), 1);
    assert_int_equal(t.m.free_byte_offset, 0x6005a);
    /* the next cluster is taken: a new cluster */
    assert_int_equal(qcow2_alloc_clusters(&t.m, 65536), 0x70000);
    assert_int_equal(qcow2_alloc_bytes(&t.m, 65536 - 0x5a + 1), 0x80000);
    assert_int_equal(qcow2_alloc_bytes(&t.m, 0), -EINVAL);
    assert_int_equal(qcow2_alloc_bytes(&t.m, 65537), -EINVAL);
    img_close(&t, NULL);

    img_create(&t, 16, 0, 1 << 20);
    assert_int_equal(qcow2_alloc_clusters(&t.m, 65536), 0x40000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(qcow2_alloc_bytes(&t.m, sizes[i]), 0x50000 + i * 0x10000);
    img_close(&t, NULL);
}

/* Every refcount width: up to the maximum, one more is -EINVAL with the range's earlier
 * clusters rolled back; below zero likewise; the neighbours in the packed block keep their
 * values. */
static void test_widths(void **state)
{
    (void)state;
    for (unsigned order = 0; order <= 6; order++) {
        struct img t;
        img_create(&t, 9, order, 1 << 20);
        uint64_t max = qcow2_refcount_max(order), cs = 512;
        int64_t a = qcow2_alloc_clusters(&t.m, 4 * cs);
        assert_true(a > 0);
        uint64_t x = (uint64_t)a + cs; /* clusters x-1 .. x+2 in use, refcount 1 */
        /* to the maximum (2^64-1 in int64 steps) */
        uint64_t left = max - 1;
        while (left) {
            int64_t step = left > INT64_MAX ? INT64_MAX : (int64_t)left;
            assert_int_equal(qcow2_update_refcount(&t.m, x, cs, step, QCOW2_DISCARD_NEVER), 0);
            left -= (uint64_t)step;
        }
        assert_int_equal(refcount(&t, x), max);
        assert_int_equal(refcount(&t, x - cs), 1);
        assert_int_equal(refcount(&t, x + cs), 1);
        /* x-1 first, then x overflows: x-1 is rolled back */
        assert_int_equal(qcow2_update_refcount(&t.m, x - cs, 3 * cs, 1, QCOW2_DISCARD_NEVER),
                         -EINVAL);
        assert_int_equal(refcount(&t, x - cs), 1);
        assert_int_equal(refcount(&t, x), max);
        assert_int_equal(refcount(&t, x + cs), 1);
        assert_int_equal(qcow2_refcount_flush(&t.m), 0);
        uint64_t k = x / cs;
        assert_int_equal(disk_refcount(&t, 1024, k), max);
        assert_int_equal(disk_refcount(&t, 1024, k - 1), 1);
        assert_int_equal(disk_refcount(&t, 1024, k + 1), 1);
        /* back down */
        left = max - 1;
        while (left) {
            int64_t step = left > INT64_MAX ? INT64_MAX : (int64_t)left;
            assert_int_equal(qcow2_update_refcount(&t.m, x, cs, -step, QCOW2_DISCARD_NEVER),
                             0);
            left -= (uint64_t)step;
        }
        assert_int_equal(refcount(&t, x), 1);
        /* x+2 -> 0, then x+3 (free) would go below zero: x+2 rolled back to 1 */
        assert_int_equal(qcow2_update_refcount(&t.m, x + 2 * cs, 2 * cs, -1,
                                               QCOW2_DISCARD_NEVER), -EINVAL);
        assert_int_equal(refcount(&t, x + 2 * cs), 1);
        assert_int_equal(qcow2_update_refcount(&t.m, x + 3 * cs, cs, -1, QCOW2_DISCARD_NEVER),
                         -EINVAL);
        if (order == 0) {
            /* refcount_bits=1: a second reference is an overflow */
            assert_int_equal(qcow2_update_refcount(&t.m, x, cs, 1, QCOW2_DISCARD_NEVER),
                             -EINVAL);
        }
        char name[64];
        snprintf(name, sizeof(name), "widths-%u-leaks", order);
        img_close(&t, name);
    }
}

/* The refcounts of clusters [0, n) as a freshly opened model reads them from the file. */
static uint64_t *disk_refcounts(struct img *t, uint64_t n)
{
    struct img r = { .l1_off = t->l1_off };
    r.q = qio_open_mem(t->q->mem, t->q->mem_len, false, t->q->mem_len);
    img_open(&r);
    uint64_t *v = calloc(n, sizeof(*v));
    for (uint64_t k = 0; k < n; k++)
        v[k] = refcount(&r, k * r.m.cs);
    qcow2_image_close(&r.m);
    qio_close(r.q);
    return v;
}

/* A refcount update over the whole file (68 refblocks: more than the cache's 64 slots, so
 * dirty blocks are written while it runs), with the memory backend failing the n-th write:
 * the update fails with EIO, is rolled back, and once the writes work again the file holds
 * exactly the refcounts it held before; without a failure the update is whole. */
static void test_eio_full_range(void **state)
{
    (void)state;
    struct img base;
    img_create(&base, 9, 6, 4 << 20);
    guest_write(&base, 0, 2 << 20);
    assert_int_equal(qcow2_refcount_cache_flush(&base.m), 0);
    uint64_t n = base.q->mem_len / 512;
    uint64_t *before = disk_refcounts(&base, n + 8);
    bool completed = false;
    for (long w = 1; w < 200 && !completed; w++) {
        struct img t;
        img_copy(&t, &base);
        t.q->writes_left = w;
        int rc = qcow2_update_refcount(&t.m, 0, n * 512, 1, QCOW2_DISCARD_NEVER);
        t.q->writes_left = 0;
        if (rc == 0) {
            completed = true;
            assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
            uint64_t *after = disk_refcounts(&t, n + 8);
            for (uint64_t k = 0; k < n + 8; k++)
                assert_int_equal(after[k], before[k] + (k < n));
            free(after);
            assert_int_equal(qcow2_update_refcount(&t.m, 0, n * 512, -1, QCOW2_DISCARD_NEVER),
                             0);
        } else {
            assert_int_equal(rc, -EIO);
        }
        assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
        uint64_t *after = disk_refcounts(&t, n + 8);
        for (uint64_t k = 0; k < n + 8; k++)
            assert_int_equal(after[k], before[k]);
        free(after);
        char name[64];
        snprintf(name, sizeof(name), "eio-range-%ld", w);
        img_close(&t, w <= 3 ? name : NULL);
    }
    assert_true(completed);
    free(before);
    img_close(&base, NULL);
}

/* An allocation that needs new refblocks and a new reftable (2 MiB of 512-byte clusters at
 * refcount_bits=64 fill the first reftable cluster), with the n-th write failing, for every
 * n until it succeeds: every cluster in use before keeps its refcount on disk, the model and
 * the file agree afterwards (new clusters may leak, never the reverse), and the image stays
 * usable: a second allocation works and lands on clusters free on disk. */
static void test_eio_alloc(void **state)
{
    (void)state;
    struct img base;
    img_create(&base, 9, 6, 4 << 20);
    guest_write(&base, 0, (7 << 20) / 4);
    assert_int_equal(qcow2_refcount_cache_flush(&base.m), 0);
    assert_int_equal(base.m.h.refcount_table_clusters, 1);
    uint64_t n = base.q->mem_len / 512 + 900;
    uint64_t *before = disk_refcounts(&base, n);
    bool completed = false;
    for (long w = 1; w < 200 && !completed; w++) {
        struct img t;
        img_copy(&t, &base);
        t.q->writes_left = w;
        int64_t a = qcow2_alloc_clusters(&t.m, 600 * 512);
        t.q->writes_left = 0;
        if (a >= 0) {
            completed = true;
            assert_int_equal(t.m.h.refcount_table_clusters, 2);
        } else {
            assert_int_equal(a, -EIO);
        }
        assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
        uint64_t *after = disk_refcounts(&t, n);
        for (uint64_t k = 0; k < n; k++) {
            /* the old reftable is the one cluster that may be freed (after the switch) */
            if (before[k] && k * 512 != 0x200)
                assert_int_equal(after[k], before[k]);
            assert_int_equal(refcount(&t, k * 512), after[k]);
        }
        int64_t b = qcow2_alloc_clusters(&t.m, 512);
        assert_true(b > 0);
        assert_int_equal(after[(uint64_t)b / 512], 0);
        free(after);
        char name[64];
        snprintf(name, sizeof(name), "eio-alloc-%ld-leaks", w);
        img_close(&t, name);
    }
    assert_true(completed);
    free(before);
    img_close(&base, NULL);
}

/* Freed clusters are punched out of the file when the discard type passes
 * (m->discard_passthrough), as qemu's file layer discards them; other types leave the
 * data. On a real file in /tmp (the memory backend cannot punch holes). */
static void test_discard(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 16, 4, 1 << 20);
    uint64_t cs = 65536;
    int64_t a = qcow2_alloc_clusters(&t.m, 4 * cs);
    assert_int_equal(a, 4 * cs);
    uint8_t *buf = malloc(4 * cs);
    memset(buf, 0xcd, 4 * cs);
    assert_int_equal(qio_pwrite(t.q, buf, 4 * cs, (uint64_t)a), 0);
    free(buf);
    assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
    char path[] = "/tmp/qimg-alloc-discard-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t.q->mem, t.q->mem_len), (ssize_t)t.q->mem_len);
    close(fd);
    img_close(&t, NULL);

    assert_int_equal(qio_open_file(path, QIO_RDWR, &t.q), 0);
    t.l1_off = 0x30000;
    img_open(&t);
    t.m.discard_passthrough[QCOW2_DISCARD_REQUEST] = true;
    qcow2_free_clusters(&t.m, 4 * cs, cs, QCOW2_DISCARD_OTHER);
    qcow2_free_clusters(&t.m, 5 * cs, 2 * cs, QCOW2_DISCARD_REQUEST);
    bool data;
    uint64_t len;
    assert_int_equal(qio_extent(t.q, 4 * cs, &data, &len), 0);
    assert_true(data);
    assert_int_equal(len, cs);
    assert_int_equal(qio_extent(t.q, 5 * cs, &data, &len), 0);
    if (data) {
        /* only a file system that cannot punch holes keeps the data */
        assert_true(qio_fallocate(t.q, QIO_FALLOC_PUNCH_HOLE, 5 * cs, cs) < 0);
    } else {
        assert_int_equal(len, 2 * cs);
        assert_int_equal(qio_extent(t.q, 7 * cs, &data, &len), 0);
        assert_true(data);
    }
    assert_int_equal(refcount(&t, 5 * cs), 0);
    assert_int_equal(refcount(&t, 7 * cs), 1);
    qcow2_free_clusters(&t.m, 7 * cs, cs, QCOW2_DISCARD_NEVER);
    img_close(&t, NULL);
    unlink(path);
}

/* The punch holes a discard passes down, recorded. */
static uint64_t rec_off[16], rec_len[16];
static size_t rec_n;

static int rec_fallocate(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len)
{
    (void)q;
    assert_int_equal(mode, QIO_FALLOC_PUNCH_HOLE);
    assert_true(rec_n < 16);
    rec_off[rec_n] = off;
    rec_len[rec_n++] = len;
    return 0;
}

/* qemu's cache_discards during qcow2_cluster_discard: the freed clusters' discards are
 * collected, adjacent ones merged (also across an earlier region: that one is absorbed and
 * the list keeps its order), and passed down at the end, one punch per region (iotest 250:
 * per-cluster punches let ext4 grow an extent index block qemu's two punches do not);
 * after a failure none is passed down. */
static void test_discard_cache(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 16, 4, 1 << 20);
    uint64_t cs = 65536;
    int64_t a = qcow2_alloc_clusters(&t.m, 8 * cs);
    assert_int_equal(a, 4 * cs); /* clusters 4..11 */
    struct qio_ops ops = *t.q->ops;
    ops.fallocate = rec_fallocate;
    t.q->ops = &ops;
    t.m.discard_passthrough[QCOW2_DISCARD_REQUEST] = true;

    rec_n = 0;
    qcow2_discards_cache(&t.m);
    qcow2_free_clusters(&t.m, 9 * cs, cs, QCOW2_DISCARD_REQUEST);  /* region A: 9 */
    qcow2_free_clusters(&t.m, 5 * cs, cs, QCOW2_DISCARD_REQUEST);  /* region B: 5 */
    qcow2_free_clusters(&t.m, 10 * cs, cs, QCOW2_DISCARD_REQUEST); /* A: 9..10 */
    qcow2_free_clusters(&t.m, 7 * cs, cs, QCOW2_DISCARD_REQUEST);  /* region C: 7 */
    qcow2_free_clusters(&t.m, 6 * cs, cs, QCOW2_DISCARD_REQUEST);  /* B: 5..7, C absorbed */
    assert_int_equal(rec_n, 0);
    qcow2_discards_process(&t.m, 0);
    assert_int_equal(rec_n, 2);
    assert_int_equal(rec_off[0], 9 * cs);
    assert_int_equal(rec_len[0], 2 * cs);
    assert_int_equal(rec_off[1], 5 * cs);
    assert_int_equal(rec_len[1], 3 * cs);

    /* without the cache each free passes its discard at once */
    rec_n = 0;
    qcow2_free_clusters(&t.m, 4 * cs, cs, QCOW2_DISCARD_REQUEST);
    assert_int_equal(rec_n, 1);
    assert_int_equal(rec_off[0], 4 * cs);

    /* a failed operation passes none */
    rec_n = 0;
    qcow2_discards_cache(&t.m);
    qcow2_free_clusters(&t.m, 8 * cs, cs, QCOW2_DISCARD_REQUEST);
    qcow2_discards_process(&t.m, -EIO);
    assert_int_equal(rec_n, 0);
    assert_int_equal(refcount(&t, 8 * cs), 0);
    qcow2_free_clusters(&t.m, 11 * cs, cs, QCOW2_DISCARD_NEVER);
    img_close(&t, NULL);
}

/* Hostile refcount structures: a refblock offset not aligned to the cluster is corruption
 * (-EIO, qemu's "Refblock offset ... unaligned"), for the search and for an update, and
 * nothing is written; a reftable entry whose refblock says every cluster is taken makes
 * the search go past it. */
static void test_hostile(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 16, 4, 1 << 20);
    assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
    size_t len = t.q->mem_len;
    uint8_t *before = malloc(len);
    memcpy(before, t.q->mem, len);
    t.m.rt[0] = 0x20200;
    assert_int_equal(qcow2_alloc_clusters(&t.m, 65536), -EIO);
    assert_int_equal(qcow2_update_refcount(&t.m, 0, 65536, 1, QCOW2_DISCARD_NEVER), -EIO);
    assert_int_equal(qcow2_alloc_clusters_at(&t.m, 0x100000, 1), -EIO);
    assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
    assert_int_equal(t.q->mem_len, len);
    assert_memory_equal(t.q->mem, before, len);
    free(before);
    img_close(&t, NULL);

    /* 512-byte clusters, 16-bit refcounts: 256 clusters per refblock */
    img_create(&t, 9, 4, 1 << 20);
    int64_t x = qcow2_alloc_clusters(&t.m, 512);
    assert_true(x > 0);
    uint8_t full[512];
    memset(full, 0xff, sizeof(full));
    assert_int_equal(qio_pwrite(t.q, full, 512, (uint64_t)x), 0);
    t.m.rt[1] = (uint64_t)x;
    assert_int_equal(qcow2_update_refcount(&t.m, 300 * 512, 512, 1, QCOW2_DISCARD_NEVER),
                     -EINVAL); /* 0xffff + 1 */
    t.m.free_cluster_index = 256;
    assert_int_equal(qcow2_alloc_clusters(&t.m, 512), 512 * 512);
    assert_int_equal(t.m.rt[2], 513 * 512);
    img_close(&t, NULL);
}

/* The L2 cache's side of the write order (qemu's cache dependencies), seen through the
 * hooks: what the refblock on disk held each time the L2 cache was asked to flush. */
static struct {
    int flushes, forgets, fail;
    uint64_t forgot;
    uint64_t disk_at_flush; /* refcount of the watched cluster on disk at the last flush */
    uint64_t rb_off, idx;
} hk;

static int hook_l2_flush(struct qcow2_image *m)
{
    hk.flushes++;
    if (hk.fail)
        return -EIO;
    uint8_t *b = malloc(m->cs);
    assert_int_equal(qio_pread(m->q, b, m->cs, hk.rb_off), 0);
    hk.disk_at_flush = qcow2_refblock_entry(b, m->h.refcount_order, hk.idx);
    free(b);
    return 0;
}

static void hook_l2_forget(struct qcow2_image *m, uint64_t off)
{
    (void)m;
    hk.forgets++;
    hk.forgot = off;
}

static void test_order_hooks(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 16, 4, 1 << 20);
    uint64_t cs = 65536;
    memset(&hk, 0, sizeof(hk));
    hk.rb_off = 0x20000;
    hk.idx = 4;
    t.m.rb.l2_flush = hook_l2_flush;
    t.m.rb.l2_forget = hook_l2_forget;
    /* an allocation: the L2 side declares its wait; refblocks reach the disk before any L2
     * table, by its qcow2_refcount_cache_flush */
    assert_int_equal(qcow2_alloc_clusters(&t.m, cs), 4 * cs);
    assert_int_equal(qcow2_l2_depends_on_refblocks(&t.m), 0);
    assert_true(t.m.rb.l2_waits_rb);
    assert_int_equal(disk_refcount(&t, 0x20000, 4), 0); /* still only cached */
    /* a free now: the increase is flushed first (the L2 side may already name the
     * cluster), then refblocks wait for the L2 cache */
    assert_int_equal(qcow2_alloc_clusters(&t.m, cs), 5 * cs);
    qcow2_free_clusters(&t.m, 4 * cs, cs, QCOW2_DISCARD_NEVER);
    assert_false(t.m.rb.l2_waits_rb);
    assert_true(t.m.rb.rb_waits_l2);
    assert_int_equal(disk_refcount(&t, 0x20000, 4), 1);
    assert_int_equal(disk_refcount(&t, 0x20000, 5), 1);
    assert_int_equal(hk.forgets, 1);
    assert_int_equal(hk.forgot, 4 * cs);
    /* writing the refblocks flushes the L2 cache first, while the disk still says 1; if
     * that fails, no refblock is written and the wait stays */
    assert_int_equal(hk.flushes, 0);
    hk.fail = 1;
    assert_int_equal(qcow2_refcount_flush(&t.m), -EIO);
    assert_int_equal(qcow2_refcount_cache_flush(&t.m), -EIO);
    assert_true(t.m.rb.rb_waits_l2);
    assert_int_equal(disk_refcount(&t, 0x20000, 4), 1);
    hk.fail = 0;
    hk.flushes = 0;
    assert_int_equal(qcow2_refcount_flush(&t.m), 0);
    assert_int_equal(hk.flushes, 1);
    assert_int_equal(hk.disk_at_flush, 1);
    assert_int_equal(disk_refcount(&t, 0x20000, 4), 0);
    assert_false(t.m.rb.rb_waits_l2);
    /* a free, then an allocation the L2 side waits for: the L2 cache is flushed at once
     * (it may drop the freed cluster's entry), and the order turns around */
    qcow2_free_clusters(&t.m, 5 * cs, cs, QCOW2_DISCARD_NEVER);
    assert_true(t.m.rb.rb_waits_l2);
    assert_int_equal(qcow2_alloc_clusters(&t.m, cs), 4 * cs);
    hk.idx = 5;
    hk.fail = 1; /* the two waits never stand together, failures included */
    assert_int_equal(qcow2_l2_depends_on_refblocks(&t.m), -EIO);
    assert_true(t.m.rb.rb_waits_l2);
    assert_false(t.m.rb.l2_waits_rb);
    hk.fail = 0;
    hk.flushes--;
    assert_int_equal(qcow2_l2_depends_on_refblocks(&t.m), 0);
    assert_int_equal(hk.flushes, 2);
    assert_int_equal(hk.disk_at_flush, 1);
    assert_false(t.m.rb.rb_waits_l2);
    assert_true(t.m.rb.l2_waits_rb);
    assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
    assert_false(t.m.rb.l2_waits_rb);
    assert_int_equal(disk_refcount(&t, 0x20000, 5), 0);
    assert_int_equal(disk_refcount(&t, 0x20000, 4), 1);
    /* a free that cannot first flush the refblocks the L2 side waits for does not happen
     * (the cluster leaks; qemu would decrease anyway) */
    assert_int_equal(qcow2_alloc_clusters(&t.m, cs), 5 * cs);
    assert_int_equal(qcow2_l2_depends_on_refblocks(&t.m), 0);
    t.q->writes_left = 1;
    qcow2_free_clusters(&t.m, 5 * cs, cs, QCOW2_DISCARD_NEVER);
    assert_int_equal(refcount(&t, 5 * cs), 1);
    assert_true(t.m.rb.l2_waits_rb);
    assert_false(t.m.rb.rb_waits_l2);
    qcow2_free_clusters(&t.m, 5 * cs, cs, QCOW2_DISCARD_NEVER);
    assert_int_equal(refcount(&t, 5 * cs), 0);
    /* a new refblock: the L2 cache is flushed before the reftable changes */
    int before = hk.flushes;
    assert_int_equal(qcow2_alloc_clusters_at(&t.m, (uint64_t)40000 * cs, 1), 1);
    assert_true(hk.flushes > before);
    qcow2_free_clusters(&t.m, (uint64_t)40000 * cs, cs, QCOW2_DISCARD_NEVER);
    qcow2_free_clusters(&t.m, 4 * cs, cs, QCOW2_DISCARD_NEVER);
    t.m.rb.l2_flush = NULL;
    t.m.rb.l2_forget = NULL;
    img_close(&t, NULL);
}

/* The reftable must grow for a refblock that lands outside its own range: 512-byte
 * clusters, 64-bit refcounts (64 clusters per refblock, 64 refblocks in the table's
 * cluster), a free cluster low in the image, an allocation at cluster 5000 (refblock 78,
 * past the table). The new refblock takes the free cluster (counted in refblock 0), the
 * new structures go after refblock 78's range (qemu's blocks_used: cluster 79 * 64), the
 * table is switched and the allocation made. */
static void test_growth_elsewhere(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 9, 6, 4 << 20);
    int64_t a = qcow2_alloc_clusters(&t.m, 1000 * 512);
    assert_int_equal(a, 5 * 512);
    qcow2_free_clusters(&t.m, 10 * 512, 512, QCOW2_DISCARD_NEVER);
    assert_int_equal(qcow2_alloc_clusters_at(&t.m, 5000 * 512, 1), 1);
    assert_int_equal(t.m.rt[78], 10 * 512);
    assert_int_equal(refcount(&t, 10 * 512), 1);
    assert_int_equal(refcount(&t, 5000 * 512), 1);
    /* qemu's qcow2_refcount_area from 79 * 64 clusters: 81 refblocks cover the image and
     * the new structures (qcow2_refcount_metadata_size, generous), two of them new (79,
     * 80) at the start, then the table: 81 + 41 entries rounded to a cluster's 64 -> 128
     * entries, 2 clusters */
    uint64_t meta = 79 * 64 * 512;
    assert_int_equal(t.m.h.refcount_table_offset, meta + 1024);
    assert_int_equal(t.m.h.refcount_table_clusters, 2);
    assert_int_equal(t.m.rt_entries, 128);
    assert_int_equal(t.m.rt[79], meta);
    assert_int_equal(t.m.rt[80], meta + 512);
    assert_int_equal(t.m.rt[81], 0);
    for (uint64_t i = 0; i < 4; i++)
        assert_int_equal(refcount(&t, meta + i * 512), 1);
    assert_int_equal(refcount(&t, meta + 4 * 512), 0);
    assert_int_equal(refcount(&t, 0x200), 0); /* the old table */
    assert_int_equal(disk_rt(&t, 78), 10 * 512);
    /* give back everything but what the structures use; qemu-img check must find no
     * corruption (the image's clusters past EOF have no data: leaks allowed) */
    qcow2_free_clusters(&t.m, 5000 * 512, 512, QCOW2_DISCARD_NEVER);
    qcow2_free_clusters(&t.m, (uint64_t)a, 5 * 512, QCOW2_DISCARD_NEVER);
    qcow2_free_clusters(&t.m, 11 * 512, 994 * 512, QCOW2_DISCARD_NEVER);
    /* the file must hold the table and blocks it names (they were written) */
    assert_true(t.q->mem_len >= meta + 4 * 512);
    img_close(&t, "growth-elsewhere-leaks");
}

/* A crash after the n-th write: the memory backend's writes past n are dropped (the file as
 * a power cut leaves it, with qemu's flushes in between making the order real). */
static long crash_after;
static int (*mem_pwrite_real)(qio_t *q, const void *buf, size_t n, uint64_t off);

static int crash_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    if (crash_after == 0)
        return 0;
    crash_after--;
    return mem_pwrite_real(q, buf, n, off);
}

/* The allocation with reftable growth of test_eio_alloc, cut after every write: each cut
 * leaves refcount structures in which every cluster in use before keeps its refcount and
 * every refblock the reftable names is counted (qemu-img check finds leaks at most: the
 * python test runs it on the images). */
static void test_crash_alloc(void **state)
{
    (void)state;
    struct img base;
    img_create(&base, 9, 6, 4 << 20);
    guest_write(&base, 0, (7 << 20) / 4);
    assert_int_equal(qcow2_refcount_cache_flush(&base.m), 0);
    uint64_t n = base.q->mem_len / 512 + 900;
    uint64_t *before = disk_refcounts(&base, n);
    bool whole = false;
    for (long w = 0; w < 200 && !whole; w++) {
        struct img t;
        img_copy(&t, &base);
        struct qio_ops ops = *t.q->ops;
        mem_pwrite_real = ops.pwrite;
        ops.pwrite = crash_pwrite;
        t.q->ops = &ops;
        crash_after = w;
        assert_true(qcow2_alloc_clusters(&t.m, 600 * 512) > 0);
        (void)qcow2_refcount_cache_flush(&t.m);
        whole = crash_after > 0;
        uint64_t *after = disk_refcounts(&t, n);
        struct img r = { .l1_off = t.l1_off };
        r.q = qio_open_mem(t.q->mem, t.q->mem_len, false, t.q->mem_len);
        img_open(&r);
        for (uint64_t k = 0; k < n; k++)
            if (before[k] && k * 512 != 0x200)
                assert_int_equal(after[k], before[k]);
        for (uint64_t i = 0; i < r.m.rt_entries; i++)
            if (r.m.rt[i])
                assert_int_equal(after[r.m.rt[i] / 512], 1);
        for (uint64_t c = 0; c < r.m.h.refcount_table_clusters; c++)
            assert_int_equal(after[r.m.h.refcount_table_offset / 512 + c], 1);
        qcow2_image_close(&r.m);
        qio_close(r.q);
        free(after);
        char name[64];
        snprintf(name, sizeof(name), "crash-alloc-%ld-leaks", w);
        t.m.rb.l2_flush = NULL;
        qcow2_image_close(&t.m);
        const char *dir = getenv("QIMG_ALLOC_OUT");
        if (dir) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s.qcow2", dir, name);
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            assert_int_equal(fwrite(t.q->mem, 1, t.q->mem_len, f), t.q->mem_len);
            assert_int_equal(fclose(f), 0);
        }
        t.q->ops = base.q->ops;
        qio_close(t.q);
    }
    assert_true(whole);
    free(before);
    img_close(&base, NULL);
}

/* The read-write open loads the whole reftable (zeros past EOF, as qemu's bdrv_pread), so
 * a table cut by EOF is complete in the model; a table the file cannot hold at all is
 * qemu's "Could not initialize refcount handling". */
static void test_rdwr_reftable(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 16, 4, 1 << 20);
    assert_int_equal(qcow2_refcount_cache_flush(&t.m), 0);
    size_t len = t.q->mem_len;
    uint8_t *b = malloc(len);
    memcpy(b, t.q->mem, len);
    img_close(&t, NULL);
    /* a 2-cluster table whose second cluster lies past EOF (the file ends in the L1) */
    be32_put(b + QCOW2_OFF_REFTABLE_CLUSTERS, 2);
    be64_put(b + QCOW2_OFF_REFTABLE_OFFSET, 0x30000);
    be64_put(b + 0x30000, 0x20000);
    qio_t *q = qio_open_mem(b, 0x30000 + 8, true, MEM_MAX);
    struct qcow2_image m = {0};
    char *err = NULL;
    struct qcow2_open_opts o = { .mode = QCOW2_MODE_RDWR };
    assert_int_equal(qcow2_image_open(&m, q, "x", &o, &err), 0);
    assert_int_equal(m.rt_entries, 16384);
    assert_int_equal(m.rt_loaded, 16384);
    assert_int_equal(m.rt[0], 0x20000);
    assert_int_equal(m.rt[16383], 0);
    qcow2_image_close(&m);
    qio_close(q);
    /* ending past qemu's BDRV_MAX_LENGTH */
    be64_put(b + QCOW2_OFF_REFTABLE_OFFSET, 0x7fffffffc0000000ull);
    be32_put(b + QCOW2_OFF_REFTABLE_CLUSTERS, 1);
    q = qio_open_mem(b, len, true, MEM_MAX);
    memset(&m, 0, sizeof(m));
    /* qemu-io on such an image: "can't open device F: Could not initialize refcount
     * handling: Input/output error" */
    assert_int_equal(qcow2_image_open(&m, q, "x", &o, &err), -EIO);
    assert_string_equal(err, "Could not initialize refcount handling: Input/output error");
    free(err);
    qcow2_image_close(&m);
    qio_close(q);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_64k),
        cmocka_unit_test(test_fresh_512_r1),
        cmocka_unit_test(test_growth_512_r64),
        cmocka_unit_test(test_growth_512_r1),
        cmocka_unit_test(test_reuse_64k),
        cmocka_unit_test(test_growth_elsewhere),
        cmocka_unit_test(test_self_describing),
        cmocka_unit_test(test_refblock_elsewhere),
        cmocka_unit_test(test_update_across_blocks),
        cmocka_unit_test(test_free_reuse),
        cmocka_unit_test(test_alloc_bytes),
        cmocka_unit_test(test_widths),
        cmocka_unit_test(test_eio_full_range),
        cmocka_unit_test(test_discard),
        cmocka_unit_test(test_discard_cache),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_rdwr_reftable),
        cmocka_unit_test(test_order_hooks),
        cmocka_unit_test(test_eio_alloc),
        cmocka_unit_test(test_crash_alloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
