/* The in-memory persistent bitmaps (qcow2/bitmap_store.h): which bits a request sets, and
 * what a resize keeps. */
#include <stdlib.h>
#include <string.h>

#include "test_format_helpers.h"
#include "qcow2/bitmap_store.h"
#include "qcow2/image.h"

static bool bit(const struct qcow2_dbitmap *b, uint64_t k)
{
    return (b->bits[k / 8] >> (k % 8)) & 1;
}

static uint64_t count(const struct qcow2_dbitmap *b)
{
    uint64_t n = 0;
    for (uint64_t k = 0; k < b->nbytes * 8; k++)
        n += bit(b, k);
    return n;
}

static void test_set_dirty(void **state)
{
    (void)state;
    struct qcow2_image m;
    memset(&m, 0, sizeof(m));
    m.h.size = 1000000 + 100; /* qemu's disk: whole sectors, 1000448 bytes */
    struct qcow2_dbitmap *a = qcow2_dbitmap_add(&m, "a", 12, true);
    assert_non_null(a);
    assert_int_equal(a->nbits, 245);     /* ceil(1000448 / 4096) */
    assert_int_equal(a->nbytes, 32);     /* whole 64-bit words */
    qcow2_dbitmap_add(&m, "off", 9, false);
    qcow2_bitmaps_set_dirty(&m, 4095, 2);           /* touches granules 0 and 1 */
    qcow2_bitmaps_set_dirty(&m, 65536, 65536);      /* 16..31 exactly */
    qcow2_bitmaps_set_dirty(&m, 999999, 0);         /* empty: nothing */
    qcow2_bitmaps_set_dirty(&m, 1000000, 448);      /* the last granule */
    a = qcow2_dbitmap_find(&m, "a");
    assert_true(bit(a, 0) && bit(a, 1) && !bit(a, 2));
    assert_true(!bit(a, 15) && bit(a, 16) && bit(a, 31) && !bit(a, 32));
    assert_true(bit(a, 244));
    assert_int_equal(count(a), 2 + 16 + 1);
    assert_int_equal(count(qcow2_dbitmap_find(&m, "off")), 0); /* disabled */
    assert_null(qcow2_dbitmap_find(&m, "none"));
    /* shrink drops the bits past the end, growth brings clear ones */
    assert_int_equal(qcow2_bitmaps_resize(&m, 20 * 4096), 0);
    a = qcow2_dbitmap_find(&m, "a");
    assert_int_equal(a->nbits, 20);
    assert_int_equal(count(a), 2 + 4);
    assert_int_equal(qcow2_bitmaps_resize(&m, 4 << 20), 0);
    a = qcow2_dbitmap_find(&m, "a");
    assert_int_equal(a->nbits, 1024);
    assert_int_equal(count(a), 2 + 4);
    qcow2_bitmaps_set_dirty(&m, (4 << 20) - 1, 1);
    assert_true(bit(a, 1023));
    qcow2_bitmaps_free(&m);
    assert_null(m.dbm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_dirty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
