/* qcow2 header extensions and backing file name. */
#include <errno.h>
#include <stdlib.h>

#include "test_format_helpers.h"
#include "format/qcow2_ext.h"
#include "format/qcow2_header.h"

static struct qcow2_header hdr(const uint8_t *c)
{
    struct qcow2_header h;
    assert_int_equal(qcow2_header_decode(c, 65536, 0, &h, NULL), 0);
    return h;
}

/* Cluster 0 with qemu's header and our own extension list starting at 112. */
static uint8_t *cluster_with(size_t *pos)
{
    uint8_t *c = fixture_cluster0();
    memset(c + 112, 0, 512 - 112);
    *pos = 112;
    return c;
}

static void test_qemu_feature_table(void **state)
{
    (void)state;
    uint8_t *c = fixture_cluster0();
    struct qcow2_header h = hdr(c);
    struct qcow2_ext x;
    struct fmt_error e;

    assert_int_equal(qcow2_ext_parse(&h, c, 65536, &x, &e), 0);
    assert_int_equal(x.n_features, 8);
    assert_true(x.has_end);
    assert_int_equal(x.end_offset, 0x200);   /* just past END at 0x1f8 */
    assert_string_equal(qcow2_ext_feature_name(&x, 0, 0), "dirty bit");
    assert_string_equal(qcow2_ext_feature_name(&x, 2, 1), "raw external data");
    assert_null(qcow2_ext_feature_name(&x, 0, 7));
    for (size_t i = 0; i < x.n_features; i++)
        assert_string_equal(x.features[i].name,
                            qcow2_feature_name(x.features[i].type, x.features[i].bit));
    assert_int_equal(x.n_all, 1);
    assert_int_equal(x.n_unknown, 0);
    qcow2_ext_free(&x);
}

static void test_all_kinds(void **state)
{
    (void)state;
    size_t pos;
    uint8_t *c = cluster_with(&pos);
    uint8_t bm[24] = { 0 }, cr[16] = { 0 };
    struct qcow2_ext x;
    struct fmt_error e;

    be32_put(c + 32, QCOW2_CRYPT_LUKS);
    be64_put(c + 88, QCOW2_AUTOCLEAR_BITMAPS);
    assert_int_equal(qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_BACKING_FORMAT, "qcow2", 5), 0);
    assert_int_equal(qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_DATA_FILE, "df.raw", 6), 0);
    be64_put(cr, 0x50000);
    be64_put(cr + 8, 4096);
    assert_int_equal(qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_CRYPTO, cr, 16), 0);
    be32_put(bm, 2);
    be64_put(bm + 8, 64);
    be64_put(bm + 16, 0x60000);
    assert_int_equal(qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_BITMAPS, bm, 24), 0);
    assert_int_equal(qcow2_ext_encode(c, 65536, &pos, 0x12345678, "abc", 3), 0);
    size_t end = pos;
    assert_int_equal(qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_END, NULL, 0), 0);

    struct qcow2_header h = hdr(c);
    assert_int_equal(qcow2_ext_parse(&h, c, 65536, &x, &e), 0);
    assert_true(x.has_backing_format);
    assert_string_equal(x.backing_format, "qcow2");
    assert_true(x.has_data_file);
    assert_string_equal(x.data_file, "df.raw");
    assert_int_equal(x.data_file_len, 6);
    assert_true(x.has_crypto);
    assert_int_equal(x.crypto_offset, 0x50000);
    assert_int_equal(x.crypto_length, 4096);
    assert_true(x.has_bitmaps);
    assert_int_equal(x.nb_bitmaps, 2);
    assert_int_equal(x.bitmap_directory_size, 64);
    assert_int_equal(x.bitmap_directory_offset, 0x60000);
    assert_int_equal(x.n_all, 5);
    assert_int_equal(x.n_unknown, 1);
    assert_int_equal(x.unknown[0].magic, 0x12345678);
    assert_int_equal(x.unknown[0].len, 3);
    assert_int_equal(x.unknown[0].offset, end - 16);
    assert_true(x.has_end);
    qcow2_ext_free(&x);

    /* Without autoclear bit 0 the bitmaps extension is ignored, not an error. */
    be64_put(c + 88, 0);
    h = hdr(c);
    assert_int_equal(qcow2_ext_parse(&h, c, 65536, &x, &e), 0);
    assert_false(x.has_bitmaps);
    assert_true(x.bitmaps_ignored);
    qcow2_ext_free(&x);
}

static void expect_ext_fail(uint8_t *c, const char *msg)
{
    struct qcow2_header h = hdr(c);
    struct qcow2_ext x;
    struct fmt_error e;
    assert_int_equal(qcow2_ext_parse(&h, c, 65536, &x, &e), -EINVAL);
    assert_string_equal(e.qemu_msg, msg);
    qcow2_ext_free(&x);
}

static void test_rules(void **state)
{
    (void)state;
    size_t pos;
    uint8_t *c;
    uint8_t bm[24], cr[16] = { 0 };

    c = cluster_with(&pos);
    qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_BACKING_FORMAT, "0123456789abcdef", 16);
    expect_ext_fail(c, "ERROR: ext_backing_format: len=16 too large (>=16)");

    c = cluster_with(&pos);
    be32_put(c + 112, 0x12345678);
    be32_put(c + 116, 65536 - 120 + 1);
    expect_ext_fail(c, "Header extension too large");

    /* With a backing file, extensions end at backing_file_offset. */
    c = cluster_with(&pos);
    qcow2_ext_encode(c, 65536, &pos, 0x12345678, "12345678", 8);
    be64_put(c + 8, 124);
    expect_ext_fail(c, "Header extension too large");

    c = cluster_with(&pos);
    qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_CRYPTO, cr, 16);
    expect_ext_fail(c, "CRYPTO header extension only expected with LUKS encryption method");
    c = cluster_with(&pos);
    be32_put(c + 32, 2);
    qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_CRYPTO, cr, 8);
    expect_ext_fail(c, "CRYPTO header extension size 8, but expected size 16");
    c = cluster_with(&pos);
    be32_put(c + 32, 2);
    be64_put(cr, 512);
    qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_CRYPTO, cr, 16);
    expect_ext_fail(c, "Encryption header offset '512' is not a multiple of cluster size '65536'");

    struct { unsigned at; uint64_t v; int w; const char *msg; } bad[] = {
        { 4, 1, 4, "bitmaps_ext: Reserved field is not zero" },
        { 0, 65536, 4, "bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535" },
        { 0, 0, 4, "found bitmaps extension with zero bitmaps" },
        { 16, 0x60200, 8, "bitmaps_ext: invalid bitmap directory offset" },
        { 8, 1024u * 65535u + 1, 8, "bitmaps_ext: bitmap directory size (67107841) exceeds the maximum supported size (67107840)" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = cluster_with(&pos);
        be64_put(c + 88, QCOW2_AUTOCLEAR_BITMAPS);
        memset(bm, 0, sizeof(bm));
        be32_put(bm, 1);
        be64_put(bm + 16, 0x60000);
        if (bad[i].w == 4)
            be32_put(bm + bad[i].at, (uint32_t)bad[i].v);
        else
            be64_put(bm + bad[i].at, bad[i].v);
        qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_BITMAPS, bm, 24);
        expect_ext_fail(c, bad[i].msg);
    }
    c = cluster_with(&pos);
    be64_put(c + 88, QCOW2_AUTOCLEAR_BITMAPS);
    qcow2_ext_encode(c, 65536, &pos, QCOW2_EXT_BITMAPS, bm, 16);
    expect_ext_fail(c, "bitmaps_ext: Invalid extension length");
}

static void test_truncated_buffer(void **state)
{
    (void)state;
    uint8_t *c = fixture_cluster0();
    struct qcow2_header h = hdr(c);
    struct qcow2_ext x;
    struct fmt_error e;

    /* Past buf_len bytes read as zero: the table is cut, and a zero header is END. */
    assert_int_equal(qcow2_ext_parse(&h, c, 200, &x, &e), 0);
    assert_int_equal(x.n_features, 8);
    assert_string_equal(x.features[1].name, "corrupt bit");
    assert_string_equal(x.features[2].name, "");
    qcow2_ext_free(&x);
    assert_int_equal(qcow2_ext_parse(&h, c, 0, &x, &e), 0);
    assert_true(x.has_end);
    qcow2_ext_free(&x);
    /* Without END, parsing stops at the cluster end: no error. */
    memset(c + 112, 0xff, 65536 - 112);
    be32_put(c + 112, 0x11111111);
    be32_put(c + 116, 65536 - 120);
    assert_int_equal(qcow2_ext_parse(&h, c, 65536, &x, &e), 0);
    assert_false(x.has_end);
    assert_int_equal(x.n_unknown, 1);
    qcow2_ext_free(&x);
}

static void test_backing_name(void **state)
{
    (void)state;
    uint8_t *c = fixture_cluster0();
    char name[QCOW2_MAX_BACKING_NAME + 1];
    uint32_t len;
    bool has;
    struct fmt_error e;

    struct qcow2_header h = hdr(c);
    assert_int_equal(qcow2_backing_name(&h, c, 65536, name, &len, &has, &e), 0);
    assert_false(has);

    memcpy(c + 0x200, "base.qcow2", 10);
    be64_put(c + 8, 0x200);
    be32_put(c + 16, 10);
    h = hdr(c);
    assert_int_equal(h.ext_end, 0x200);
    assert_int_equal(qcow2_backing_name(&h, c, 65536, name, &len, &has, &e), 0);
    assert_true(has);
    assert_int_equal(len, 10);
    assert_string_equal(name, "base.qcow2");

    be32_put(c + 16, 1024);
    h = hdr(c);
    assert_int_equal(qcow2_backing_name(&h, c, 65536, name, &len, &has, &e), -EINVAL);
    assert_string_equal(e.qemu_msg, "Backing file name too long");
    /* room left in the cluster also bounds it */
    be64_put(c + 8, 65536 - 8);
    be32_put(c + 16, 9);
    h = hdr(c);
    assert_int_equal(qcow2_backing_name(&h, c, 65536, name, &len, &has, &e), -EINVAL);
    be32_put(c + 16, 8);
    h = hdr(c);
    assert_int_equal(qcow2_backing_name(&h, c, 65536, name, &len, &has, &e), 0);
    /* encoder refuses to overflow */
    size_t pos = 65536 - 8;
    assert_int_equal(qcow2_ext_encode(c, 65536, &pos, 1, "x", 1), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qemu_feature_table),
        cmocka_unit_test(test_all_kinds),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_truncated_buffer),
        cmocka_unit_test(test_backing_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
