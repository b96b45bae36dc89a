/* Refcount table entries and refcount block packing (digest §1.4). */
#ifndef QIMG_FORMAT_QCOW2_REFCOUNT_H
#define QIMG_FORMAT_QCOW2_REFCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/be.h"
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

/* The one layout of a refblock entry. Widths below 8 bits are packed lowest bits first
 * within each byte (qemu's get_refcount_ro0..2); 8 is one byte; 16/32/64 are big-endian.
 * Unchecked, for per-cluster loops (the checker's walk and compare): order <= 6 and
 * idx < qcow2_refblock_entries() are the caller's promise, value <= the order's maximum on
 * put. qcow2_refblock_get/set below are the validating forms. */
static inline uint64_t qcow2_refblock_entry(const uint8_t *block, unsigned refcount_order,
                                            uint64_t idx)
{
    switch (refcount_order) {
    case 0: return (block[idx / 8] >> (idx % 8)) & 1;
    case 1: return (block[idx / 4] >> (2 * (idx % 4))) & 3;
    case 2: return (block[idx / 2] >> (4 * (idx % 2))) & 15;
    case 3: return block[idx];
    case 4: return be16_get(block + idx * 2);
    case 5: return be32_get(block + idx * 4);
    default: return be64_get(block + idx * 8);
    }
}

static inline void qcow2_refblock_put(uint8_t *block, unsigned refcount_order, uint64_t idx,
                                      uint64_t value)
{
    switch (refcount_order) {
    case 3: block[idx] = (uint8_t)value; break;
    case 4: be16_put(block + idx * 2, (uint16_t)value); break;
    case 5: be32_put(block + idx * 4, (uint32_t)value); break;
    case 6: be64_put(block + idx * 8, value); break;
    default: {
        unsigned w = 1u << refcount_order, per = 8 / w, sh = (unsigned)(idx % per) * w;
        uint8_t mask = (uint8_t)(((1u << w) - 1) << sh);
        block[idx / per] = (uint8_t)((block[idx / per] & ~mask) | ((unsigned)value << sh));
        break;
    }
    }
}

/* The bytes of the block that hold entry idx (what a writer writes back after a put):
 * offset *byte, *len bytes (1 for sub-byte widths, shared with the neighbours). */
static inline void qcow2_refblock_entry_bytes(unsigned refcount_order, uint64_t idx,
                                              uint64_t *byte, size_t *len)
{
    unsigned bits = 1u << refcount_order;
    *byte = idx * bits / 8;
    *len = bits >= 8 ? bits / 8 : 1;
}

/* Validating read/write of entry idx. Return 0, or -EINVAL (order > 6, idx past the block,
 * or value > max on set). */
int qcow2_refblock_get(const uint8_t *block, size_t block_len, unsigned refcount_order,
                       uint64_t idx, uint64_t *value);
int qcow2_refblock_set(uint8_t *block, size_t block_len, unsigned refcount_order,
                       uint64_t idx, uint64_t value);

#endif
