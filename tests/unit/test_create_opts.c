/* create_opts: qemu's QemuOpts rules for -o strings (escapes, short booleans, types, errors),
 * help detection, the Formatting line's order and defaults, the merged help listing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "block/create_opts.h"

static char *printed(const struct copts *o)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    copts_print(o, f);
    fclose(f);
    return buf;
}

static void test_defaults_and_order(void **state)
{
    (void)state;
    struct copts o;
    char err[512];
    assert_int_equal(copts_init(&o, "qcow2", true), 0);
    assert_int_equal(copts_parse(&o, "compat=0.10,refcount_bits=010,backing_file=a,,b", err,
                                 sizeof(err)), 0);
    copts_set_number(&o, "size", 1048576);
    char *s = printed(&o);
    assert_string_equal(s, "cluster_size=65536 extended_l2=off compression_type=zlib "
                           "size=1048576 compat=0.10 backing_file=a,,b lazy_refcounts=off "
                           "refcount_bits=8");
    free(s);
    assert_string_equal(copts_str(&o, "backing_file"), "a,b");
    assert_int_equal(copts_num(&o, "cluster_size", 0), 65536);
    assert_false(copts_isset(&o, "cluster_size"));
    copts_free(&o);
}

static void test_short_bools_and_errors(void **state)
{
    (void)state;
    struct copts o;
    char err[512];
    assert_int_equal(copts_init(&o, "qcow2", false), 0);
    assert_int_equal(copts_parse(&o, "lazy_refcounts,noextended_l2", err, sizeof(err)), 0);
    assert_true(copts_bool(&o, "lazy_refcounts", false));
    assert_string_equal(copts_str(&o, "extended_l2"), "off");
    assert_int_equal(copts_parse(&o, "a,,", err, sizeof(err)), -1);
    assert_string_equal(err, "Invalid parameter 'a'");
    assert_int_equal(copts_parse(&o, "lazy_refcounts=ON", err, sizeof(err)), -1);
    assert_string_equal(err, "Parameter 'lazy_refcounts' expects 'on' or 'off'");
    assert_int_equal(copts_parse(&o, "refcount_bits=x", err, sizeof(err)), -1);
    assert_string_equal(err, "Parameter 'refcount_bits' expects a number");
    assert_int_equal(copts_parse(&o, "refcount_bits=99999999999999999999", err, sizeof(err)),
                     -1);
    assert_string_equal(err, "Value '99999999999999999999' is too large for parameter "
                             "'refcount_bits'");
    assert_int_equal(copts_parse(&o, "cluster_size=16E", err, sizeof(err)), -1);
    assert_string_equal(err, "Value '16E' is out of range for parameter 'cluster_size'");
    assert_int_equal(copts_parse(&o, "nocow=on", err, sizeof(err)), -1); /* no protocol */
    assert_string_equal(err, "Invalid parameter 'nocow'");
    copts_free(&o);
    assert_int_equal(copts_init(&o, "vmdk", false), -1);
}

static void test_help_detection(void **state)
{
    (void)state;
    assert_true(copts_has_help("help"));
    assert_true(copts_has_help("size=1M,?"));
    assert_true(copts_has_help("help,,x"));
    assert_false(copts_has_help("help=1"));
    assert_false(copts_has_help("backing_file=help"));
    assert_false(copts_has_help("backing_file=a,,help"));
}

static void test_backing_formats(void **state)
{
    (void)state;
    assert_true(copts_backing_fmt_known("qcow2"));
    assert_true(copts_backing_fmt_known("raw"));
    assert_false(copts_backing_fmt_known("foo"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_order),
        cmocka_unit_test(test_short_bools_and_errors),
        cmocka_unit_test(test_help_detection),
        cmocka_unit_test(test_backing_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
