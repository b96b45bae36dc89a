/* The JSON writer must reproduce qemu's key order and pretty form byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util/json.h"
#include "util/size.h"

static char *render(json_t *j)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    json_print(f, j);
    fclose(f);
    return buf;
}

/* Order observed from qemu-img 7.2 check --output=json with every optional field present. */
static void test_check_key_order(void **state)
{
    (void)state;
    static const char *observed[] = {
        "image-end-offset", "compressed-clusters", "total-clusters", "corruptions",
        "corruptions-fixed", "check-errors", "leaks", "leaks-fixed", "allocated-clusters",
        "filename", "format", "fragmented-clusters",
    };
    json_t *o = json_object();
    /* insert in a different order: output order must not depend on it */
    for (int i = 11; i >= 0; i--)
        json_set(o, observed[i], json_int(i));
    char *s = render(o);
    const char *p = s;
    for (int i = 0; i < 12; i++) {
        char key[64];
        snprintf(key, sizeof key, "\"%s\"", observed[i]);
        const char *q = strstr(p, key);
        assert_non_null(q);
        p = q + strlen(key);
    }
    free(s);
    json_free(o);
}

static void test_pretty_form(void **state)
{
    (void)state;
    json_t *o = json_object();
    json_set(o, "filename", json_string("a\"b\n\x01\xc3\xa9"));
    json_t *a = json_array();
    json_set(o, "format", json_string("qcow2"));
    json_set(o, "flags", a);
    char *s = render(o);
    /* "flags" hashes to an earlier bucket than "filename" (qemu prints bitmaps flags first) */
    assert_string_equal(s, "{\n"
                           "    \"flags\": [\n"
                           "    ],\n"
                           "    \"filename\": \"a\\\"b\\n\\u0001\\u00E9\",\n"
                           "    \"format\": \"qcow2\"\n"
                           "}");
    free(s);
    json_free(o);
}

/* qimg's own objects keep their keys in the order first set; a replaced key keeps its place;
 * a QDict-ordered object nested inside keeps qemu's order. */
static void test_ordered_object(void **state)
{
    (void)state;
    json_t *o = json_object_ordered();
    json_set(o, "kind", json_string("k"));
    json_set(o, "severity", json_string("leak"));
    json_set(o, "fixable-by", json_string("leaks"));
    json_set(o, "message", json_string("m"));
    json_set(o, "kind", json_string("k2"));
    json_t *q = json_object();
    json_set(q, "format", json_string("qcow2"));
    json_set(q, "flags", json_array());
    json_set(o, "host-offset", q);
    char *s = render(o);
    assert_string_equal(s, "{\n"
                           "    \"kind\": \"k2\",\n"
                           "    \"severity\": \"leak\",\n"
                           "    \"fixable-by\": \"leaks\",\n"
                           "    \"message\": \"m\",\n"
                           "    \"host-offset\": {\n"
                           "        \"flags\": [\n"
                           "        ],\n"
                           "        \"format\": \"qcow2\"\n"
                           "    }\n"
                           "}");
    free(s);
    json_free(o);
}

static void test_size_to_str(void **state)
{
    (void)state;
    char b[32];
    assert_string_equal(size_to_str(0, b), "0 B");
    assert_string_equal(size_to_str(1048576, b), "1 MiB");
    assert_string_equal(size_to_str(217088, b), "212 KiB");
    assert_string_equal(size_to_str(1000, b), "0.977 KiB");
    assert_string_equal(size_to_str(1099511627776ULL, b), "1 TiB");
    uint64_t v;
    assert_int_equal(parse_size("1G", &v), 0);
    assert_int_equal(v, 1073741824ULL);
    assert_int_equal(parse_size("1.5k", &v), 0);
    assert_int_equal(v, 1536);
    assert_int_equal(parse_size("12x", &v), -1);
    assert_int_equal(parse_size("-1", &v), -1);
    assert_int_equal(parse_size("16E", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_key_order),
        cmocka_unit_test(test_pretty_form),
        cmocka_unit_test(test_ordered_object),
        cmocka_unit_test(test_size_to_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
