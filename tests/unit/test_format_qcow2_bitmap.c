/* Bitmap directory entries and bitmap table entries. */
#include <errno.h>

#include "test_format_helpers.h"
#include "format/qcow2_bitmap.h"

/* One directory entry: table at 0x70000 with 1 entry, granularity 16, name "bm0". */
static size_t make_entry(uint8_t *b)
{
    memset(b, 0, 64);
    be64_put(b, 0x70000);
    be32_put(b + 8, 1);
    be32_put(b + 12, QCOW2_BME_FLAG_AUTO);
    b[16] = 1;
    b[17] = 16;
    be16_put(b + 18, 3);
    memcpy(b + 24, "bm0", 3);
    return 32;
}

static void test_valid(void **state)
{
    (void)state;
    uint8_t b[64];
    struct qcow2_bitmap_dirent e;
    struct fmt_error err;
    uint64_t len;
    make_entry(b);
    assert_int_equal(qcow2_bitmap_dirent_decode(b, sizeof(b), 0x60000, &e, &len, &err), 0);
    assert_int_equal(len, 32);
    assert_string_equal(e.name, "bm0");
    assert_int_equal(e.granularity_bits, 16);
    assert_int_equal(qcow2_bitmap_dirent_validate(&e, 16, 1 << 20, 0x60000, &err), 0);
    assert_int_equal(qcow2_bitmap_dirent_size(3, 0), 32);
    assert_int_equal(qcow2_bitmap_dirent_size(8, 0), 32);
    assert_int_equal(qcow2_bitmap_dirent_size(9, 0), 40);
}

static void expect_bad(unsigned at, int width, uint64_t v, const char *msg)
{
    uint8_t b[64];
    struct qcow2_bitmap_dirent e;
    struct fmt_error err;
    uint64_t len;
    make_entry(b);
    if (width == 1)
        b[at] = (uint8_t)v;
    else if (width == 2)
        be16_put(b + at, (uint16_t)v);
    else if (width == 4)
        be32_put(b + at, (uint32_t)v);
    else
        be64_put(b + at, v);
    assert_int_equal(qcow2_bitmap_dirent_decode(b, sizeof(b), 0, &e, &len, &err), 0);
    assert_int_equal(qcow2_bitmap_dirent_validate(&e, 16, 1 << 20, 0, &err), -EINVAL);
    assert_string_equal(err.qemu_msg, msg);
}

static void test_constraints(void **state)
{
    (void)state;
    const char *c = "Bitmap 'bm0' doesn't satisfy the constraints";
    expect_bad(8, 4, 0, c);                     /* table size 0 */
    expect_bad(8, 4, 0x8000001, c);             /* table size too big */
    expect_bad(8, 4, 0x2001, c);                /* 0x2001 * 64k > 512 MiB */
    expect_bad(0, 8, 0, c);                     /* table offset 0 */
    expect_bad(0, 8, 0x70200, c);               /* unaligned */
    expect_bad(17, 1, 8, c);                    /* granularity */
    expect_bad(17, 1, 32, c);
    expect_bad(12, 4, 4, c);                    /* reserved flag bit 2 */
    expect_bad(16, 1, 2, c);                    /* type */
    expect_bad(20, 4, 8, "Bitmap extra data is not supported");
}

static void test_coverage_and_structure(void **state)
{
    (void)state;
    uint8_t b[64];
    struct qcow2_bitmap_dirent e;
    struct fmt_error err;
    uint64_t len;
    make_entry(b);
    b[17] = 9;
    assert_int_equal(qcow2_bitmap_dirent_decode(b, sizeof(b), 0, &e, &len, &err), 0);
    assert_int_equal(qcow2_bitmap_dirent_validate(&e, 16, 256ull << 20, 0, &err), 0);
    assert_int_equal(qcow2_bitmap_dirent_validate(&e, 16, (256ull << 20) + 1, 0, &err), -EINVAL);
    e.flags |= QCOW2_BME_FLAG_IN_USE;
    assert_int_equal(qcow2_bitmap_dirent_validate(&e, 16, (256ull << 20) + 1, 0, &err), 0);

    /* empty name: refused by our rule only, so no qemu text */
    e.flags = 0;
    e.name_size = 0;
    assert_int_equal(qcow2_bitmap_dirent_validate(&e, 16, 1, 0, &err), -EINVAL);
    assert_string_equal(err.qemu_msg, "");

    /* structure: header past the end, name past the end */
    assert_int_equal(qcow2_bitmap_dirent_decode(b, 23, 0, &e, &len, &err), -EINVAL);
    assert_string_equal(err.qemu_msg, "Broken bitmap directory");
    assert_int_equal(qcow2_bitmap_dirent_decode(b, 26, 0, &e, &len, &err), -EINVAL);
    be32_put(b + 20, 0xffffffff);
    assert_int_equal(qcow2_bitmap_dirent_decode(b, sizeof(b), 0, &e, &len, &err), -EINVAL);
}

static void test_table_entries(void **state)
{
    (void)state;
    struct qcow2_bitmap_tentry t;
    struct fmt_error err;
    qcow2_bitmap_tentry_decode(1, &t);
    assert_true(t.all_ones);
    assert_int_equal(t.offset, 0);
    qcow2_bitmap_tentry_decode(0x80000, &t);
    assert_false(t.all_ones);
    assert_int_equal(t.offset, 0x80000);
    assert_int_equal(qcow2_bitmap_tentry_validate(0, 16, 0, &err), 0);
    assert_int_equal(qcow2_bitmap_tentry_validate(1, 16, 0, &err), 0);
    assert_int_equal(qcow2_bitmap_tentry_validate(0x80000, 16, 0, &err), 0);
    assert_int_equal(qcow2_bitmap_tentry_validate(0x80001, 16, 0, &err), -EINVAL);
    assert_int_equal(qcow2_bitmap_tentry_validate(0x80200, 16, 0, &err), -EINVAL);
    assert_int_equal(qcow2_bitmap_tentry_validate(2, 16, 0, &err), -EINVAL);
    assert_int_equal(qcow2_bitmap_tentry_validate(1ull << 56, 16, 0, &err), -EINVAL);
}

/* qemu's load_bitmap_data size: ceil(ceil(ceil(size / granularity) / 64) * 8 / cs) */
static void test_table_clusters(void **state)
{
    (void)state;
    assert_int_equal(qcow2_bitmap_table_clusters(8 << 20, 16, 16), 1);     /* 128 bits */
    assert_int_equal(qcow2_bitmap_table_clusters(1ull << 40, 16, 16), 32); /* 2 MiB */
    assert_int_equal(qcow2_bitmap_table_clusters(1ull << 40, 16, 9), 4096);
    /* one bit more needs a whole 64-bit word, and one byte past a cluster another one */
    assert_int_equal(qcow2_bitmap_table_clusters((512ull * 8 * 64) << 9, 9, 9), 64);
    assert_int_equal(qcow2_bitmap_table_clusters(((512ull * 8 * 64) << 9) + 512, 9, 9), 65);
    assert_int_equal(qcow2_bitmap_table_clusters(512, 31, 21), 1);
    assert_int_equal(qcow2_bitmap_table_clusters(0, 16, 16), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_constraints),
        cmocka_unit_test(test_coverage_and_structure),
        cmocka_unit_test(test_table_entries),
        cmocka_unit_test(test_table_clusters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
