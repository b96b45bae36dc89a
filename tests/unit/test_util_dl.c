/* util/dl.c: the one loader of libnbd and libssh. Checked on libc (always there): every
 * slot filled with the real function, and the two failures (library, symbol) leaving
 * nothing loaded with the "<what> needs <lib>: <dlerror>" line the open reports. */
#include <errno.h>
#include <stdio.h>
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

/* dl_load of syms from soname fails: nothing loaded, no slot left filled, and the message
 * is "<what> needs <lib>: " then dlerror's text, which names the missing piece */
static void expect_failure(const char *soname, const char *missing, const char *what,
                           const char *lib)
{
    void *h = NULL;
    void *a = NULL, *b = NULL;
    const struct dl_sym syms[] = { { "strlen", &a }, { missing, &b } };
    char *msg = NULL;
    assert_int_equal(dl_load(&h, soname, what, lib, syms, 2, &msg), -ENOTSUP);
    assert_null(h);
    assert_null(a);
    assert_null(b);
    assert_non_null(msg);
    char *want = NULL;
    assert_true(asprintf(&want, "%s needs %s: ", what, lib) > 0);
    assert_true(strncmp(msg, want, strlen(want)) == 0);
    assert_non_null(strstr(msg, strcmp(soname, "libc.so.6") ? soname : missing));
    free(want);
    free(msg);
}

static void test_missing_symbol(void **state)
{
    (void)state;
    expect_failure("libc.so.6", "qimg_no_such_symbol", "NBD", "libnbd (Debian's libnbd0)");
}

static void test_missing_library(void **state)
{
    (void)state;
    expect_failure("libqimg-absent.so.9", "strcmp", "ssh", "libssh (Debian's libssh-4)");
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
