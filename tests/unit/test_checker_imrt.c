/* The IMRT keeps one byte per cluster and spills refcounts >= IMRT_SPILL into a hash map:
 * every value must read back exactly, across the boundary, after rehashing, growing and
 * zeroing, for every refcount width. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "checker/imrt.h"

static void test_values_around_spill(void **state)
{
    (void)state;
    struct imrt t;
    assert_int_equal(imrt_init(&t, 1000, 6), 0);
    assert_int_equal(t.max, UINT64_MAX);
    const uint64_t vals[] = { 0, 1, 2, 254, 255, 256, 65535, 65536, UINT64_MAX };
    for (uint64_t k = 0; k < 1000; k++)
        imrt_set(&t, k, vals[k % 9]);
    for (uint64_t k = 0; k < 1000; k++)
        assert_int_equal(imrt_get(&t, k), vals[k % 9]);
    /* back below the spill value and up again: the stale map entry must not leak out */
    imrt_set(&t, 4, 3);
    assert_int_equal(imrt_get(&t, 4), 3);
    imrt_set(&t, 4, 300);
    assert_int_equal(imrt_get(&t, 4), 300);
    imrt_free(&t);
}

static void test_increment_through_spill(void **state)
{
    (void)state;
    struct imrt t;
    assert_int_equal(imrt_init(&t, 8, 4), 0);
    assert_int_equal(t.max, 65535);
    for (int i = 0; i < 70000 && imrt_get(&t, 5) != t.max; i++)
        imrt_set(&t, 5, imrt_get(&t, 5) + 1);
    assert_int_equal(imrt_get(&t, 5), 65535);
    assert_int_equal(imrt_get(&t, 4), 0);
    assert_int_equal(imrt_get(&t, 6), 0);
    imrt_free(&t);
}

static void test_many_spilled_rehash_grow_zero(void **state)
{
    (void)state;
    struct imrt t;
    assert_int_equal(imrt_init(&t, 100000, 5), 0);
    for (uint64_t k = 0; k < 100000; k += 3)
        imrt_set(&t, k, 1000 + k);
    assert_true(t.spill.cap >= 2 * t.spill.used);
    assert_int_equal(imrt_grow(&t, 3000000), 0);   /* past the huge-page threshold */
    assert_int_equal(t.n, 3000001);
    imrt_set(&t, 3000000, 77777);
    for (uint64_t k = 0; k < 100000; k++)
        assert_int_equal(imrt_get(&t, k), k % 3 ? 0 : 1000 + k);
    assert_int_equal(imrt_get(&t, 2999999), 0);
    assert_int_equal(imrt_get(&t, 3000000), 77777);
    imrt_zero(&t);
    for (uint64_t k = 0; k < 100000; k += 3)
        assert_int_equal(imrt_get(&t, k), 0);
    assert_int_equal(imrt_get(&t, 3000000), 0);
    imrt_free(&t);
}

/* refcount_bits 1, 2, 4 are packed: every entry keeps its own value, neighbours in the
 * same byte included, through grow and zero; 8 bits uses the byte table. */
static void test_narrow_widths(void **state)
{
    (void)state;
    static const uint64_t max[] = { 1, 3, 15, 255 };
    static const unsigned bits[] = { 1, 2, 4, 8 };
    for (unsigned order = 0; order < 4; order++) {
        struct imrt t;
        assert_int_equal(imrt_init(&t, 37, order), 0);   /* not a whole number of bytes */
        assert_int_equal(t.max, max[order]);
        assert_int_equal(t.bits, bits[order]);
        for (uint64_t k = 0; k < 37; k++)
            imrt_set(&t, k, (k * 7 + 3) % (t.max + 1));
        for (uint64_t k = 0; k < 37; k++)
            assert_int_equal(imrt_get(&t, k), (k * 7 + 3) % (t.max + 1));
        imrt_set(&t, 36, t.max);
        imrt_set(&t, 35, 0);
        assert_int_equal(imrt_get(&t, 36), t.max);
        assert_int_equal(imrt_get(&t, 35), 0);
        assert_int_equal(imrt_get(&t, 34), (34 * 7 + 3) % (t.max + 1));
        assert_int_equal(imrt_grow(&t, 20000000), 0);   /* packed, on huge pages */
        assert_int_equal(imrt_get(&t, 36), t.max);
        assert_int_equal(imrt_get(&t, 19999999), 0);
        imrt_set(&t, 20000000, 1);
        assert_int_equal(imrt_get(&t, 20000000), 1);
        assert_int_equal(imrt_get(&t, 19999999), 0);
        imrt_zero(&t);
        assert_int_equal(imrt_get(&t, 36), 0);
        assert_int_equal(imrt_get(&t, 20000000), 0);
        imrt_free(&t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_around_spill),
        cmocka_unit_test(test_increment_through_spill),
        cmocka_unit_test(test_many_spilled_rehash_grow_zero),
        cmocka_unit_test(test_narrow_widths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
