/* The in-memory refcount table (IMRT): one computed refcount per host cluster. Sized from
 * the file's cluster count, never from header numbers; it grows only when a reference
 * reaches the cluster just past EOF (qemu tolerates that).
 *
 * One byte per cluster for refcount_bits 8..64: almost every refcount is 0, 1 or a few
 * snapshots' worth, so a byte holds it; values from IMRT_SPILL up live in a small hash map
 * beside the bytes. A 1 TiB image of 64 KiB clusters needs 16 MiB instead of qemu's 32 MiB
 * (16-bit refcounts), which is also half the memory to zero and to walk. refcount_bits
 * 1, 2 and 4 are packed like qemu's (8, 4 or 2 entries a byte): they never spill. */
#ifndef QIMG_CHECKER_IMRT_H
#define QIMG_CHECKER_IMRT_H

#include <stdbool.h>
#include <stdint.h>

#define IMRT_SPILL 255u   /* byte value: the refcount is in the spill map */

struct imrt_spill {
    uint64_t *key;       /* cluster index + 1; 0 = empty slot */
    uint64_t *val;
    uint64_t cap;        /* power of two, or 0 */
    uint64_t used;
};

struct imrt {
    uint8_t *v;
    unsigned bits;       /* bits per entry: 1, 2, 4 (packed) or 8 (bytes + spill) */
    uint64_t n;          /* entries in use (qemu's nb_clusters) */
    uint64_t alloc;      /* entries allocated */
    uint64_t max;        /* refcount_max */
    struct imrt_spill spill;   /* entries whose byte is IMRT_SPILL (others are stale) */
};

/* 0 or -ENOMEM. */
int imrt_init(struct imrt *t, uint64_t nb_clusters, unsigned refcount_order);
void imrt_free(struct imrt *t);
/* Make entry k exist (n becomes k+1 if needed). 0 or -ENOMEM. */
int imrt_grow(struct imrt *t, uint64_t k);
void imrt_zero(struct imrt *t);

uint64_t imrt_spill_get(const struct imrt *t, uint64_t k);
void imrt_spill_set(struct imrt *t, uint64_t k, uint64_t val);

/* Packed entries: entry k of a bits-wide table, lowest bits first within a byte. */
static inline unsigned imrt_packed_shift(const struct imrt *t, uint64_t k)
{
    return (unsigned)(k & (8 / t->bits - 1)) * t->bits;
}

static inline uint64_t imrt_get(const struct imrt *t, uint64_t k)
{
    if (t->bits < 8)
        return (t->v[k / (8 / t->bits)] >> imrt_packed_shift(t, k)) & ((1u << t->bits) - 1);
    uint8_t b = t->v[k];
    return b != IMRT_SPILL ? b : imrt_spill_get(t, k);
}

/* val <= t->max (callers check against max first). */
static inline void imrt_set(struct imrt *t, uint64_t k, uint64_t val)
{
    if (t->bits < 8) {
        uint8_t *p = &t->v[k / (8 / t->bits)];
        unsigned sh = imrt_packed_shift(t, k), mask = ((1u << t->bits) - 1) << sh;
        *p = (uint8_t)((*p & ~mask) | (((unsigned)val << sh) & mask));
    } else if (val < IMRT_SPILL) {
        t->v[k] = (uint8_t)val;   /* a spill entry left behind is stale, never read */
    } else {
        imrt_spill_set(t, k, val);
    }
}

#endif
