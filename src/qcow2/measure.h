/* qemu's qcow2_measure arithmetic (block/qcow2.c): the size a new qcow2 image needs. Pure
 * computation; the command (src/cmd/measure.c) reads options and the source image. */
#ifndef QIMG_QCOW2_MEASURE_H
#define QIMG_QCOW2_MEASURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* qemu's QCOW_MAX_L1_SIZE: an L1 table larger than this is refused. */
#define QCOW2_MEASURE_MAX_L1 (32u * 1024 * 1024)

/* qemu's qcow2_calc_prealloc_size: header, L1, L2 and refcount structures for a fully
 * allocated image of total_size bytes, plus the data itself. Callers keep total_size so
 * that the L1 check (qcow2_measure_l1_ok) passes, which bounds the arithmetic far below
 * 2^64. */
uint64_t qcow2_calc_prealloc_size(uint64_t total_size, uint64_t cluster_size,
                                  unsigned refcount_order, bool extended_l2);

/* qcow2_measure's size check: does an image of virtual_size (cluster-aligned) fit an L1
 * table of at most QCOW2_MEASURE_MAX_L1 bytes? */
bool qcow2_measure_l1_ok(uint64_t virtual_size, uint64_t cluster_size, bool extended_l2);

/* One persistent bitmap as qcow2_get_persistent_dirty_bitmap_size sees it. */
struct qcow2_measure_bitmap {
    size_t name_len;
    unsigned granularity_bits;
};

/* qemu's qcow2_get_persistent_dirty_bitmap_size: every bitmap of a disk of disk_size
 * bytes fully allocated in clusters of cluster_size, its bitmap table, and the directory. */
uint64_t qcow2_measure_bitmaps(const struct qcow2_measure_bitmap *bm, size_t n,
                               uint64_t disk_size, uint64_t cluster_size);

#endif
