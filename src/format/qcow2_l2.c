/* L1/L2 entry decoding and classification (qemu 7.2 qcow2_get_cluster_type and
 * qcow2_get_subcluster_type semantics). */
#include "format/qcow2_l2.h"

#include <errno.h>

static const char L2[] = "L2 entry";

void qcow2_l1e_decode(uint64_t entry, struct qcow2_l1e *out)
{
    out->l2_offset = entry & QCOW2_L1E_OFFSET_MASK;
    out->copied = (entry & QCOW2_OFLAG_COPIED) != 0;
    out->reserved = entry & QCOW2_L1E_RESERVED_MASK;
}

uint64_t qcow2_l1e_encode(uint64_t l2_offset, bool copied)
{
    return (l2_offset & QCOW2_L1E_OFFSET_MASK) | (copied ? QCOW2_OFLAG_COPIED : 0);
}

enum qcow2_cluster_type qcow2_l2e_type(const struct qcow2_l2_geom *g, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return QCOW2_CLUSTER_COMPRESSED;
    /* With extended L2, bit 0 is unused; zeroes live in the bitmap. */
    if ((entry & QCOW2_OFLAG_ZERO) && !g->extended_l2)
        return (entry & QCOW2_L2E_OFFSET_MASK) ? QCOW2_CLUSTER_ZERO_ALLOC
                                               : QCOW2_CLUSTER_ZERO_PLAIN;
    if (!(entry & QCOW2_L2E_OFFSET_MASK)) {
        /* Offset 0 is a real data-file offset; COPIED tells it apart from unallocated. */
        if (g->data_file && (entry & QCOW2_OFLAG_COPIED))
            return QCOW2_CLUSTER_NORMAL;
        return QCOW2_CLUSTER_UNALLOCATED;
    }
    return QCOW2_CLUSTER_NORMAL;
}

enum qcow2_subcluster_type qcow2_l2e_subcluster_type(const struct qcow2_l2_geom *g,
                                                     uint64_t entry, uint64_t bitmap,
                                                     unsigned sc_index)
{
    enum qcow2_cluster_type t = qcow2_l2e_type(g, entry);

    if (!g->extended_l2) {
        if (sc_index != 0)
            return QCOW2_SUBCLUSTER_INVALID;
        switch (t) {
        case QCOW2_CLUSTER_COMPRESSED: return QCOW2_SUBCLUSTER_COMPRESSED;
        case QCOW2_CLUSTER_ZERO_PLAIN: return QCOW2_SUBCLUSTER_ZERO_PLAIN;
        case QCOW2_CLUSTER_ZERO_ALLOC: return QCOW2_SUBCLUSTER_ZERO_ALLOC;
        case QCOW2_CLUSTER_NORMAL:     return QCOW2_SUBCLUSTER_NORMAL;
        default:                       return QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN;
        }
    }
    if (sc_index >= 32)
        return QCOW2_SUBCLUSTER_INVALID;
    switch (t) {
    case QCOW2_CLUSTER_COMPRESSED:
        return QCOW2_SUBCLUSTER_COMPRESSED;
    case QCOW2_CLUSTER_NORMAL:
        if ((bitmap >> 32) & bitmap)
            return QCOW2_SUBCLUSTER_INVALID;
        if (bitmap & QCOW2_SUB_ZERO(sc_index))
            return QCOW2_SUBCLUSTER_ZERO_ALLOC;
        if (bitmap & QCOW2_SUB_ALLOC(sc_index))
            return QCOW2_SUBCLUSTER_NORMAL;
        return QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC;
    case QCOW2_CLUSTER_UNALLOCATED:
        if (bitmap & QCOW2_L2_BITMAP_ALL_ALLOC)
            return QCOW2_SUBCLUSTER_INVALID;
        if (bitmap & QCOW2_SUB_ZERO(sc_index))
            return QCOW2_SUBCLUSTER_ZERO_PLAIN;
        return QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN;
    default:
        /* ZERO_* cannot occur with extended L2 (bit 0 is ignored). */
        return QCOW2_SUBCLUSTER_INVALID;
    }
}

bool qcow2_cluster_type_allocated(enum qcow2_cluster_type t)
{
    return t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC ||
           t == QCOW2_CLUSTER_COMPRESSED;
}

const char *qcow2_cluster_type_name(enum qcow2_cluster_type t)
{
    static const char *const n[] = { "unallocated", "zero-plain", "zero-alloc", "normal",
                                     "compressed" };
    return (unsigned)t < sizeof(n) / sizeof(n[0]) ? n[t] : "?";
}

const char *qcow2_subcluster_type_name(enum qcow2_subcluster_type t)
{
    static const char *const n[] = { "unallocated-plain", "unallocated-alloc", "zero-plain",
                                     "zero-alloc", "normal", "compressed", "invalid" };
    return (unsigned)t < sizeof(n) / sizeof(n[0]) ? n[t] : "?";
}

int qcow2_l2e_validate(const struct qcow2_l2_geom *g, uint64_t entry, uint64_t bitmap,
                       uint64_t entry_file_offset, struct fmt_error *err)
{
    enum qcow2_cluster_type t = qcow2_l2e_type(g, entry);
    uint64_t cmask = (1ull << g->cluster_bits) - 1;

    if (t == QCOW2_CLUSTER_COMPRESSED) {
        if (entry & QCOW2_OFLAG_COPIED)
            return fmt_error_set(err, -EINVAL, L2, "entry", entry, true, entry_file_offset,
                                 "copied flag must never be set for compressed clusters");
        if (g->data_file)
            return fmt_error_set(err, -EINVAL, L2, "entry", entry, true, entry_file_offset,
                                 "compressed clusters are not allowed with a data file");
        if (g->extended_l2 && bitmap)
            return fmt_error_set(err, -EINVAL, L2, "bitmap", bitmap, true,
                                 entry_file_offset + 8,
                                 "compressed cluster must have a zero subcluster bitmap");
        return 0;
    }
    if (entry & QCOW2_L2E_STD_RESERVED_MASK)
        return fmt_error_set(err, -EINVAL, L2, "entry", entry, true, entry_file_offset,
                             "reserved bits 0x%llx set",
                             (unsigned long long)(entry & QCOW2_L2E_STD_RESERVED_MASK));
    if ((t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) &&
        (entry & QCOW2_L2E_OFFSET_MASK & cmask))
        return fmt_error_set(err, -EINVAL, L2, "entry", entry, true, entry_file_offset,
                             t == QCOW2_CLUSTER_NORMAL
                                 ? "Data cluster is not properly aligned"
                                 : "Preallocated zero cluster is not properly aligned");
    if (g->extended_l2) {
        if (t == QCOW2_CLUSTER_NORMAL && ((bitmap >> 32) & bitmap))
            return fmt_error_set(err, -EINVAL, L2, "bitmap", bitmap, true,
                                 entry_file_offset + 8,
                                 "Allocated cluster has corrupted subcluster allocation bitmap");
        if (t == QCOW2_CLUSTER_UNALLOCATED && (bitmap & QCOW2_L2_BITMAP_ALL_ALLOC))
            return fmt_error_set(err, -EINVAL, L2, "bitmap", bitmap, true,
                                 entry_file_offset + 8,
                                 "Unallocated cluster has non-zero subcluster allocation map");
    }
    return 0;
}

uint64_t qcow2_l2e_encode(uint64_t host_offset, uint64_t flags)
{
    return (host_offset & QCOW2_L2E_OFFSET_MASK) |
           (flags & (QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO));
}

static unsigned csize_shift(uint32_t cluster_bits)
{
    return 62 - (cluster_bits - 8);
}

void qcow2_compressed_decode(uint32_t cluster_bits, uint64_t entry, struct qcow2_compressed *out)
{
    /* Callers pass a validated cluster_bits (9..21); clamp so shifts stay defined. */
    if (cluster_bits < 9 || cluster_bits > 21)
        cluster_bits = cluster_bits < 9 ? 9 : 21;
    unsigned shift = csize_shift(cluster_bits);
    uint64_t csize_mask = (1ull << (cluster_bits - 8)) - 1;

    out->host_offset = entry & ((1ull << shift) - 1);
    out->nb_sectors = ((entry >> shift) & csize_mask) + 1;
    out->csize = out->nb_sectors * 512 - (out->host_offset & 511);
    out->copied = (entry & QCOW2_OFLAG_COPIED) != 0;
}

int qcow2_compressed_encode(uint32_t cluster_bits, uint64_t host_offset, uint64_t csize,
                            uint64_t *entry)
{
    if (cluster_bits < 9 || cluster_bits > 21 || csize == 0)
        return -EINVAL;
    unsigned shift = csize_shift(cluster_bits);
    uint64_t csize_mask = (1ull << (cluster_bits - 8)) - 1;
    if (host_offset >> shift)
        return -EINVAL;
    /* Additional sectors = index of the last sector touched minus the first. */
    uint64_t extra = ((host_offset + csize - 1) >> 9) - (host_offset >> 9);
    if (extra > csize_mask)
        return -EINVAL;
    *entry = QCOW2_OFLAG_COMPRESSED | (extra << shift) | host_offset;
    return 0;
}

void qcow2_compressed_clusters(uint32_t cluster_bits, const struct qcow2_compressed *c,
                               uint64_t *first_cluster, uint64_t *last_cluster)
{
    /* host_offset < 2^54 and csize < 2^23, so the sum cannot overflow. */
    *first_cluster = c->host_offset >> cluster_bits;
    *last_cluster = (c->host_offset + c->csize - 1) >> cluster_bits;
}
