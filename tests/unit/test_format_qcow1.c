/* qcow v1 header decoder: every validation rule broken once, in qemu's order (messages
 * measured with qemu-img 7.2 info on crafted headers), the derived fields, and the L2
 * entry reading. Fixture: the header qemu-img 7.2 writes for `convert -c -O qcow` of a
 * 4 MiB image (4 KiB clusters, 512-entry L2 tables, L1 at 48). */
#include "test_format_helpers.h"
#include "format/qcow1_header.h"

#include <errno.h>

static const uint8_t fixture_hdr[QCOW1_HEADER_LEN] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00,
    0x0c, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30,
};

static void fixture(uint8_t *b)
{
    memcpy(b, fixture_hdr, QCOW1_HEADER_LEN);
}

static void be32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i)); }
static void be64(uint8_t *p, uint64_t v) { be32(p, (uint32_t)(v >> 32)); be32(p + 4, (uint32_t)v); }

/* Decodes b and expects code plus qemu's message. */
static void expect(const uint8_t *b, int code, const char *msg)
{
    struct qcow1_header h;
    struct fmt_error e;
    fmt_error_clear(&e);
    assert_int_equal(qcow1_header_decode(b, QCOW1_HEADER_LEN, &h, &e), code);
    assert_int_equal(e.code, code);
    assert_string_equal(e.qemu_msg, msg);
    char line[512];
    assert_true(fmt_error_format(&e, line, sizeof(line)) > 0);
}

static void test_ok(void **state)
{
    (void)state;
    uint8_t b[QCOW1_HEADER_LEN];
    fixture(b);
    struct qcow1_header h;
    assert_int_equal(qcow1_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_int_equal(h.size, 4u << 20);
    assert_int_equal(h.cluster_size, 4096);
    assert_int_equal(h.l2_size, 512);
    assert_int_equal(h.l1_size, 2);                      /* 4 MiB / (4 KiB * 512) */
    assert_int_equal(h.l1_table_offset, 48);
    assert_int_equal(h.crypt_method, 0);
    assert_true(h.cluster_offset_mask == ((uint64_t)1 << 51) - 1);
    assert_int_equal(qcow1_l1_index(&h, (2u << 20) + 5), 1);
    assert_int_equal(qcow1_l2_index(&h, (2u << 20) + 3 * 4096 + 7), 3);
    b[QCOW1_OFF_CRYPT + 3] = 1;                          /* AES decodes; the key is the driver's */
    assert_int_equal(qcow1_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_int_equal(h.crypt_method, QCOW1_CRYPT_AES);
}

static void test_rules(void **state)
{
    (void)state;
    uint8_t b[QCOW1_HEADER_LEN];

    fixture(b);
    b[0] = 0x52;
    expect(b, -EINVAL, "Image not in qcow format");
    fixture(b);
    be32(b + QCOW1_OFF_VERSION, 2);
    expect(b, -ENOTSUP, "qcow (v1) does not support qcow version 2");
    fixture(b);
    be32(b + QCOW1_OFF_VERSION, 0);
    expect(b, -ENOTSUP, "qcow (v1) does not support qcow version 0");
    for (uint64_t sz = 0; sz <= 1; sz++) {
        fixture(b);
        be64(b + QCOW1_OFF_SIZE, sz);
        expect(b, -EINVAL, "Image size is too small (must be at least 2 bytes)");
    }
    fixture(b);
    be64(b + QCOW1_OFF_SIZE, 2);                         /* accepted: virtual size 0 */
    struct qcow1_header h;
    assert_int_equal(qcow1_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_int_equal(h.l1_size, 1);
    const uint8_t bad_cb[] = { 0, 8, 17, 255 };
    for (size_t i = 0; i < sizeof(bad_cb); i++) {
        fixture(b);
        b[QCOW1_OFF_CLUSTER_BITS] = bad_cb[i];
        b[QCOW1_OFF_CRYPT + 3] = 2;                      /* checked later: not reported */
        expect(b, -EINVAL, "Cluster size must be between 512 and 64k");
    }
    const uint8_t bad_l2[] = { 0, 5, 14, 255 };
    for (size_t i = 0; i < sizeof(bad_l2); i++) {
        fixture(b);
        b[QCOW1_OFF_L2_BITS] = bad_l2[i];
        expect(b, -EINVAL, "L2 table size must be between 512 and 64k");
    }
    fixture(b);
    b[QCOW1_OFF_CRYPT + 3] = 2;
    expect(b, -EINVAL, "invalid encryption method in qcow header");
    fixture(b);
    be64(b + QCOW1_OFF_SIZE, UINT64_MAX);
    expect(b, -EINVAL, "Image too large");
    /* 9 + 6 bits per L1 entry: INT_MAX / 8 entries are the most */
    fixture(b);
    b[QCOW1_OFF_CLUSTER_BITS] = 9;
    b[QCOW1_OFF_L2_BITS] = 6;
    be64(b + QCOW1_OFF_SIZE, (uint64_t)268435455 << 15);
    assert_int_equal(qcow1_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_int_equal(h.l1_size, 268435455);
    be64(b + QCOW1_OFF_SIZE, ((uint64_t)268435455 << 15) + 1);
    expect(b, -EINVAL, "Image too large");
}

static void test_truncated(void **state)
{
    (void)state;
    uint8_t b[QCOW1_HEADER_LEN];
    fixture(b);
    struct qcow1_header h;
    struct fmt_error e;
    for (size_t n = 0; n < QCOW1_HEADER_LEN; n++) {
        fmt_error_clear(&e);
        assert_int_equal(qcow1_header_decode(b, n, &h, &e), -EINVAL);
        assert_string_equal(e.qemu_msg, "");             /* our rule, not qemu's */
    }
    /* a 20-byte file reads as its bytes then zeros: size 0 */
    memset(b + 20, 0, sizeof(b) - 20);
    expect(b, -EINVAL, "Image size is too small (must be at least 2 bytes)");
}

static void test_entries(void **state)
{
    (void)state;
    uint8_t b[QCOW1_HEADER_LEN];
    fixture(b);
    struct qcow1_header h;
    assert_int_equal(qcow1_header_decode(b, sizeof(b), &h, NULL), 0);
    struct qcow1_entry e = qcow1_entry(&h, 0);
    assert_int_equal(e.kind, QCOW1_UNALLOCATED);
    e = qcow1_entry(&h, 0x3000);
    assert_int_equal(e.kind, QCOW1_NORMAL);
    assert_true(e.host == 0x3000);
    e = qcow1_entry(&h, ((uint64_t)1 << 62) | 0x201);    /* unvalidated, as qemu */
    assert_int_equal(e.kind, QCOW1_NORMAL);
    assert_true(e.host == (((uint64_t)1 << 62) | 0x201));
    /* compressed: 63 - 12 = 51 offset bits, then the size masked to cluster_size - 1 */
    e = qcow1_entry(&h, QCOW1_OFLAG_COMPRESSED | ((uint64_t)1234 << 51) | 0x8123);
    assert_int_equal(e.kind, QCOW1_COMPRESSED);
    assert_true(e.coffset == 0x8123);
    assert_int_equal(e.csize, 1234);
    e = qcow1_entry(&h, QCOW1_OFLAG_COMPRESSED | ((uint64_t)4096 << 51) | 0x10);
    assert_int_equal(e.csize, 0);                        /* 4096 & 4095 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
