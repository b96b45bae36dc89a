/* qcow2_measure arithmetic against values qemu-img 7.2 measure printed (--size N -O qcow2
 * with options) and a bitmap size worked out by hand from qcow2_get_persistent_dirty_bitmap_size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "qcow2/measure.h"

static void test_prealloc_size_matches_qemu(void **state)
{
    (void)state;
    /* qemu-img measure --size 1G -O qcow2: fully allocated size 1074135040 */
    assert_int_equal(qcow2_calc_prealloc_size(1ull << 30, 65536, 4, false), 1074135040ull);
    /* -o extended_l2=on: 1074266112 */
    assert_int_equal(qcow2_calc_prealloc_size(1ull << 30, 65536, 4, true), 1074266112ull);
    /* --size 0: header, one L1 cluster, one refblock, one reftable cluster */
    assert_int_equal(qcow2_calc_prealloc_size(0, 65536, 4, false), 196608ull);
}

static void test_l1_limit(void **state)
{
    (void)state;
    /* 512-byte clusters: 64 entries per L2 table, 4 Mi L1 entries max -> 128 GiB */
    assert_true(qcow2_measure_l1_ok(128ull << 30, 512, false));
    assert_false(qcow2_measure_l1_ok((128ull << 30) + 512, 512, false));
    /* 2 MiB clusters: 2^18 entries per table -> 2 EiB (qemu: --size 2E passes) */
    assert_true(qcow2_measure_l1_ok(1ull << 61, 2 << 20, false));
    assert_false(qcow2_measure_l1_ok((1ull << 61) + (2 << 20), 2 << 20, false));
}

static void test_bitmaps(void **state)
{
    (void)state;
    /* 100 MiB disk, 64 KiB granularity: 1600 bits = 200 bytes = 1 cluster, its table
     * cluster, and a directory entry of 24 + 2 bytes rounded to 32 -> 1 cluster */
    struct qcow2_measure_bitmap bm[] = { { 2, 16 } };
    assert_int_equal(qcow2_measure_bitmaps(bm, 1, 100 << 20, 65536), 3 * 65536ull);
    assert_int_equal(qcow2_measure_bitmaps(NULL, 0, 100 << 20, 65536), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prealloc_size_matches_qemu),
        cmocka_unit_test(test_l1_limit),
        cmocka_unit_test(test_bitmaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
