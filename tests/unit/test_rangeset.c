/* util/rangeset: overlap queries on unsorted, nested and touching ranges. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/rangeset.h"

struct named {
    struct rs_range r;
    const char *what;
};

static void test_rangeset(void **state)
{
    (void)state;
    struct rangeset t;
    rangeset_init(&t, sizeof(struct named));
    ((struct named *)rangeset_add(&t, 50, 60))->what = "c";
    ((struct named *)rangeset_add(&t, 10, 40))->what = "a";   /* covers b */
    ((struct named *)rangeset_add(&t, 20, 25))->what = "b";
    ((struct named *)rangeset_add(&t, 60, 61))->what = "d";   /* touches c */
    assert_null(rangeset_add(&t, 5, 5));                        /* empty: not added */
    rangeset_seal(&t);
    assert_int_equal(t.n, 4);
    assert_false(rangeset_hits(&t, 0, 10));
    assert_true(rangeset_hits(&t, 0, 11));
    assert_true(rangeset_hits(&t, 30, 31));    /* inside a, after b ended: prefix max */
    assert_false(rangeset_hits(&t, 40, 50));
    assert_false(rangeset_hits(&t, 45, 45));   /* empty query */
    assert_true(rangeset_hits(&t, 60, 62));
    assert_false(rangeset_hits(&t, 61, UINT64_MAX));
    assert_int_equal(rangeset_count(&t, 0, 100), 4);
    assert_int_equal(rangeset_count(&t, 22, 23), 2);
    assert_int_equal(rangeset_skip(&t, 5), 5);
    assert_int_equal(rangeset_skip(&t, 22), 40);
    assert_int_equal(rangeset_skip(&t, 55), 60);   /* skips to the end of c, not past d */
    assert_int_equal(rangeset_skip(&t, UINT64_MAX), UINT64_MAX);
    struct named *n = rangeset_find(&t, 22, 23);
    assert_non_null(n);
    assert_string_equal(n->what, "b");            /* the last in start order */
    assert_null(rangeset_find(&t, 40, 50));
    rangeset_clear(&t);
    rangeset_seal(&t);
    assert_false(rangeset_hits(&t, 0, UINT64_MAX));
    rangeset_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_rangeset) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
