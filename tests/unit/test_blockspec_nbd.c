/* block/blockspec_nbd.c: NBD names (qemu's nbd_parse_uri / nbd_parse_filename) into the nbd
 * driver's options, the options into an address (nbd_config's checks), qemu's reconstructed
 * names, and resolution of an NBD name under a format. Expected values are qemu-img 7.2's
 * (tests/py/test_nbd.py checks them end to end against a real qemu-nbd). */
#include <setjmp.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "block/blockspec.h"
#include "block/blockspec_nbd.h"

static const char *str(const struct bspec *o, const char *key)
{
    const struct bsv *v = bspec_get(o, key);
    return v && v->type == BSV_STR ? v->s : NULL;
}

/* Parses name; returns its options (caller frees) or NULL with *err set. */
static struct bspec parse(const char *name, int *rc, char **err)
{
    struct bspec o = { 0 };
    *err = NULL;
    *rc = blockspec_nbd_parse_name(name, &o, err);
    return o;
}

static void test_uris(void **state)
{
    (void)state;
    int rc;
    char *e;
    struct bspec o = parse("nbd+unix:///ex%20p?socket=/run/s", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(str(&o, "server.type"), "unix");
    assert_string_equal(str(&o, "server.path"), "/run/s");
    assert_string_equal(str(&o, "export"), "ex p");
    bspec_free(&o);
    o = parse("nbd://example.org/exp", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(str(&o, "server.host"), "example.org");
    assert_string_equal(str(&o, "server.port"), "10809");
    bspec_free(&o);
    o = parse("nbd+tcp://[::1]:123", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(str(&o, "server.host"), "::1");
    assert_string_equal(str(&o, "server.port"), "123");
    assert_null(str(&o, "export"));
    bspec_free(&o);
    static const char *const bad[] = { "nbd+unix:///e", "nbd+unix://h/e?socket=/s",
        "nbd+unix:///e?socket=/s&x=1", "nbd+unix:///e?sock=/s", "nbd:///e",
        "nbd://h/e?socket=/s", "nbd://h:x/e", "nbd://h:99999999/e", NULL };
    for (int i = 0; bad[i]; i++) {
        o = parse(bad[i], &rc, &e);
        assert_int_equal(rc, -EINVAL);
        assert_string_equal(e, "No valid URL specified");
        free(e);
        bspec_free(&o);
    }
}

static void test_legacy(void **state)
{
    (void)state;
    int rc;
    char *e;
    struct bspec o = parse("nbd:unix:/run/s:exportname=a:b", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(str(&o, "server.path"), "/run/s");
    assert_string_equal(str(&o, "export"), "a:b");
    bspec_free(&o);
    o = parse("nbd:h:10:exportname=x", &rc, &e);
    assert_string_equal(str(&o, "server.host"), "h");
    assert_string_equal(str(&o, "server.port"), "10");
    bspec_free(&o);
    o = parse("nbd:", &rc, &e);
    assert_int_equal(rc, 0);
    assert_int_equal(o.n, 0); /* later: "NBD server address missing" */
    bspec_free(&o);
    o = parse("nbd:localhost", &rc, &e);
    assert_int_equal(rc, -EINVAL);
    assert_string_equal(e, "error parsing address 'localhost'");
    free(e);
    bspec_free(&o);
}

static void test_take_and_name(void **state)
{
    (void)state;
    struct bspec o = { 0 };
    struct qio_nbd_addr a;
    char *e = NULL;
    bspec_put_str(&o, "server.type", "inet", true);
    bspec_put_str(&o, "server.host", "localhost", true);
    bspec_put_str(&o, "server.port", "10809", true);
    bspec_put_str(&o, "x-dirty-bitmap", "qemu:allocation-depth", true);
    bspec_put_str(&o, "foo", "1", true);
    assert_int_equal(blockspec_nbd_take(&o, &a, &e), 0);
    assert_int_equal(o.n, 1); /* foo is left for "doesn't support the option" */
    assert_string_equal(a.bitmap, "qemu:allocation-depth");
    char *n = qio_nbd_name(&a);
    assert_string_equal(n, "nbd://localhost:10809"); /* qemu prints the default port */
    free(n);
    qio_nbd_addr_free(&a);
    bspec_free(&o);

    bspec_put_str(&o, "server.type", "unix", true);
    assert_int_equal(blockspec_nbd_take(&o, &a, &e), -EINVAL);
    assert_string_equal(e, "Parameter 'path' is missing");
    free(e);
    bspec_free(&o);
    assert_int_equal(blockspec_nbd_take(&o, &a, &e), -EINVAL);
    assert_string_equal(e, "NBD server address missing");
    free(e);
    bspec_put_str(&o, "path", "/s", true);
    bspec_put_str(&o, "export", "x", true);
    assert_int_equal(blockspec_nbd_take(&o, &a, &e), 0);
    n = qio_nbd_name(&a);
    assert_string_equal(n, "nbd+unix:///x?socket=/s");
    free(n);
    qio_nbd_addr_free(&a);
    bspec_free(&o);
}

static void test_resolve(void **state)
{
    (void)state;
    struct bs_resolved r;
    char *e = NULL;
    assert_int_equal(blockspec_resolve("nbd+unix://?socket=/s", NULL, "qcow2", true, &r, &e), 0);
    assert_non_null(r.nbd);
    assert_string_equal(r.format, "qcow2");
    assert_string_equal(r.path, "nbd+unix://?socket=/s");
    assert_false(r.protocol_only);
    blockspec_resolved_free(&r);
    struct bspec o = { 0 };
    bspec_parse_keyval("driver=nbd,server.type=unix,server.path=/s,export=e,bad=1", &o);
    assert_int_equal(blockspec_resolve(NULL, &o, NULL, true, &r, &e), 0);
    assert_true(r.protocol_only);
    assert_string_equal(r.format, "nbd");
    char *m = blockspec_file_unknown_msg(&r);
    assert_string_equal(m, "Block protocol 'nbd' doesn't support the option 'bad'");
    free(m);
    blockspec_resolved_free(&r);
    bspec_free(&o);
    assert_int_equal(blockspec_resolve("nbd+rdma://h/x", NULL, NULL, true, &r, &e), -EINVAL);
    assert_string_equal(e, "Unknown protocol 'nbd+rdma'");
    free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uris),
        cmocka_unit_test(test_legacy),
        cmocka_unit_test(test_take_and_name),
        cmocka_unit_test(test_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
