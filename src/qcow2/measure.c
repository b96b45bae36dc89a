/* qemu's qcow2_measure arithmetic: see measure.h. */
#include "qcow2/measure.h"

#include "qcow2/alloc.h"

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static uint64_t div_round_up(uint64_t v, uint64_t d)
{
    return v / d + (v % d != 0);
}

bool qcow2_measure_l1_ok(uint64_t virtual_size, uint64_t cluster_size, bool extended_l2)
{
    uint64_t l2e = extended_l2 ? 16 : 8;
    uint64_t l2_tables = div_round_up(virtual_size / cluster_size, cluster_size / l2e);
    return l2_tables <= QCOW2_MEASURE_MAX_L1 / 8;
}

uint64_t qcow2_calc_prealloc_size(uint64_t total_size, uint64_t cluster_size,
                                  unsigned refcount_order, bool extended_l2)
{
    uint64_t l2e = extended_l2 ? 16 : 8;
    uint64_t aligned = round_up(total_size, cluster_size);
    uint64_t meta = cluster_size; /* the header cluster */
    /* L2 tables: one entry per cluster, whole tables */
    uint64_t nl2e = round_up(aligned / cluster_size, cluster_size / l2e);
    meta += nl2e * l2e;
    /* L1: one entry per L2 table, whole clusters */
    uint64_t nl1e = round_up(nl2e * l2e / cluster_size, cluster_size / 8);
    meta += nl1e * 8;
    /* refcounts for all of that, themselves included */
    meta += (uint64_t)qcow2_refcount_metadata_size((int64_t)((meta + aligned) / cluster_size),
                                                   cluster_size, refcount_order, false, NULL);
    return meta + aligned;
}

uint64_t qcow2_measure_bitmaps(const struct qcow2_measure_bitmap *bm, size_t n,
                               uint64_t disk_size, uint64_t cluster_size)
{
    uint64_t total = 0, dir = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t bits = div_round_up(disk_size, (uint64_t)1 << bm[i].granularity_bits);
        uint64_t clusters = div_round_up(div_round_up(bits, 8), cluster_size);
        total += clusters * cluster_size;                 /* the bitmap, all allocated */
        total += round_up(clusters * 8, cluster_size);    /* its bitmap table */
        dir += round_up(24 + bm[i].name_len, 8);          /* calc_dir_entry_size, no extra */
    }
    return total + round_up(dir, cluster_size);
}
