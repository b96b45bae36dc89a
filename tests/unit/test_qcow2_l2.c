/* The L2 module of the qcow2 model (qcow2/l2.h) on the in-memory backend: table allocation
 * (qemu's l2_allocate / get_cluster_table), the write-back cache, copy of a shared table,
 * L1 growth (qcow2_grow_l1_table).
 *
 * Images are built as `qemu-img create -f qcow2 x 1M` lays them out (64 KiB clusters: header,
 * reftable at cluster 1 naming the refblock at 2, L1 at 3), reopened read-write. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_format_helpers.h"
#include "format/be.h"
#include "format/qcow2_header.h"
#include "format/qcow2_l2.h"
#include "qcow2/alloc.h"
#include "qcow2/image.h"
#include "qcow2/l2.h"

#define CS 65536u
#define MEM_MAX ((size_t)64 << 20)

struct img {
    qio_t *q;
    struct qcow2_image m;
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
    qcow2_l2_cache_init(&t->m, true);
}

static void img_close(struct img *t)
{
    assert_int_equal(qcow2_l2_flush(&t->m), 0);
    assert_int_equal(qcow2_refcount_cache_flush(&t->m), 0);
    qcow2_image_close(&t->m);
}

/* header, reftable (cluster 1) -> refblock (cluster 2) counting clusters 0..3, L1 (cluster
 * 3) of l1_size entries */
static void img_create(struct img *t, uint32_t l1_size)
{
    uint8_t *b = calloc(1, 4 * CS);
    be32_put(b + QCOW2_OFF_MAGIC, 0x514649fb);
    be32_put(b + QCOW2_OFF_VERSION, 3);
    be32_put(b + QCOW2_OFF_CLUSTER_BITS, 16);
    be64_put(b + QCOW2_OFF_SIZE, (uint64_t)l1_size * CS * (CS / 8));
    be32_put(b + QCOW2_OFF_L1_SIZE, l1_size);
    be64_put(b + QCOW2_OFF_L1_OFFSET, 3 * CS);
    be64_put(b + QCOW2_OFF_REFTABLE_OFFSET, CS);
    be32_put(b + QCOW2_OFF_REFTABLE_CLUSTERS, 1);
    be32_put(b + QCOW2_OFF_REFCOUNT_ORDER, 4);
    be32_put(b + QCOW2_OFF_HEADER_LENGTH, 112);
    be64_put(b + CS, 2 * CS);
    for (int i = 0; i < 4; i++)
        be16_put(b + 2 * CS + 2 * i, 1);
    t->q = qio_open_mem(b, 4 * CS, true, MEM_MAX);
    free(b);
    img_open(t);
}

static uint64_t disk64(struct img *t, uint64_t off)
{
    uint8_t e[8];
    assert_int_equal(qio_pread(t->q, e, 8, off), 0);
    return be64_get(e);
}

static uint64_t refcount(struct img *t, uint64_t off)
{
    uint64_t v;
    assert_int_equal(qcow2_image_refcount(&t->m, off / CS, &v), 0);
    return v;
}

/* A fresh L1 entry: the table goes to the first free cluster (4), zeroed, written before
 * the L1 entry that names it with OFLAG_COPIED. */
static void test_allocate_fresh(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 2);
    uint8_t *tab;
    uint64_t idx;
    assert_int_equal(qcow2_l2_table_for_write(&t.m, CS * (CS / 8) + 5 * CS, &tab, &idx), 0);
    assert_int_equal(idx, 5);
    assert_int_equal(disk64(&t, 3 * CS + 8), 4 * CS | QCOW2_OFLAG_COPIED);
    assert_int_equal(t.m.l1[1], 4 * CS | QCOW2_OFLAG_COPIED);
    assert_int_equal(disk64(&t, 3 * CS), 0);
    assert_int_equal(refcount(&t, 4 * CS), 1);
    /* the table is on disk (zeros) before the L1 entry: the file reaches it */
    uint64_t len;
    assert_int_equal(qio_size(t.q, &len), 0);
    assert_true(len >= 5 * CS);
    assert_int_equal(disk64(&t, 4 * CS + 5 * 8), 0);
    /* a second lookup finds the same table */
    uint8_t *tab2;
    assert_int_equal(qcow2_l2_table_for_write(&t.m, CS * (CS / 8), &tab2, &idx), 0);
    assert_ptr_equal(tab, tab2);
    assert_int_equal(idx, 0);
    img_close(&t);
    qio_close(t.q);
}

/* Entries changed in the cache reach the file only when the cache is flushed. */
static void test_write_back(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 1);
    uint8_t *tab;
    uint64_t idx;
    assert_int_equal(qcow2_l2_table_for_write(&t.m, 7 * CS, &tab, &idx), 0);
    qcow2_l2_set(&t.m, tab, idx, 9 * CS | QCOW2_OFLAG_COPIED);
    qcow2_l2_mark_dirty(&t.m, tab);
    assert_int_equal(disk64(&t, 4 * CS + 7 * 8), 0);
    assert_int_equal(qcow2_l2_flush(&t.m), 0);
    assert_int_equal(disk64(&t, 4 * CS + 7 * 8), 9 * CS | QCOW2_OFLAG_COPIED);
    /* readers see the cached entry */
    uint8_t *rt;
    assert_int_equal(qcow2_l2_load(&t.m, 4 * CS, &rt), 0);
    assert_int_equal(qcow2_l2_get(&t.m, rt, 7), 9 * CS | QCOW2_OFLAG_COPIED);
    img_close(&t);
    qio_close(t.q);
}

/* A table shared with a snapshot (L1 entry without OFLAG_COPIED, refcount 2) is copied to a
 * new cluster before it is written; the old table's reference is dropped. */
static void test_copy_shared_table(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 1);
    /* table at cluster 4 with one entry, referenced twice, L1 entry without COPIED */
    assert_int_equal(qcow2_alloc_clusters(&t.m, CS), 4 * CS);
    assert_int_equal(qcow2_update_refcount(&t.m, 4 * CS, CS, 1, QCOW2_DISCARD_NEVER), 0);
    uint8_t e[8];
    be64_put(e, 5 * CS);
    assert_int_equal(qio_pwrite(t.q, e, 8, 4 * CS + 3 * 8), 0);
    assert_int_equal(qcow2_alloc_clusters(&t.m, CS), 5 * CS);
    t.m.l1[0] = 4 * CS;
    assert_int_equal(qcow2_write_l1_entry(&t.m, 0), 0);
    assert_int_equal(refcount(&t, 4 * CS), 2);

    uint8_t *tab;
    uint64_t idx;
    assert_int_equal(qcow2_l2_table_for_write(&t.m, 0, &tab, &idx), 0);
    assert_int_equal(t.m.l1[0], 6 * CS | QCOW2_OFLAG_COPIED);
    assert_int_equal(disk64(&t, 3 * CS), 6 * CS | QCOW2_OFLAG_COPIED);
    assert_int_equal(disk64(&t, 6 * CS + 3 * 8), 5 * CS);   /* copied */
    assert_int_equal(qcow2_l2_get(&t.m, tab, 3), 5 * CS);
    img_close(&t);
    qio_close(t.q);
    (void)idx;
}

/* qcow2_grow_l1_table: the new table at the first free clusters, the header pointed at it,
 * the old table's cluster freed (qemu's order). */
static void test_grow_l1(void **state)
{
    (void)state;
    struct img t;
    img_create(&t, 1);
    uint8_t *tab;
    uint64_t idx;
    assert_int_equal(qcow2_l2_table_for_write(&t.m, 0, &tab, &idx), 0);   /* L2 at 4 */
    assert_int_equal(qcow2_grow_l1_table(&t.m, 3, false), 0);              /* 1 -> 2 -> 3 */
    assert_int_equal(t.m.h.l1_size, 3);
    assert_int_equal(t.m.h.l1_table_offset, 5 * CS);
    uint8_t h[48];
    assert_int_equal(qio_pread(t.q, h, sizeof(h), 0), 0);
    assert_int_equal(be32_get(h + QCOW2_OFF_L1_SIZE), 3);
    assert_int_equal(be64_get(h + QCOW2_OFF_L1_OFFSET), 5 * CS);
    assert_int_equal(disk64(&t, 5 * CS), 4 * CS | QCOW2_OFLAG_COPIED);
    assert_int_equal(refcount(&t, 3 * CS), 0);
    /* a write past the old L1 grows it itself (3/2 steps): entry 4 needs 5 entries */
    assert_int_equal(qcow2_l2_table_for_write(&t.m, 4 * CS * (CS / 8), &tab, &idx), 0);
    assert_int_equal(t.m.h.l1_size, 5);
    img_close(&t);
    qio_close(t.q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocate_fresh),
        cmocka_unit_test(test_write_back),
        cmocka_unit_test(test_copy_shared_table),
        cmocka_unit_test(test_grow_l1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
