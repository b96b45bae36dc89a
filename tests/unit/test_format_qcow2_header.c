/* qcow2 header decoder: qemu's open-time rules, one broken at a time. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_format_helpers.h"
#include "format/qcow2_header.h"

static int decode(const uint8_t *buf, size_t len, unsigned flags, struct qcow2_header *h,
                  struct fmt_error *e)
{
    fmt_error_clear(e);
    return qcow2_header_decode(buf, len, flags, h, e);
}

static void expect_fail(const uint8_t *buf, size_t len, unsigned flags, int code,
                        const char *msg)
{
    struct qcow2_header h;
    struct fmt_error e;
    int rc = decode(buf, len, flags, &h, &e);
    if (rc != code)
        fprintf(stderr, "rc=%d msg=%s (expected %d %s)\n", rc, e.qemu_msg, code, msg);
    assert_int_equal(rc, code);
    assert_int_equal(e.code, code);
    assert_string_equal(e.qemu_msg, msg);
}

static void test_qemu_image(void **state)
{
    (void)state;
    struct qcow2_header h;
    struct fmt_error e;
    uint8_t *c = fixture_cluster0();

    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_int_equal(h.version, 3);
    assert_int_equal(h.cluster_bits, 16);
    assert_int_equal(h.cluster_size, 65536);
    assert_int_equal(h.size, 1 << 20);
    assert_int_equal(h.l1_size, 1);
    assert_int_equal(h.l1_table_offset, 0x30000);
    assert_int_equal(h.refcount_table_offset, 0x10000);
    assert_int_equal(h.refcount_table_clusters, 1);
    assert_int_equal(h.refcount_order, 4);
    assert_int_equal(h.header_length, 112);
    assert_true(h.has_compression_type);
    assert_int_equal(h.compression_type, 0);
    assert_int_equal(h.l2_entry_size, 8);
    assert_int_equal(h.l2_entries, 8192);
    assert_int_equal(h.l2_bits, 13);
    assert_int_equal(h.subclusters_per_cluster, 1);
    assert_int_equal(h.refcount_bits, 16);
    assert_int_equal(h.refcount_block_entries, 32768);
    assert_int_equal(h.refcount_block_bits, 15);
    assert_int_equal(h.refcount_max, 65535);
    assert_int_equal(h.reftable_entries, 8192);
    assert_int_equal(h.l1_vm_state_index, 1);
    assert_int_equal(h.ext_end, 65536);
    assert_int_equal(h.csize_shift, 54);
    assert_int_equal(h.csize_mask, 0xff);
    assert_int_equal(h.unknown_len, 0);
    assert_false(h.buf_short);
    assert_int_equal(qcow2_header_check_layout(&h, 0x40000, &e), 0);
}

static void test_v2_and_extl2(void **state)
{
    (void)state;
    struct qcow2_header h;
    struct fmt_error e;
    uint8_t *c = fixture_cluster0();

    be32_put(c + 4, 2);
    memset(c + 72, 0xee, 40);       /* v2 ignores everything past byte 72 */
    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_int_equal(h.header_length, 72);
    assert_int_equal(h.refcount_order, 4);
    assert_int_equal(h.incompatible_features, 0);
    assert_false(h.has_compression_type);

    c = fixture_cluster0();
    be64_put(c + 72, QCOW2_INCOMPAT_EXTL2);
    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_int_equal(h.l2_entry_size, 16);
    assert_int_equal(h.l2_entries, 4096);
    assert_int_equal(h.subclusters_per_cluster, 32);
    assert_int_equal(h.subcluster_size, 2048);

    c = fixture_cluster0();
    c[104] = 1;                     /* zstd */
    be64_put(c + 72, QCOW2_INCOMPAT_COMPRESSION);
    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_int_equal(h.compression_type, 1);

    c = fixture_cluster0();         /* refcount_order 0 and 6 */
    be32_put(c + 96, 0);
    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_int_equal(h.refcount_max, 1);
    assert_int_equal(h.refcount_block_entries, 65536 * 8);
    be32_put(c + 96, 6);
    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_true(h.refcount_max == UINT64_MAX);
    assert_int_equal(h.refcount_block_entries, 8192);
}

static void test_rules_in_order(void **state)
{
    (void)state;
    uint8_t *c;

    c = fixture_cluster0(); c[3] = 0xfa;
    expect_fail(c, 65536, 0, -EINVAL, "Image is not in qcow2 format");
    c = fixture_cluster0(); be32_put(c + 4, 1);
    expect_fail(c, 65536, 0, -ENOTSUP, "Unsupported qcow2 version 1");
    c = fixture_cluster0(); be32_put(c + 4, 4);
    expect_fail(c, 65536, 0, -ENOTSUP, "Unsupported qcow2 version 4");
    c = fixture_cluster0(); be32_put(c + 20, 8);
    expect_fail(c, 65536, 0, -EINVAL, "Unsupported cluster size: 2^8");
    c = fixture_cluster0(); be32_put(c + 20, 22);
    expect_fail(c, 65536, 0, -EINVAL, "Unsupported cluster size: 2^22");
    c = fixture_cluster0(); be32_put(c + 100, 96);
    expect_fail(c, 65536, 0, -EINVAL, "qcow2 header too short");
    c = fixture_cluster0(); be32_put(c + 20, 9); be32_put(c + 100, 520);
    expect_fail(c, 65536, 0, -EINVAL, "qcow2 header exceeds cluster size");
    c = fixture_cluster0(); be64_put(c + 8, 65537);
    expect_fail(c, 65536, 0, -EINVAL, "Invalid backing file offset");
    c = fixture_cluster0(); c[104] = 2;
    expect_fail(c, 65536, 0, -ENOTSUP, "qcow2: unknown compression type: 2");
    c = fixture_cluster0(); c[104] = 1;
    expect_fail(c, 65536, 0, -EINVAL,
                "qcow2: Compression type incompatible feature bit must be set");
    c = fixture_cluster0(); be64_put(c + 72, QCOW2_INCOMPAT_COMPRESSION);
    expect_fail(c, 65536, 0, -EINVAL,
                "qcow2: Compression type incompatible feature bit must not be set");
    /* header_length 104: no compression type byte, so a stray byte 104 is ignored */
    c = fixture_cluster0(); be32_put(c + 100, 104); c[104] = 7;
    expect_fail(c, 104, 0, 0, "");
    c = fixture_cluster0(); be64_put(c + 72, 0x20);
    expect_fail(c, 65536, 0, -ENOTSUP, "Unsupported qcow2 feature(s): Unknown incompatible feature: 20");
    c = fixture_cluster0(); be64_put(c + 72, QCOW2_INCOMPAT_CORRUPT);
    expect_fail(c, 65536, QCOW2_HDR_RDWR, -EACCES,
                "qcow2: Image is corrupt; cannot be opened read/write");
    expect_fail(c, 65536, 0, 0, "");
    expect_fail(c, 65536, QCOW2_HDR_RDWR | QCOW2_HDR_CHECK, 0, "");
    c = fixture_cluster0(); be32_put(c + 20, 13); be64_put(c + 72, QCOW2_INCOMPAT_EXTL2);
    expect_fail(c, 65536, 0, -EINVAL, "Unsupported subcluster size: 256");
    c = fixture_cluster0(); be32_put(c + 96, 7);
    expect_fail(c, 65536, 0, -EINVAL,
                "Reference count entry width too large; may not exceed 64 bits");
    c = fixture_cluster0(); be32_put(c + 56, 0);
    expect_fail(c, 65536, 0, -EINVAL, "Image does not contain a reference count table");
    expect_fail(c, 65536, QCOW2_HDR_CHECK, 0, "");
    c = fixture_cluster0(); be32_put(c + 56, 129);
    expect_fail(c, 65536, 0, -EFBIG, "Reference count table too large");
    c = fixture_cluster0(); be32_put(c + 56, 128);
    expect_fail(c, 65536, 0, 0, "");
    c = fixture_cluster0(); be64_put(c + 48, 0x10200);
    expect_fail(c, 65536, 0, -EINVAL, "Reference count table offset invalid");
    c = fixture_cluster0(); be64_put(c + 48, 0x7fffffffffff0000ull);
    expect_fail(c, 65536, 0, -EINVAL, "Reference count table offset invalid");
    c = fixture_cluster0(); be32_put(c + 60, 65537);
    expect_fail(c, 65536, 0, -EFBIG, "Snapshot table too large");
    expect_fail(c, 65536, QCOW2_HDR_CHECK, 0, "");
    c = fixture_cluster0(); be32_put(c + 60, 1); be64_put(c + 64, 0x50008);
    expect_fail(c, 65536, 0, -EINVAL, "Snapshot table offset invalid");
    expect_fail(c, 65536, QCOW2_HDR_CHECK, 0, "");
    c = fixture_cluster0(); be32_put(c + 36, (32u << 20) / 8 + 1);
    expect_fail(c, 65536, 0, -EFBIG, "Active L1 table too large");
    c = fixture_cluster0(); be64_put(c + 40, 0x30001);
    expect_fail(c, 65536, 0, -EINVAL, "Active L1 table offset invalid");
    c = fixture_cluster0(); be64_put(c + 24, 1ull << 62); be32_put(c + 20, 9);
    expect_fail(c, 65536, 0, -EFBIG, "Image is too big");
    c = fixture_cluster0(); be32_put(c + 36, 0);
    expect_fail(c, 65536, 0, -EINVAL, "L1 table is too small");
    c = fixture_cluster0(); be64_put(c + 24, (512ull << 20) + 1);   /* needs 2 L1 entries */
    expect_fail(c, 65536, 0, -EINVAL, "L1 table is too small");
    /* qemu's size_to_l1 wraps to 0 here and accepts; we refuse (documented choice) */
    c = fixture_cluster0(); be64_put(c + 24, UINT64_MAX); be32_put(c + 20, 9);
    expect_fail(c, 65536, 0, -EFBIG, "Image is too big");
    /* the crypt method last (qemu checks it with the open options), printed signed */
    c = fixture_cluster0(); be32_put(c + 32, 3);
    expect_fail(c, 65536, 0, -EINVAL, "Unsupported encryption method 3");
    c = fixture_cluster0(); be32_put(c + 32, 0x80000000u);
    expect_fail(c, 65536, QCOW2_HDR_CHECK, -EINVAL, "Unsupported encryption method -2147483648");
    c = fixture_cluster0(); be32_put(c + 32, 0x80000000u); be32_put(c + 36, 0);
    expect_fail(c, 65536, 0, -EINVAL, "L1 table is too small");
    c = fixture_cluster0(); be32_put(c + 32, 0x80000000u); be32_put(c + 56, 0);
    expect_fail(c, 65536, 0, -EINVAL, "Image does not contain a reference count table");
}

static void test_feature_names_from_table(void **state)
{
    (void)state;
    uint8_t *c = fixture_cluster0();
    /* Rename the "compression type" entry (incompat bit 3) to bit 5 "foo". */
    uint8_t *e = c + 0x78 + 3 * 48;
    assert_int_equal(e[1], 3);
    e[1] = 5;
    memset(e + 2, 0, 46);
    memcpy(e + 2, "foo", 3);
    be64_put(c + 72, (1ull << 5) | (1ull << 6) | (1ull << 40));
    expect_fail(c, 65536, 0, -ENOTSUP,
                "Unsupported qcow2 feature(s): foo, Unknown incompatible feature: 10000000040");
}

static void test_truncated_and_unknown(void **state)
{
    (void)state;
    struct qcow2_header h;
    struct fmt_error e;
    uint8_t *c = fixture_cluster0();

    expect_fail(c, 0, 0, -EINVAL, "Image is not in qcow2 format");
    expect_fail(c, 3, 0, -EINVAL, "Image is not in qcow2 format");
    /* Cut before header_length: it reads as 0, as qemu's zero-filled read would. */
    expect_fail(c, 100, 0, -EINVAL, "qcow2 header too short");
    /* Cut after header_length but before 112: accepted, flagged, refused when strict. */
    assert_int_equal(decode(c, 104, 0, &h, &e), 0);
    assert_true(h.buf_short);
    assert_int_equal(decode(c, 104, QCOW2_HDR_STRICT, &h, &e), -EINVAL);
    assert_string_equal(e.field, "header_length");

    c = fixture_cluster0();
    be32_put(c + 100, 128);
    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_int_equal(h.unknown_offset, 112);
    assert_int_equal(h.unknown_len, 16);
}

static void test_error_format(void **state)
{
    (void)state;
    struct qcow2_header h;
    struct fmt_error e;
    char line[512];
    uint8_t *c = fixture_cluster0();

    be32_put(c + 20, 22);
    assert_int_equal(decode(c, 65536, 0, &h, &e), -EINVAL);
    fmt_error_format(&e, line, sizeof(line));
    assert_string_equal(line, "qcow2 header: field cluster_bits=22 at offset 0x14: must be 9..21");
    assert_string_equal(fmt_error_user_msg(&e, line, sizeof(line)), "Unsupported cluster size: 2^22");
    /* NULL error pointer is allowed */
    assert_int_equal(qcow2_header_decode(c, 65536, 0, &h, NULL), -EINVAL);
}

static void test_layout(void **state)
{
    (void)state;
    struct qcow2_header h;
    struct fmt_error e;
    uint8_t *c = fixture_cluster0();

    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_int_equal(qcow2_header_check_layout(&h, 0x30008, &e), 0);
    assert_int_equal(qcow2_header_check_layout(&h, 0x30004, &e), -EINVAL);
    assert_string_equal(e.field, "l1_table_offset");
    assert_int_equal(qcow2_header_check_layout(&h, 0x10000, &e), -EINVAL);
    assert_string_equal(e.field, "refcount_table_offset");
    h.refcount_table_clusters = 0;
    assert_int_equal(qcow2_header_check_layout(&h, 0x40000, &e), -EINVAL);
    h.refcount_table_clusters = 1;
    h.l1_table_offset = 0;
    assert_int_equal(qcow2_header_check_layout(&h, 0x40000, &e), -EINVAL);
    assert_string_equal(e.field, "l1_table_offset");
}

static void test_encode_roundtrip(void **state)
{
    (void)state;
    struct qcow2_header h, h2;
    struct fmt_error e;
    uint8_t out[112];
    uint8_t *c = fixture_cluster0();

    assert_int_equal(decode(c, 65536, 0, &h, &e), 0);
    assert_int_equal(qcow2_header_encode(&h, out, sizeof(out)), 112);
    assert_memory_equal(out, qemu_1m_header, 112);
    assert_int_equal(qcow2_header_encode(&h, out, 100), -ENOSPC);
    h.version = 2;
    assert_int_equal(qcow2_header_encode(&h, out, sizeof(out)), 72);
    assert_int_equal(decode(out, 72, 0, &h2, &e), 0);
    assert_int_equal(h2.l1_table_offset, 0x30000);
    h.version = 5;
    assert_int_equal(qcow2_header_encode(&h, out, sizeof(out)), -EINVAL);
    assert_string_equal(qcow2_feature_name(0, 4), "extended L2 entries");
    assert_null(qcow2_feature_name(0, 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qemu_image),
        cmocka_unit_test(test_v2_and_extl2),
        cmocka_unit_test(test_rules_in_order),
        cmocka_unit_test(test_feature_names_from_table),
        cmocka_unit_test(test_truncated_and_unknown),
        cmocka_unit_test(test_error_format),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_encode_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
