/* The in-memory refcount table (IMRT): one computed refcount per host cluster. Sized from
 * the file's cluster count, never from header numbers; it grows only when a reference
 * reaches the cluster just past EOF (qemu tolerates that).
 *
 * One byte per cluster whatever refcount_bits is: almost every refcount is 0, 1 or a few
 * snapshots' worth, so a byte holds it; values from IMRT_SPILL up live in a small hash map
 * beside the bytes. A 1 TiB image of 64 KiB clusters needs 16 MiB instead of qemu's 32 MiB
 * (16-bit refcounts), which is also half the memory to zero and to walk. */
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

static inline uint64_t imrt_get(const struct imrt *t, uint64_t k)
{
    uint8_t b = t->v[k];
    return b != IMRT_SPILL ? b : imrt_spill_get(t, k);
}

static inline void imrt_set(struct imrt *t, uint64_t k, uint64_t val)
{
    if (val < IMRT_SPILL)
        t->v[k] = (uint8_t)val;   /* a spill entry left behind is stale, never read */
    else
        imrt_spill_set(t, k, val);
}

#endif
