/* util/dl.c: the one loader of libnbd and libssh. Checked on libc (always there): every
 * slot filled with the real function, and the two failures (library, symbol) leaving
 * nothing loaded with the "<what> needs <lib>: <dlerror>" line the open reports. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util/dl.h"

typedef size_t (*strlen_fn)(const char *);
typedef int (*strcmp_fn)(const char *, const char *);

static void test_loads_every_symbol(void **state)
{
    (void)state;
    void *h = NULL;
    strlen_fn my_strlen = NULL;
    strcmp_fn my_strcmp = NULL;
    const struct dl_sym syms[] = { { "strlen", (void **)&my_strlen },
                                   { "strcmp", (void **)&my_strcmp } };
    char *msg = NULL;
    assert_int_equal(dl_load(&h, "libc.so.6", "T", "libc", syms, 2, &msg), 0);
    assert_non_null(h);
    assert_null(msg);
    assert_int_equal(my_strlen("qimg"), 4);
    assert_int_equal(my_strcmp("a", "a"), 0);
    /* loaded once: a second call keeps the handle and touches no slot */
    void *first = h;
    my_strlen = NULL;
    assert_int_equal(dl_load(&h, "libc.so.6", "T", "libc", syms, 2, &msg), 0);
    assert_ptr_equal(h, first);
    assert_null(my_strlen);
}

static void test_missing_symbol(void **state)
{
    (void)state;
    void *h = NULL;
    void *a = NULL, *b = NULL;
    const struct dl_sym syms[] = { { "strlen", &a }, { "qimg_no_such_symbol", &b } };
    char *msg = NULL;
    assert_int_equal(dl_load(&h, "libc.so.6", "NBD", "libnbd (Debian's libnbd0)", syms, 2,
                             &msg), -ENOTSUP);
    assert_null(h);
    assert_non_null(msg);
    const char *want = "NBD needs libnbd (Debian's libnbd0): ";
    assert_true(strncmp(msg, want, strlen(want)) == 0);
    assert_non_null(strstr(msg, "qimg_no_such_symbol"));
    free(msg);
}

static void test_missing_library(void **state)
{
    (void)state;
    void *h = NULL;
    void *a = NULL;
    const struct dl_sym syms[] = { { "f", &a } };
    char *msg = NULL;
    assert_int_equal(dl_load(&h, "libqimg-absent.so.9", "ssh", "libssh (Debian's libssh-4)",
                             syms, 1, &msg), -ENOTSUP);
    assert_null(h);
    assert_null(a);
    const char *want = "ssh needs libssh (Debian's libssh-4): ";
    assert_true(strncmp(msg, want, strlen(want)) == 0);
    assert_non_null(strstr(msg, "libqimg-absent.so.9"));
    free(msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loads_every_symbol),
        cmocka_unit_test(test_missing_symbol),
        cmocka_unit_test(test_missing_library),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
