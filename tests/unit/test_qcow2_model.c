/* The qcow2 model's shared pieces: the one table loader's rule at EOF and the refblock
 * cache, on the in-memory backend. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test_format_helpers.h"
#include "format/be.h"
#include "qcow2/image.h"
#include "qcow2/refcount.h"
#include "qcow2/table.h"

static void test_table_eof(void **state)
{
    (void)state;
    /* a 100-byte file; a table of 16 entries at 64: entries 0..3 inside, entry 4 straddles
     * EOF (bytes 96..99 inside, read with zeros after), 5..15 past EOF */
    uint8_t img[100];
    memset(img, 0, sizeof(img));
    for (int i = 0; i < 4; i++)
        be64_put(img + 64 + i * 8, 0x10000u * (i + 1));
    memset(img + 96, 0xff, 4);
    qio_t *q = qio_open_mem(img, sizeof(img), false, sizeof(img));
    uint64_t *t, n;
    assert_int_equal(qcow2_table_load(q, sizeof(img), 64, 16, 0, &t, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(t[0], 0x10000);
    assert_int_equal(t[3], 0x40000);
    assert_int_equal(t[4], 0xffffffff00000000ull);
    free(t);
    /* PAD: all 16 entries, zeros past EOF */
    assert_int_equal(qcow2_table_load(q, sizeof(img), 64, 16, QCOW2_TABLE_PAD, &t, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(t[15], 0);
    assert_int_equal(t[1], 0x20000);
    free(t);
    /* wholly past EOF: nothing loaded (PAD still gives a table) */
    assert_int_equal(qcow2_table_load(q, sizeof(img), 4096, 8, 0, &t, &n), 0);
    assert_null(t);
    assert_int_equal(n, 0);
    assert_int_equal(qcow2_table_load(q, sizeof(img), 4096, 8, QCOW2_TABLE_PAD, &t, &n), 0);
    assert_non_null(t);
    assert_int_equal(t[7], 0);
    free(t);
    /* ending past qemu's BDRV_MAX_LENGTH: an I/O error, not zeros */
    assert_int_equal(qcow2_table_load(q, sizeof(img), 0x8000000000090000ull, 2, 0, &t, &n),
                     -EIO);
    assert_null(t);
    assert_int_equal(qcow2_table_in_file(96, 3, 100), 1);
    assert_int_equal(qcow2_table_in_file(100, 3, 100), 0);
    qio_close(q);
}

static void test_rb_cache(void **state)
{
    (void)state;
    /* 512-byte clusters, 16-bit refcounts: refblock at 0x400 covers clusters 0..255 */
    size_t len = 0x800;
    uint8_t *img = calloc(1, len);
    be16_put(img + 0x400 + 3 * 2, 7);
    qio_t *q = qio_open_mem(img, len, false, len);
    uint64_t rt[3] = {0x400, 0, 0x601};
    struct qcow2_rb_cache c = {0};
    uint64_t v;
    assert_int_equal(qcow2_rb_cache_refcount(&c, q, 512, 4, 8, rt, 3, 3, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(qcow2_rb_cache_refcount(&c, q, 512, 4, 8, rt, 3, 4, &v), 0);
    assert_int_equal(v, 0);
    /* no refblock (entry 0, or past the table): refcount 0 */
    assert_int_equal(qcow2_rb_cache_refcount(&c, q, 512, 4, 8, rt, 3, 256 + 5, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(qcow2_rb_cache_refcount(&c, q, 512, 4, 8, rt, 3, 3 * 256, &v), 0);
    assert_int_equal(v, 0);
    /* a refblock offset not aligned to the cluster (4 KiB here): corruption, not a read */
    struct qcow2_rb_cache c4 = {0};
    assert_int_equal(qcow2_rb_cache_refcount(&c4, q, 4096, 4, 11, rt, 3, 0, &v), -EIO);
    assert_null(c4.buf[0]);
    /* the cache keeps the block: a patched copy stays until dropped */
    uint8_t *blk;
    assert_int_equal(qcow2_rb_cache_get(&c, q, 512, rt, 3, 0, &blk), 0);
    be16_put(blk + 3 * 2, 9);
    assert_int_equal(qcow2_rb_cache_refcount(&c, q, 512, 4, 8, rt, 3, 3, &v), 0);
    assert_int_equal(v, 9);
    qcow2_rb_cache_drop(&c);
    assert_int_equal(qcow2_rb_cache_refcount(&c, q, 512, 4, 8, rt, 3, 3, &v), 0);
    assert_int_equal(v, 7);
    qcow2_rb_cache_free(&c);
    qio_close(q);
    free(img);
}

/* qemu-img create -f qcow2 x 1M: header, reftable at 64 KiB, refblock at 128 KiB, L1 at
 * 192 KiB (one entry); len bytes of it. */
static uint8_t *small_image(size_t len)
{
    uint8_t *img = calloc(1, 0x40000);
    memcpy(img, qemu_1m_header, sizeof(qemu_1m_header));
    be64_put(img + 0x10000, 0x20000);
    for (int k = 0; k < 4; k++)
        be16_put(img + 0x20000 + k * 2, 1);
    assert_true(len <= 0x40000);
    return img;
}

static void test_open_modes(void **state)
{
    (void)state;
    uint8_t *img = small_image(0x40000);
    qio_t *q = qio_open_mem(img, 0x40000, false, 0x40000);
    char *err = NULL;
    uint64_t v;

    /* READ: the L1 whole, no reftable until asked for */
    struct qcow2_image m = {0};
    struct qcow2_open_opts ro = { .mode = QCOW2_MODE_READ };
    assert_int_equal(qcow2_image_open(&m, q, "x", &ro, &err), 0);
    assert_int_equal(m.cs, 65536);
    assert_non_null(m.l1);
    assert_int_equal(m.l1_loaded, 1);
    assert_null(m.rt);
    assert_null(m.backing_name);
    assert_int_equal(qcow2_image_load_reftable(&m), 0);
    assert_int_equal(m.rt_entries, 8192);
    assert_int_equal(qcow2_image_refcount(&m, 2, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(qcow2_image_refcount(&m, 4, &v), 0);
    assert_int_equal(v, 0);
    qcow2_image_close(&m);

    /* CHECK: the reftable at open, clamped to the file */
    memset(&m, 0, sizeof(m));
    struct qcow2_open_opts co = { .mode = QCOW2_MODE_CHECK };
    assert_int_equal(qcow2_image_open(&m, q, "x", &co, &err), 0);
    assert_non_null(m.rt);
    assert_int_equal(m.rt_loaded, 8192);
    assert_int_equal(m.rt[0], 0x20000);
    assert_int_equal(qcow2_image_read_snapshots(&m, &(struct qcow2_sn_error){0}), 0);
    assert_int_equal(m.nb_sn, 0);
    qcow2_image_close(&m);
    qio_close(q);

    /* cut 4 bytes into the L1: CHECK loads the straddling entry, READ pads */
    q = qio_open_mem(img, 0x30004, false, 0x30004);
    memset(&m, 0, sizeof(m));
    assert_int_equal(qcow2_image_open(&m, q, "x", &co, &err), 0);
    assert_int_equal(m.l1_loaded, 1);
    qcow2_image_close(&m);
    qio_close(q);

    /* data-file-raw without a data file: refused, except for info (NO_IO) */
    be64_put(img + 88, 2);
    q = qio_open_mem(img, 0x40000, false, 0x40000);
    memset(&m, 0, sizeof(m));
    assert_int_equal(qcow2_image_open(&m, q, "x", &ro, &err), -EINVAL);
    assert_string_equal(err, "data-file-raw requires a data file");
    free(err);
    qcow2_image_close(&m);
    memset(&m, 0, sizeof(m));
    struct qcow2_open_opts info = { .mode = QCOW2_MODE_READ, .no_io = true };
    assert_int_equal(qcow2_image_open(&m, q, "x", &info, &err), 0);
    qcow2_image_close(&m);
    qio_close(q);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_eof),
        cmocka_unit_test(test_rb_cache),
        cmocka_unit_test(test_open_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
