/* The in-memory refcount table (IMRT): one computed refcount per host cluster, in a flat
 * array of the narrowest C type that holds refcount_bits (8/16/32/64 bits; widths below
 * 8 use bytes). Sized from the file's cluster count, never from header numbers; it grows
 * only when a reference reaches the cluster just past EOF (qemu tolerates that). */
#ifndef QIMG_CHECKER_IMRT_H
#define QIMG_CHECKER_IMRT_H

#include <stdbool.h>
#include <stdint.h>

struct imrt {
    void *v;
    uint64_t n;          /* entries in use (qemu's nb_clusters) */
    uint64_t alloc;      /* entries allocated */
    uint64_t max;        /* refcount_max */
    unsigned width;      /* bytes per entry: 1, 2, 4, 8 */
};

/* 0 or -ENOMEM. */
int imrt_init(struct imrt *t, uint64_t nb_clusters, unsigned refcount_order);
void imrt_free(struct imrt *t);
/* Make entry k exist (n becomes k+1 if needed). 0 or -ENOMEM. */
int imrt_grow(struct imrt *t, uint64_t k);
void imrt_zero(struct imrt *t);

static inline uint64_t imrt_get(const struct imrt *t, uint64_t k)
{
    switch (t->width) {
    case 1: return ((const uint8_t *)t->v)[k];
    case 2: return ((const uint16_t *)t->v)[k];
    case 4: return ((const uint32_t *)t->v)[k];
    default: return ((const uint64_t *)t->v)[k];
    }
}

static inline void imrt_set(struct imrt *t, uint64_t k, uint64_t val)
{
    switch (t->width) {
    case 1: ((uint8_t *)t->v)[k] = (uint8_t)val; break;
    case 2: ((uint16_t *)t->v)[k] = (uint16_t)val; break;
    case 4: ((uint32_t *)t->v)[k] = (uint32_t)val; break;
    default: ((uint64_t *)t->v)[k] = val; break;
    }
}

#endif
