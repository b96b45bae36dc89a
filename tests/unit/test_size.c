/* util/size.c's parse_size_ex() is qemu 7.2's qemu_strtosz(): the values below are what the
 * real qemu-io 7.2 parses them to (tests/py/test_qimg_io.py checks the same strings end to end
 * against it). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/size.h"

static void ok(const char *s, uint64_t want)
{
    uint64_t v = 12345;
    int r = parse_size_ex(s, &v);
    if (r != 0 || v != want)
        fail_msg("%s: r=%d v=%llu, want %llu", s, r, (unsigned long long)v,
                 (unsigned long long)want);
}

static void bad(const char *s, int want)
{
    uint64_t v;
    int r = parse_size_ex(s, &v);
    if (r != want)
        fail_msg("%s: r=%d, want %d", s, r, want);
}

static void test_plain_and_suffixes(void **state)
{
    (void)state;
    ok("0", 0);
    ok("4096", 4096);
    ok("+1", 1);
    ok("2b", 2);
    ok("3B", 3);
    ok("1k", 1024);
    ok("1K", 1024);
    ok("1M", 1 << 20);
    ok("1G", 1ULL << 30);
    ok("1T", 1ULL << 40);
    ok("1P", 1ULL << 50);
    ok("7E", 7ULL << 60);
    ok("15E", 15ULL << 60);
    bad("16E", -ERANGE);
    bad("99999999999999999999", -ERANGE);
    bad("-1", -EINVAL);
    bad("1x", -EINVAL);
    bad("", -EINVAL);
    bad("k", -EINVAL);
    bad("1kk", -EINVAL);
    bad("inf", -EINVAL);
}

static void test_fractions(void **state)
{
    (void)state;
    ok("1.5k", 1536);
    ok("1.k", 1024);
    ok("1.0", 1);
    ok("4.7M", 4928307);            /* 4.7 * 2^20 = 4928307.2 */
    ok("0.9999999999k", 1024);       /* rounded half up, not truncated */
    ok("0.0005k", 1);
    ok("0.0004k", 0);
    bad("1.5", -EINVAL);             /* a fraction needs a suffix */
    bad(".5k", -EINVAL);
    bad("1e3", -EINVAL);
    bad("1.5e1k", -EINVAL);
    bad("1.5.k", -EINVAL);
}

static void test_hex(void **state)
{
    (void)state;
    ok("0x1000", 4096);
    ok("0X10", 16);
    ok("0x1B", 27);                  /* B and E are hex digits here */
    ok("0x1E", 30);
    ok("0x10k", 16384);              /* deprecated in 7.2, still accepted with a warning */
    ok("0xffffffffffffffff", UINT64_MAX);
    bad("0x10000000000000000", -ERANGE);
    bad("0x", -EINVAL);
    bad("0xk", -EINVAL);
    bad("0x1.5k", -EINVAL);
    bad("00x10", -EINVAL);
}

static void test_parse_size_range(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(parse_size("8E", &v), -1); /* past INT64_MAX */
    assert_int_equal(parse_size("0x7fffffffffffffff", &v), 0);
    assert_int_equal(v, (uint64_t)INT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_and_suffixes),
        cmocka_unit_test(test_fractions),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_parse_size_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
