/* block/blockspec.c: json: flattening (qemu's qdict_flatten precedence), --image-opts lists
 * (",," escapes, the implied "file" key, later keys win), qemu's qdict order and JSON text,
 * and name resolution. The expected JSON texts are what qemu-img 7.2 prints for the same
 * options (tests/py/test_image_names.py checks them end to end). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "block/blockspec.h"

static const char *str(const struct bspec *o, const char *key)
{
    const struct bsv *v = bspec_get(o, key);
    return v && v->type == BSV_STR ? v->s : NULL;
}

static void test_json_flatten(void **state)
{
    (void)state;
    struct bspec o = { 0 };
    char *e = NULL;
    assert_int_equal(bspec_parse_json("{\"file.filename\":\"a\",\"file\":{\"filename\":\"b\"},"
                                      "\"l\":[1,{\"x\":true}],\"e\":{},\"n\":null}", &o, &e), 0);
    assert_string_equal(str(&o, "file.filename"), "b"); /* the nested object wins */
    assert_int_equal(bspec_get(&o, "l.0")->type, BSV_INT);
    assert_true(bspec_get(&o, "l.1.x")->b);
    assert_int_equal(bspec_get(&o, "e")->type, BSV_EMPTY_DICT);
    assert_int_equal(bspec_get(&o, "n")->type, BSV_NULL);
    bspec_free(&o);
    /* qemu's single-quoted strings */
    assert_int_equal(bspec_parse_json("{'a\\'b':'c\"d'}", &o, &e), 0);
    assert_string_equal(str(&o, "a'b"), "c\"d");
    bspec_free(&o);
}

static void bad_json(const char *text, const char *msg)
{
    struct bspec o = { 0 };
    char *e = NULL;
    assert_int_equal(bspec_parse_json(text, &o, &e), -1);
    assert_string_equal(e, msg);
    free(e);
    bspec_free(&o);
}

static void test_json_errors(void **state)
{
    (void)state;
    const char *p = "Could not parse the JSON options: ";
    char m[200];
#define BAD(t, s) (snprintf(m, sizeof(m), "%s%s", p, s), bad_json(t, m))
    BAD("", "Expecting a JSON value");
    BAD("{\"a\":1}}", "Expecting at most one JSON value");
    BAD("{\"a\":1,\"a\":2}", "JSON parse error, duplicate key");
    BAD("{\"a\":1", "JSON parse error, premature EOI");
    BAD("{\"a\" 1}", "JSON parse error, missing : in object pair");
    BAD("{1:2}", "JSON parse error, key is not a string in object");
    BAD("{\"a\":tru}", "JSON parse error, invalid keyword 'tru'");
    BAD("{\"a\":[1 2]}", "JSON parse error, expected separator in list");
    bad_json("[1]", "Invalid JSON object given");
}

static void test_keyval(void **state)
{
    (void)state;
    struct bspec o = { 0 };
    bspec_parse_keyval("node0,driver=raw,file.filename=a,,b,driver=qcow2,", &o);
    assert_string_equal(str(&o, "file"), "node0");
    assert_string_equal(str(&o, "file.filename"), "a,b");
    assert_string_equal(str(&o, "driver"), "qcow2");
    assert_int_equal(o.n, 3);
    bspec_free(&o);
}

static void test_qdict_json_text(void **state)
{
    (void)state;
    struct bspec o = { 0 };
    char *e = NULL;
    assert_int_equal(bspec_parse_json("{\"driver\":\"raw\",\"file\":{\"driver\":\"file\","
                                      "\"filename\":\"/x/\\u00e9\\\"\"},\"offset\":512,"
                                      "\"size\":512.0}", &o, &e), 0);
    char *j = bspec_to_json(&o);
    assert_string_equal(j, "{\"offset\": 512, \"driver\": \"raw\", \"size\": 512, \"file\": "
                           "{\"driver\": \"file\", \"filename\": \"/x/\\u00E9\\\"\"}}");
    free(j);
    bspec_free(&o);
}

static void test_resolve(void **state)
{
    (void)state;
    struct bs_resolved r;
    char *e = NULL;
    assert_int_equal(blockspec_resolve("file:a:b", NULL, NULL, true, &r, &e), 0);
    assert_string_equal(r.path, "./a:b");
    assert_null(r.format);
    blockspec_resolved_free(&r);
    /* -f / the stored backing format win over json:'s driver */
    assert_int_equal(blockspec_resolve("json:{\"driver\":\"raw\",\"file.filename\":\"x\"}",
                                       NULL, "qcow2", true, &r, &e), 0);
    assert_string_equal(r.format, "qcow2");
    assert_string_equal(r.path, "x");
    blockspec_resolved_free(&r);
    /* info's NO_BACKING open leaves backing.* over for the "does not support" error */
    assert_int_equal(blockspec_resolve("json:{\"driver\":\"qcow2\",\"file.filename\":\"x\","
                                       "\"backing.driver\":\"raw\"}", NULL, NULL, false, &r,
                                       &e), 0);
    char *m = blockspec_format_unknown_msg(&r, "qcow2");
    assert_string_equal(m, "Block format 'qcow2' does not support the option 'backing.driver'");
    free(m);
    blockspec_resolved_free(&r);
    assert_int_equal(blockspec_resolve("a:b", NULL, NULL, true, &r, &e), -22);
    assert_string_equal(e, "Unknown protocol 'a'");
    free(e);
    assert_int_equal(blockspec_resolve("json:{\"filename\":\"x\"}", NULL, NULL, true, &r, &e),
                     -22);
    assert_string_equal(e, "Must specify either driver or file");
    free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_flatten),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_keyval),
        cmocka_unit_test(test_qdict_json_text),
        cmocka_unit_test(test_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
