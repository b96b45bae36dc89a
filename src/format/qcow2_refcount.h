/* Refcount table entries and refcount block packing (digest §1.4). */
#ifndef QIMG_FORMAT_QCOW2_REFCOUNT_H
#define QIMG_FORMAT_QCOW2_REFCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define QCOW2_REFT_OFFSET_MASK   0xfffffffffffffe00ull
#define QCOW2_REFT_RESERVED_MASK 0x1ffull

struct qcow2_reft_entry {
    uint64_t offset;      /* refblock offset; 0 = every refcount in that block is 0 */
    uint64_t reserved;    /* low 9 bits; non-zero is corruption */
};

void qcow2_reft_decode(uint64_t entry, struct qcow2_reft_entry *out);

/* Validate a reftable entry: reserved bits, cluster alignment (cluster_bits 9..21).
 * entry_file_offset is the entry's position in the file. 0 or -EINVAL. */
int qcow2_reft_validate(uint64_t entry, uint32_t cluster_bits, uint64_t entry_file_offset,
                        struct fmt_error *err);

/* Where cluster k's refcount lives: reftable index and index inside the block. */
static inline void qcow2_refcount_locate(uint64_t cluster_index, uint32_t refcount_block_bits,
                                         uint64_t *table_index, uint64_t *block_index)
{
    *table_index = cluster_index >> refcount_block_bits;
    *block_index = cluster_index & ((1ull << refcount_block_bits) - 1);
}

/* Largest refcount for refcount_order 0..6: 2^(1<<order) - 1. */
uint64_t qcow2_refcount_max(unsigned refcount_order);

/* Entries a block of block_len bytes holds at this order. */
uint64_t qcow2_refblock_entries(size_t block_len, unsigned refcount_order);

/* Read/write entry idx of a refcount block. Widths below 8 bits are packed
 * little-bit-endian within each byte; 8 is one byte; 16/32/64 are big-endian.
 * Return 0, or -EINVAL (order > 6, idx past the block, or value > max on set). */
int qcow2_refblock_get(const uint8_t *block, size_t block_len, unsigned refcount_order,
                       uint64_t idx, uint64_t *value);
int qcow2_refblock_set(uint8_t *block, size_t block_len, unsigned refcount_order,
                       uint64_t idx, uint64_t value);

#endif
