/* Refcount table entries and refcount block packing for every width 1..64 bits. */
#include "format/qcow2_refcount.h"

#include <errno.h>


void qcow2_reft_decode(uint64_t entry, struct qcow2_reft_entry *out)
{
    out->offset = entry & QCOW2_REFT_OFFSET_MASK;
    out->reserved = entry & QCOW2_REFT_RESERVED_MASK;
}

int qcow2_reft_validate(uint64_t entry, uint32_t cluster_bits, uint64_t entry_file_offset,
                        struct fmt_error *err)
{
    if (entry & QCOW2_REFT_RESERVED_MASK)
        return fmt_error_set(err, -EINVAL, "refcount table entry", "entry", entry, true,
                             entry_file_offset, "reserved bits 0-8 must be zero");
    if (cluster_bits < 9 || cluster_bits > 63)
        return fmt_error_set(err, -EINVAL, "refcount table entry", "cluster_bits", cluster_bits,
                             false, 0, "invalid cluster_bits");
    if (entry & ((1ull << cluster_bits) - 1))
        return fmt_error_set(err, -EINVAL, "refcount table entry", "entry", entry, true,
                             entry_file_offset, "refcount block is not cluster aligned");
    return 0;
}

uint64_t qcow2_refcount_max(unsigned refcount_order)
{
    if (refcount_order > 6)
        return 0;
    unsigned bits = 1u << refcount_order;
    return bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
}

uint64_t qcow2_refblock_entries(size_t block_len, unsigned refcount_order)
{
    if (refcount_order > 6)
        return 0;
    /* block_len * 8 / bits, computed without overflowing block_len * 8. */
    unsigned bits = 1u << refcount_order;
    return bits >= 8 ? (uint64_t)block_len / (bits / 8) : (uint64_t)block_len * (8 / bits);
}

int qcow2_refblock_get(const uint8_t *block, size_t block_len, unsigned refcount_order,
                       uint64_t idx, uint64_t *value)
{
    if (refcount_order > 6 || idx >= qcow2_refblock_entries(block_len, refcount_order))
        return -EINVAL;
    *value = qcow2_refblock_entry(block, refcount_order, idx);
    return 0;
}

int qcow2_refblock_set(uint8_t *block, size_t block_len, unsigned refcount_order,
                       uint64_t idx, uint64_t value)
{
    if (refcount_order > 6 || idx >= qcow2_refblock_entries(block_len, refcount_order) ||
        value > qcow2_refcount_max(refcount_order))
        return -EINVAL;
    qcow2_refblock_put(block, refcount_order, idx, value);
    return 0;
}
