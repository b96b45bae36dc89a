/* QED header decoder: every validation rule broken once, in qemu's order, plus the offset
 * predicates and the qed_bytes_to_clusters quirk. Fixture: the header qemu-img 7.2 writes
 * for `create -f qed x 10M` (64 KiB clusters, 4-cluster tables, L1 at 64 KiB). */
#include "test_format_helpers.h"
#include "format/qed_header.h"

#include <errno.h>

#define CS 65536u
#define FILE_SIZE (5u * CS)   /* header + L1 table */

static void le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void le64(uint8_t *p, uint64_t v) { le32(p, (uint32_t)v); le32(p + 4, (uint32_t)(v >> 32)); }

static void fixture(uint8_t *b)
{
    memset(b, 0, QED_HEADER_LEN);
    memcpy(b, "QED", 4);
    le32(b + 4, CS);
    le32(b + 8, 4);
    le32(b + 12, 1);
    le64(b + 40, CS);
    le64(b + 48, 10u << 20);
}

/* Decodes b and expects code plus qemu's message. */
static void expect(const uint8_t *b, uint64_t fsize, int code, const char *msg)
{
    struct qed_header h;
    struct fmt_error e;
    fmt_error_clear(&e);
    assert_int_equal(qed_header_decode(b, QED_HEADER_LEN, fsize, &h, &e), code);
    assert_int_equal(e.code, code);
    assert_string_equal(e.qemu_msg, msg);
    char line[512];
    assert_true(fmt_error_format(&e, line, sizeof(line)) > 0);
}

static void test_ok(void **state)
{
    (void)state;
    uint8_t b[QED_HEADER_LEN];
    fixture(b);
    struct qed_header h;
    assert_int_equal(qed_header_decode(b, sizeof(b), FILE_SIZE + 123, &h, NULL), 0);
    assert_int_equal(h.cluster_size, CS);
    assert_int_equal(h.table_nelems, 4 * CS / 8);
    assert_int_equal(h.l2_shift, 16);
    assert_int_equal(h.l1_shift, 16 + 15);
    assert_int_equal(h.file_size, FILE_SIZE);          /* rounded down to a cluster */
    assert_int_equal(h.image_size, 10u << 20);
    uint8_t out[QED_HEADER_LEN];
    qed_header_encode(&h, out);
    assert_memory_equal(out, b, sizeof(b));
}

static void test_rules(void **state)
{
    (void)state;
    uint8_t b[QED_HEADER_LEN];
    fixture(b); b[0] = 'X';
    expect(b, FILE_SIZE, -EINVAL, "Image not in QED format");
    fixture(b); b[17] = 1;
    expect(b, FILE_SIZE, -ENOTSUP, "Unsupported QED features: 100");
    fixture(b); le32(b + 4, 3u * 4096);
    expect(b, FILE_SIZE, -EINVAL, "QED cluster size is invalid");
    fixture(b); le32(b + 4, 2048);
    expect(b, FILE_SIZE, -EINVAL, "QED cluster size is invalid");
    fixture(b); le32(b + 4, 128u << 20);
    expect(b, FILE_SIZE, -EINVAL, "QED cluster size is invalid");
    fixture(b); le32(b + 8, 3);
    expect(b, FILE_SIZE, -EINVAL, "QED table size is invalid");
    fixture(b); le32(b + 8, 32);
    expect(b, FILE_SIZE, -EINVAL, "QED table size is invalid");
    fixture(b); le64(b + 48, 1000);
    expect(b, FILE_SIZE, -EINVAL, "QED image size is invalid");
    fixture(b); le64(b + 48, UINT64_MAX & ~511ull);
    expect(b, FILE_SIZE, -EINVAL, "QED image size is invalid");
    fixture(b); le64(b + 40, CS + 8);                   /* unaligned */
    expect(b, FILE_SIZE, -EINVAL, "QED table offset is invalid");
    fixture(b); le64(b + 40, 0);                        /* inside the header */
    expect(b, FILE_SIZE, -EINVAL, "QED table offset is invalid");
    fixture(b);                                         /* table end past EOF */
    expect(b, FILE_SIZE - 1, -EINVAL, "QED table offset is invalid");
    fixture(b); le32(b + 8, 1);                         /* qemu quirk: 1-cluster tables */
    expect(b, FILE_SIZE, -EINVAL, "QED table offset is invalid");
    fixture(b); le64(b + 40, UINT64_MAX - CS + 1);      /* end wraps */
    expect(b, FILE_SIZE, -EINVAL, "QED table offset is invalid");
    fixture(b); le32(b + 12, 0x10000); le64(b + 40, 0); /* header_size * cs > 4 GiB */
    expect(b, FILE_SIZE, -EINVAL, "QED table offset is invalid");
    fixture(b); le32(b + 12, 0); le32(b + 4, 4096); le32(b + 12, 0x100000);
    le64(b + 40, (uint64_t)0x100000 * 4096);
    expect(b, (uint64_t)0x100000 * 4096 + 5 * 4096, -EINVAL, "QED header size is too large");
    fixture(b); b[16] = 1; le32(b + 56, 64); le32(b + 60, CS);
    expect(b, FILE_SIZE, -EINVAL, "QED backing filename offset is invalid");
    fixture(b); b[16] = 1; le32(b + 12, 1); le32(b + 56, 64); le32(b + 60, 4096);
    expect(b, FILE_SIZE, -EINVAL, "Failed to read backing filename");
    fixture(b); b[16] = 7; le32(b + 56, 64); le32(b + 60, 4095);
    struct qed_header h;
    assert_int_equal(qed_header_decode(b, sizeof(b), FILE_SIZE, &h, NULL), 0);
}

static void test_truncated(void **state)
{
    (void)state;
    uint8_t b[QED_HEADER_LEN];
    fixture(b);
    struct qed_header h;
    struct fmt_error e;
    for (size_t n = 0; n < QED_HEADER_LEN; n++) {
        fmt_error_clear(&e);
        assert_int_equal(qed_header_decode(b, n, FILE_SIZE, &h, &e), -EINVAL);
        assert_string_equal(e.qemu_msg, "");             /* our rule, not qemu's */
    }
    memset(b, 0, sizeof(b));                             /* a short file reads as zeros */
    expect(b, 2, -EINVAL, "Image not in QED format");
}

static void test_offsets(void **state)
{
    (void)state;
    uint8_t b[QED_HEADER_LEN];
    fixture(b);
    struct qed_header h;
    assert_int_equal(qed_header_decode(b, sizeof(b), 12u * CS, &h, NULL), 0);
    assert_false(qed_cluster_offset_ok(&h, 0));          /* header */
    assert_true(qed_cluster_offset_ok(&h, CS));
    assert_false(qed_cluster_offset_ok(&h, CS + 512));
    assert_true(qed_cluster_offset_ok(&h, 11u * CS));
    assert_false(qed_cluster_offset_ok(&h, 12u * CS));   /* EOF */
    assert_true(qed_table_offset_ok(&h, 8u * CS));
    assert_false(qed_table_offset_ok(&h, 9u * CS));      /* last cluster past EOF */
    assert_false(qed_table_offset_ok(&h, UINT64_MAX - CS + 1));
    /* qemu divides by cluster_size - 1: cluster k maps to k + k / (cs - 1) */
    assert_int_equal(qed_bytes_to_clusters_quirk(&h, 5u * CS), 5);
    assert_int_equal(qed_bytes_to_clusters_quirk(&h, 1), 1);
    assert_int_equal(qed_bytes_to_clusters_quirk(&h, (uint64_t)65535 * CS), 65536);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_offsets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
