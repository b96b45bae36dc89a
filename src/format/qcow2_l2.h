/* L1 and L2 table entries (digest §1.5-1.7): decode, classify, encode. Pure functions
 * of the 64-bit entry (already converted with be64_get) and the image geometry. */
#ifndef QIMG_FORMAT_QCOW2_L2_H
#define QIMG_FORMAT_QCOW2_L2_H

#include <stdbool.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       (1ull << 0)

#define QCOW2_L1E_OFFSET_MASK      0x00fffffffffffe00ull
#define QCOW2_L1E_RESERVED_MASK    0x7f000000000001ffull
#define QCOW2_L2E_OFFSET_MASK      0x00fffffffffffe00ull
#define QCOW2_L2E_STD_RESERVED_MASK 0x3f000000000001feull

#define QCOW2_L2_BITMAP_ALL_ALLOC  0x00000000ffffffffull
#define QCOW2_L2_BITMAP_ALL_ZERO   0xffffffff00000000ull
#define QCOW2_SUB_ALLOC(i)         (1ull << (i))
#define QCOW2_SUB_ZERO(i)          (1ull << ((i) + 32))

/* ---- L1 ---- */
struct qcow2_l1e {
    uint64_t l2_offset;      /* entry & L1E_OFFSET_MASK; 0 = no L2 table */
    bool copied;             /* bit 63 */
    uint64_t reserved;       /* entry & L1E_RESERVED_MASK; non-zero is corruption */
};

void qcow2_l1e_decode(uint64_t entry, struct qcow2_l1e *out);
uint64_t qcow2_l1e_encode(uint64_t l2_offset, bool copied);

/* ---- L2 ---- */
/* Same order and meaning as qemu's QCow2ClusterType. */
enum qcow2_cluster_type {
    QCOW2_CLUSTER_UNALLOCATED,
    QCOW2_CLUSTER_ZERO_PLAIN,
    QCOW2_CLUSTER_ZERO_ALLOC,
    QCOW2_CLUSTER_NORMAL,
    QCOW2_CLUSTER_COMPRESSED,
};

/* Same as qemu's QCow2SubclusterType. */
enum qcow2_subcluster_type {
    QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN,
    QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC,
    QCOW2_SUBCLUSTER_ZERO_PLAIN,
    QCOW2_SUBCLUSTER_ZERO_ALLOC,
    QCOW2_SUBCLUSTER_NORMAL,
    QCOW2_SUBCLUSTER_COMPRESSED,
    QCOW2_SUBCLUSTER_INVALID,
};

/* What the classification depends on besides the entry. */
struct qcow2_l2_geom {
    uint32_t cluster_bits;   /* 9..21 */
    bool extended_l2;        /* incompat bit 4 */
    bool data_file;          /* incompat bit 2: offset 0 + COPIED is NORMAL */
};

/* qemu's qcow2_get_cluster_type(), exactly (digest §1.5). */
enum qcow2_cluster_type qcow2_l2e_type(const struct qcow2_l2_geom *g, uint64_t entry);

/* qemu's qcow2_get_subcluster_type(); without extended L2, bitmap is ignored and
 * sc_index must be 0. Returns INVALID for sc_index out of range. */
enum qcow2_subcluster_type qcow2_l2e_subcluster_type(const struct qcow2_l2_geom *g,
                                                     uint64_t entry, uint64_t bitmap,
                                                     unsigned sc_index);

/* True for the types qemu counts as allocated: NORMAL, ZERO_ALLOC, COMPRESSED. */
bool qcow2_cluster_type_allocated(enum qcow2_cluster_type t);
const char *qcow2_cluster_type_name(enum qcow2_cluster_type t);
const char *qcow2_subcluster_type_name(enum qcow2_subcluster_type t);

/* Standard (non-compressed) entry fields. */
static inline uint64_t qcow2_l2e_offset(uint64_t entry) { return entry & QCOW2_L2E_OFFSET_MASK; }
static inline uint64_t qcow2_l2e_reserved(uint64_t entry)
{
    return entry & QCOW2_L2E_STD_RESERVED_MASK;
}

/* Check one L2 entry (and bitmap, with extended L2) for the rules qemu's readers and
 * check enforce: reserved bits (non-compressed only), cluster alignment of the host
 * offset (NORMAL and ZERO_ALLOC), compressed + extended L2 needs bitmap == 0,
 * extended L2 allocated needs (bitmap>>32)&bitmap == 0, unallocated needs no
 * allocation bits, compressed entries need a data-file-free image. structure is
 * "L2 entry"; offset is the entry's file offset. 0 or -EINVAL. */
int qcow2_l2e_validate(const struct qcow2_l2_geom *g, uint64_t entry, uint64_t bitmap,
                       uint64_t entry_file_offset, struct fmt_error *err);

/* Standard entry: flags are QCOW2_OFLAG_COPIED / QCOW2_OFLAG_ZERO. */
uint64_t qcow2_l2e_encode(uint64_t host_offset, uint64_t flags);

/* ---- Compressed descriptor (digest §1.6) ---- */
struct qcow2_compressed {
    uint64_t host_offset;    /* byte offset, not aligned */
    uint64_t nb_sectors;     /* additional-sector field + 1 */
    uint64_t csize;          /* nb_sectors * 512 - (host_offset & 511) */
    bool copied;             /* must be false; qemu check reports it */
};

void qcow2_compressed_decode(uint32_t cluster_bits, uint64_t entry,
                             struct qcow2_compressed *out);
/* Encode host_offset and a compressed length in bytes (> 0). Returns 0 and *entry, or
 * -EINVAL if the offset or length does not fit the descriptor. */
int qcow2_compressed_encode(uint32_t cluster_bits, uint64_t host_offset, uint64_t csize,
                            uint64_t *entry);

/* Host cluster range [first, last] a compressed descriptor touches (for refcounts). */
void qcow2_compressed_clusters(uint32_t cluster_bits, const struct qcow2_compressed *c,
                               uint64_t *first_cluster, uint64_t *last_cluster);

#endif
