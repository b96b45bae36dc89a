/* Refcount table entries and refcount block packing at every width. */
#include <errno.h>

#include "test_format_helpers.h"
#include "format/qcow2_refcount.h"

static void test_reft(void **state)
{
    (void)state;
    struct qcow2_reft_entry r;
    struct fmt_error e;
    qcow2_reft_decode(0x20001, &r);
    assert_int_equal(r.offset, 0x20000);
    assert_int_equal(r.reserved, 1);
    assert_int_equal(qcow2_reft_validate(0x20000, 16, 0x10000, &e), 0);
    assert_int_equal(qcow2_reft_validate(0x20001, 16, 0x10000, &e), -EINVAL);
    assert_int_equal(e.offset, 0x10000);
    assert_int_equal(qcow2_reft_validate(0x20200, 16, 0x10000, &e), -EINVAL);
    assert_string_equal(e.rule, "refcount block is not cluster aligned");
    uint64_t ti, bi;
    qcow2_refcount_locate(40000, 15, &ti, &bi);
    assert_int_equal(ti, 1);
    assert_int_equal(bi, 40000 - 32768);
}

static void test_all_orders(void **state)
{
    (void)state;
    uint8_t blk[512];
    for (unsigned order = 0; order <= 6; order++) {
        uint64_t n = qcow2_refblock_entries(sizeof(blk), order), max = qcow2_refcount_max(order), v;
        assert_int_equal(n, sizeof(blk) * 8 / (1u << order));
        memset(blk, 0, sizeof(blk));
        for (uint64_t i = 0; i < n; i++)
            assert_int_equal(qcow2_refblock_set(blk, sizeof(blk), order, i, (i * 7919) & max), 0);
        for (uint64_t i = 0; i < n; i++) {
            assert_int_equal(qcow2_refblock_get(blk, sizeof(blk), order, i, &v), 0);
            assert_true(v == ((i * 7919) & max));
        }
        assert_int_equal(qcow2_refblock_get(blk, sizeof(blk), order, n, &v), -EINVAL);
        assert_int_equal(qcow2_refblock_set(blk, sizeof(blk), order, n, 0), -EINVAL);
        if (order < 6)
            assert_int_equal(qcow2_refblock_set(blk, sizeof(blk), order, 0, max + 1), -EINVAL);
    }
    assert_int_equal(qcow2_refblock_get(blk, sizeof(blk), 7, 0, NULL), -EINVAL);
    assert_true(qcow2_refcount_max(6) == UINT64_MAX);
    assert_int_equal(qcow2_refcount_max(4), 65535);
}

static void test_bit_layout(void **state)
{
    (void)state;
    uint8_t blk[8] = { 0 };
    /* 1-bit: entry 9 is bit 1 of byte 1 */
    qcow2_refblock_set(blk, 8, 0, 9, 1);
    assert_int_equal(blk[1], 0x02);
    /* 2-bit: entry 5 is bits 2-3 of byte 1 */
    memset(blk, 0, 8);
    qcow2_refblock_set(blk, 8, 1, 5, 3);
    assert_int_equal(blk[1], 0x0c);
    /* 4-bit: entry 1 is the high nibble of byte 0 */
    memset(blk, 0, 8);
    qcow2_refblock_set(blk, 8, 2, 1, 0xa);
    assert_int_equal(blk[0], 0xa0);
    /* 16-bit big-endian */
    memset(blk, 0, 8);
    qcow2_refblock_set(blk, 8, 4, 1, 0x1234);
    assert_int_equal(blk[2], 0x12);
    assert_int_equal(blk[3], 0x34);
    /* 64-bit */
    uint64_t v;
    qcow2_refblock_set(blk, 8, 6, 0, 0x0102030405060708ull);
    assert_int_equal(blk[0], 1);
    assert_int_equal(blk[7], 8);
    qcow2_refblock_get(blk, 8, 6, 0, &v);
    assert_true(v == 0x0102030405060708ull);
}

/* The unchecked entry access the checker's loops use is the same layout, and the bytes a
 * writer writes back after a put are exactly those that changed. */
static void test_unchecked_and_bytes(void **state)
{
    (void)state;
    uint8_t blk[64], before[64];
    for (unsigned order = 0; order <= 6; order++) {
        uint64_t n = qcow2_refblock_entries(sizeof(blk), order), max = qcow2_refcount_max(order);
        memset(blk, 0, sizeof(blk));
        for (uint64_t i = 0; i < n; i++)
            qcow2_refblock_put(blk, order, i, (i * 40503 + 7) & max);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t v;
            assert_int_equal(qcow2_refblock_get(blk, sizeof(blk), order, i, &v), 0);
            assert_true(v == ((i * 40503 + 7) & max));
            assert_true(qcow2_refblock_entry(blk, order, i) == v);
        }
        for (uint64_t i = 0; i < n; i++) {
            memcpy(before, blk, sizeof(blk));
            qcow2_refblock_put(blk, order, i, ~qcow2_refblock_entry(blk, order, i) & max);
            uint64_t byte;
            size_t len;
            qcow2_refblock_entry_bytes(order, i, &byte, &len);
            assert_true(byte + len <= sizeof(blk));
            for (size_t k = 0; k < sizeof(blk); k++)
                if (k < byte || k >= byte + len)
                    assert_int_equal(blk[k], before[k]);
            assert_memory_not_equal(blk + byte, before + byte, len);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reft),
        cmocka_unit_test(test_all_orders),
        cmocka_unit_test(test_bit_layout),
        cmocka_unit_test(test_unchecked_and_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
