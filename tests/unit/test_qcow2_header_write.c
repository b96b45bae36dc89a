/* The model's header writer (qcow2/header_write.h) on the in-memory backend: qemu's
 * qcow2_update_header layout, the open's autoclear rule, the dirty bit. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test_format_helpers.h"
#include "format/be.h"
#include "format/qcow2_ext.h"
#include "qcow2/header_write.h"
#include "qcow2/image.h"

#define CS 65536u

/* A v3 image of 64 KiB clusters: header (length hl), extensions as given, END, the
 * backing name; reftable at CS (one refblock at 2*CS counting clusters 0..2), no L1. */
static uint8_t *make_image(uint32_t hl, const uint8_t *exts, size_t exts_len,
                           const char *backing, size_t *len)
{
    *len = 3 * CS;
    uint8_t *img = calloc(1, *len);
    be32_put(img, QCOW2_MAGIC);
    be32_put(img + 4, 3);
    be32_put(img + 20, 16);
    be64_put(img + 48, CS);
    be32_put(img + 56, 1);
    be64_put(img + 88, (1ull << 63) | 1);  /* unknown bit and bitmaps (no extension) */
    be32_put(img + 96, 4);
    be32_put(img + 100, hl);
    for (uint32_t i = 112; i < hl; i++)
        img[i] = (uint8_t)i;               /* unknown header tail */
    if (exts_len)
        memcpy(img + hl, exts, exts_len);  /* END follows (zeros) */
    if (backing) {
        size_t off = hl + exts_len + 8;
        memcpy(img + off, backing, strlen(backing));
        be64_put(img + 8, off);
        be32_put(img + 16, (uint32_t)strlen(backing));
    }
    be64_put(img + CS, 2 * CS);
    for (int k = 0; k < 3; k++)
        be16_put(img + 2 * CS + 2 * k, 1);
    return img;
}

static size_t put_ext(uint8_t *p, uint32_t magic, const char *data)
{
    uint32_t n = (uint32_t)strlen(data);
    be32_put(p, magic);
    be32_put(p + 4, n);
    memcpy(p + 8, data, n);
    return 8 + ((n + 7) & ~7u);
}

static void open_rdwr(struct qcow2_image *m, qio_t *q)
{
    struct qcow2_open_opts o = { .mode = QCOW2_MODE_RDWR };
    char *err = NULL;
    memset(m, 0, sizeof(*m));
    assert_int_equal(qcow2_image_open(m, q, "mem", &o, &err), 0);
}

static void test_rewrite_layout(void **state)
{
    (void)state;
    uint8_t exts[64];
    size_t n = put_ext(exts, 0x11111111, "first");
    n += put_ext(exts + n, 0x22222222, "second");
    size_t len;
    uint8_t *img = make_image(120, exts, n, "base.img", &len);
    qio_t *q = qio_open_mem(img, len, true, len);
    struct qcow2_image m;
    open_rdwr(&m, q);
    assert_int_equal(qcow2_image_activate(&m, NULL), 0);
    uint8_t c0[CS];
    assert_int_equal(qio_pread(q, c0, sizeof(c0), 0), 0);
    assert_int_equal(be64_get(c0 + 88), 1);             /* bitmaps bit kept */
    assert_int_equal(be32_get(c0 + 100), 120);           /* 112 + the unknown tail */
    assert_int_equal(c0[119], 119);
    /* feature table (clusters over 4 KiB): 8 entries of 48 bytes, dirty bit first */
    assert_int_equal(be32_get(c0 + 120), QCOW2_EXT_FEATURE_TABLE);
    assert_int_equal(be32_get(c0 + 124), 384);
    assert_string_equal((const char *)c0 + 128 + 2, "dirty bit");
    assert_string_equal((const char *)c0 + 128 + 7 * 48 + 2, "raw external data");
    /* unknown extensions in reverse order (qemu's list head), then END, then the name */
    size_t p = 128 + 384;
    assert_int_equal(be32_get(c0 + p), 0x22222222);
    p += 8 + 8;
    assert_int_equal(be32_get(c0 + p), 0x11111111);
    p += 8 + 8;
    assert_int_equal(be64_get(c0 + p), 0);
    p += 8;
    assert_int_equal(be64_get(c0 + 8), p);
    assert_int_equal(be32_get(c0 + 16), 8);
    assert_memory_equal(c0 + p, "base.img", 8);
    assert_int_equal(m.h.backing_file_offset, p);
    /* a second rewrite finds nothing to change */
    assert_false(qcow2_header_open_update(&m));
    uint8_t again[CS];
    uint64_t boff;
    uint32_t bsize;
    assert_int_equal(qcow2_header_build(&m, again, CS, &boff, &bsize), 0);
    assert_memory_equal(again, c0, CS);
    qcow2_image_close(&m);
    qio_close(q);
    free(img);
}

static void test_diff_span(void **state)
{
    (void)state;
    uint8_t a[512], b[512];
    memset(a, 1, sizeof(a));
    memcpy(b, a, sizeof(b));
    size_t from, to;
    qcow2_header_diff(a, b, 512, 4096, &from, &to);
    assert_int_equal(from, to);
    b[88] = 0;
    b[100] = 0;
    qcow2_header_diff(a, b, 512, 4096, &from, &to);
    assert_int_equal(from, 88);
    assert_int_equal(to, 101);
    /* a file ending inside cluster 0 is written up to the cluster's end, as qemu's write */
    qcow2_header_diff(a, a, 512, 200, &from, &to);
    assert_int_equal(from, 200);
    assert_int_equal(to, 512);
}

static void test_no_room(void **state)
{
    (void)state;
    /* a backing name that does not fit behind END: -ENOSPC, as qemu's rewrite */
    size_t len;
    uint8_t *img = make_image(112, NULL, 0, NULL, &len);
    qio_t *q = qio_open_mem(img, len, true, len);
    struct qcow2_image m;
    open_rdwr(&m, q);
    m.h.backing_file_offset = 1; /* the model had a name */
    char *name = malloc(CS);
    memset(name, 'x', CS - 1);
    name[CS - 1] = '\0';
    m.backing_name = name;
    uint8_t *c0 = malloc(CS);
    uint64_t boff;
    uint32_t bsize;
    assert_int_equal(qcow2_header_build(&m, c0, CS, &boff, &bsize), -ENOSPC);
    free(c0);
    qcow2_image_close(&m);
    qio_close(q);
    free(img);
}

static void test_dirty_bit(void **state)
{
    (void)state;
    size_t len;
    uint8_t *img = make_image(112, NULL, 0, NULL, &len);
    qio_t *q = qio_open_mem(img, len, true, len);
    struct qcow2_image m;
    open_rdwr(&m, q);
    assert_int_equal(qcow2_image_activate(&m, NULL), 0);
    assert_true(qcow2_image_need_accurate_refcounts(&m));
    assert_int_equal(qcow2_image_mark_dirty(&m), 0);
    uint8_t b[8];
    assert_int_equal(qio_pread(q, b, 8, 72), 0);
    assert_int_equal(be64_get(b), QCOW2_INCOMPAT_DIRTY);
    assert_false(qcow2_image_need_accurate_refcounts(&m));
    assert_int_equal(qcow2_image_inactivate(&m), 0); /* not active: nothing */
    assert_int_equal(qio_pread(q, b, 8, 72), 0);
    assert_int_equal(be64_get(b), QCOW2_INCOMPAT_DIRTY);
    m.active = true;
    assert_int_equal(qcow2_image_inactivate(&m), 0);
    assert_int_equal(qio_pread(q, b, 8, 72), 0);
    assert_int_equal(be64_get(b), 0);
    assert_int_equal(qcow2_image_mark_corrupt(&m), 0);
    assert_int_equal(qio_pread(q, b, 8, 72), 0);
    assert_int_equal(be64_get(b), QCOW2_INCOMPAT_CORRUPT);
    assert_int_equal(qcow2_image_mark_consistent(&m), 0);
    assert_int_equal(qio_pread(q, b, 8, 72), 0);
    assert_int_equal(be64_get(b), 0);
    qcow2_image_close(&m);
    qio_close(q);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrite_layout),
        cmocka_unit_test(test_diff_span),
        cmocka_unit_test(test_no_room),
        cmocka_unit_test(test_dirty_bit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
