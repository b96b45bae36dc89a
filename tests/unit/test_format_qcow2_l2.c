/* L1/L2 entries, compressed descriptors and extended L2 subclusters. */
#include <errno.h>

#include "test_format_helpers.h"
#include "format/qcow2_l2.h"

static const struct qcow2_l2_geom STD = { .cluster_bits = 16 };
static const struct qcow2_l2_geom EXT = { .cluster_bits = 16, .extended_l2 = true };
static const struct qcow2_l2_geom DF = { .cluster_bits = 16, .data_file = true };

static void test_l1(void **state)
{
    (void)state;
    struct qcow2_l1e l1;
    qcow2_l1e_decode(0x8000000000040000ull, &l1);
    assert_int_equal(l1.l2_offset, 0x40000);
    assert_true(l1.copied);
    assert_int_equal(l1.reserved, 0);
    qcow2_l1e_decode(0x8000000000040001ull, &l1);
    assert_int_equal(l1.reserved, 1);
    qcow2_l1e_decode(0x0100000000040000ull, &l1);
    assert_int_equal(l1.reserved, 0x0100000000000000ull);
    assert_false(l1.copied);
    assert_true(qcow2_l1e_encode(0x40000, true) == 0x8000000000040000ull);
}

static void test_cluster_types(void **state)
{
    (void)state;
    assert_int_equal(qcow2_l2e_type(&STD, 0), QCOW2_CLUSTER_UNALLOCATED);
    assert_int_equal(qcow2_l2e_type(&STD, 0x8000000000050000ull), QCOW2_CLUSTER_NORMAL);
    assert_int_equal(qcow2_l2e_type(&STD, 0x50000), QCOW2_CLUSTER_NORMAL);
    assert_int_equal(qcow2_l2e_type(&STD, 1), QCOW2_CLUSTER_ZERO_PLAIN);
    assert_int_equal(qcow2_l2e_type(&STD, 0x50001), QCOW2_CLUSTER_ZERO_ALLOC);
    assert_int_equal(qcow2_l2e_type(&STD, 0x4000000000050000ull), QCOW2_CLUSTER_COMPRESSED);
    /* Offset 0 with COPIED: unallocated normally, NORMAL with a data file. */
    assert_int_equal(qcow2_l2e_type(&STD, QCOW2_OFLAG_COPIED), QCOW2_CLUSTER_UNALLOCATED);
    assert_int_equal(qcow2_l2e_type(&DF, QCOW2_OFLAG_COPIED), QCOW2_CLUSTER_NORMAL);
    assert_int_equal(qcow2_l2e_type(&DF, 0), QCOW2_CLUSTER_UNALLOCATED);
    /* Extended L2 ignores bit 0. */
    assert_int_equal(qcow2_l2e_type(&EXT, 1), QCOW2_CLUSTER_UNALLOCATED);
    assert_int_equal(qcow2_l2e_type(&EXT, 0x50001), QCOW2_CLUSTER_NORMAL);
    assert_true(qcow2_cluster_type_allocated(QCOW2_CLUSTER_ZERO_ALLOC));
    assert_false(qcow2_cluster_type_allocated(QCOW2_CLUSTER_ZERO_PLAIN));
    assert_string_equal(qcow2_cluster_type_name(QCOW2_CLUSTER_COMPRESSED), "compressed");
}

static void test_subclusters(void **state)
{
    (void)state;
    /* digest: writes at 0-4k, 8-12k, zero-write 16-20k, 2 KiB subclusters */
    uint64_t bmp = 0x0000030000000033ull, e = 0x8000000000050000ull;
    const enum qcow2_subcluster_type want[10] = {
        QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_NORMAL,
        QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC,
        QCOW2_SUBCLUSTER_NORMAL, QCOW2_SUBCLUSTER_NORMAL,
        QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC, QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC,
        QCOW2_SUBCLUSTER_ZERO_ALLOC, QCOW2_SUBCLUSTER_ZERO_ALLOC,
    };
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(qcow2_l2e_subcluster_type(&EXT, e, bmp, i), want[i]);
    assert_int_equal(qcow2_l2e_subcluster_type(&EXT, e, bmp, 31),
                     QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC);
    assert_int_equal(qcow2_l2e_subcluster_type(&EXT, e, bmp, 32), QCOW2_SUBCLUSTER_INVALID);
    /* contradictory bitmap: whole cluster invalid */
    assert_int_equal(qcow2_l2e_subcluster_type(&EXT, e, (1ull << 32) | 1, 5),
                     QCOW2_SUBCLUSTER_INVALID);
    /* unallocated: zero bits fine, alloc bits invalid */
    assert_int_equal(qcow2_l2e_subcluster_type(&EXT, 0, 1ull << 33, 1), QCOW2_SUBCLUSTER_ZERO_PLAIN);
    assert_int_equal(qcow2_l2e_subcluster_type(&EXT, 0, 1ull << 33, 0),
                     QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN);
    assert_int_equal(qcow2_l2e_subcluster_type(&EXT, 0, 4, 0), QCOW2_SUBCLUSTER_INVALID);
    assert_int_equal(qcow2_l2e_subcluster_type(&EXT, 0x4000000000050000ull, 0, 3),
                     QCOW2_SUBCLUSTER_COMPRESSED);
    /* standard L2 */
    assert_int_equal(qcow2_l2e_subcluster_type(&STD, 1, 0, 0), QCOW2_SUBCLUSTER_ZERO_PLAIN);
    assert_int_equal(qcow2_l2e_subcluster_type(&STD, 0x50001, 0, 0), QCOW2_SUBCLUSTER_ZERO_ALLOC);
    assert_int_equal(qcow2_l2e_subcluster_type(&STD, 0, 0, 0), QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN);
    assert_int_equal(qcow2_l2e_subcluster_type(&STD, e, 0, 1), QCOW2_SUBCLUSTER_INVALID);
    assert_string_equal(qcow2_subcluster_type_name(QCOW2_SUBCLUSTER_ZERO_ALLOC), "zero-alloc");
}

static void test_compressed(void **state)
{
    (void)state;
    struct qcow2_compressed c;
    uint64_t first, last, e;

    qcow2_compressed_decode(16, 0x4000000000050000ull, &c);
    assert_int_equal(c.host_offset, 0x50000);
    assert_int_equal(c.nb_sectors, 1);
    assert_int_equal(c.csize, 512);
    qcow2_compressed_decode(16, 0x400000000005004full, &c);
    assert_int_equal(c.host_offset, 0x5004f);
    assert_int_equal(c.csize, 512 - 0x4f);
    /* 8-bit sector field at bit 54 for 64k clusters */
    qcow2_compressed_decode(16, 0x4000000000000000ull | (3ull << 54) | 0x5fe00, &c);
    assert_int_equal(c.nb_sectors, 4);
    assert_int_equal(c.csize, 2048);
    qcow2_compressed_clusters(16, &c, &first, &last);
    assert_int_equal(first, 5);
    assert_int_equal(last, 6);
    assert_false(c.copied);
    /* cluster_bits 21: 13-bit field at bit 49 */
    qcow2_compressed_decode(21, 0x4000000000000000ull | (0x1fffull << 49) | 1, &c);
    assert_int_equal(c.host_offset, 1);
    assert_int_equal(c.nb_sectors, 0x2000);

    assert_int_equal(qcow2_compressed_encode(16, 0x5fe00, 2048, &e), 0);
    assert_true(e == (0x4000000000000000ull | (3ull << 54) | 0x5fe00));
    assert_int_equal(qcow2_compressed_encode(16, 0x5004f, 512 - 0x4f, &e), 0);
    assert_true(e == 0x400000000005004full);
    assert_int_equal(qcow2_compressed_encode(16, 1ull << 54, 512, &e), -EINVAL);
    assert_int_equal(qcow2_compressed_encode(16, 0, 257 * 512, &e), -EINVAL);
    assert_int_equal(qcow2_compressed_encode(16, 0, 0, &e), -EINVAL);
}

static void test_validate(void **state)
{
    (void)state;
    struct fmt_error err;
    assert_int_equal(qcow2_l2e_validate(&STD, 0x8000000000050000ull, 0, 0x40000, &err), 0);
    assert_int_equal(qcow2_l2e_validate(&STD, 0x8100000000050000ull, 0, 0x40000, &err), -EINVAL);
    assert_int_equal(err.offset, 0x40000);
    assert_int_equal(qcow2_l2e_validate(&STD, 0x8000000000050002ull, 0, 0x40000, &err), -EINVAL);
    assert_int_equal(qcow2_l2e_validate(&STD, 0x50200, 0, 0, &err), -EINVAL);
    assert_string_equal(err.rule, "Data cluster is not properly aligned");
    assert_int_equal(qcow2_l2e_validate(&STD, 0x50201, 0, 0, &err), -EINVAL);
    assert_string_equal(err.rule, "Preallocated zero cluster is not properly aligned");
    assert_int_equal(qcow2_l2e_validate(&STD, 0xc000000000050000ull, 0, 0, &err), -EINVAL);
    assert_string_equal(err.rule, "copied flag must never be set for compressed clusters");
    assert_int_equal(qcow2_l2e_validate(&DF, 0x4000000000050000ull, 0, 0, &err), -EINVAL);
    assert_int_equal(qcow2_l2e_validate(&EXT, 0x4000000000050000ull, 1, 0, &err), -EINVAL);
    assert_int_equal(qcow2_l2e_validate(&EXT, 0x50000, (1ull << 32) | 1, 0, &err), -EINVAL);
    assert_int_equal(err.offset, 8);
    assert_int_equal(qcow2_l2e_validate(&EXT, 0, 1, 0, &err), -EINVAL);
    assert_int_equal(qcow2_l2e_validate(&EXT, 0, 1ull << 40, 0, &err), 0);
    assert_int_equal(qcow2_l2e_validate(&EXT, 0x50000, 0x0000030000000033ull, 0, &err), 0);
    assert_true(qcow2_l2e_encode(0x50000, QCOW2_OFLAG_COPIED) == 0x8000000000050000ull);
    assert_true(qcow2_l2e_encode(0, QCOW2_OFLAG_ZERO) == 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l1),
        cmocka_unit_test(test_cluster_types),
        cmocka_unit_test(test_subclusters),
        cmocka_unit_test(test_compressed),
        cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
