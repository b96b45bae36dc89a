#include "checker/imrt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/hugebuf.h"
#include "util/xalloc.h"

static uint64_t bytes_for(const struct imrt *t, uint64_t entries)
{
    unsigned per = 8 / t->bits;
    return entries / per + (entries % per != 0);
}

/* Big tables on huge pages: first-touch faults of 4 KiB pages are costly in a VM (a 1 TiB
 * image's IMRT is 4096 of them, against 8 of 2 MiB). Small ones from the heap. Zeroed. */
static uint8_t *alloc_entries(const struct imrt *t, uint64_t entries)
{
    uint64_t bytes = bytes_for(t, entries);
    return bigbuf_try_alloc((size_t)bytes);
}

static void free_entries(const struct imrt *t, uint8_t *v, uint64_t entries)
{
    bigbuf_free(v, (size_t)bytes_for(t, entries));
}

int imrt_init(struct imrt *t, uint64_t nb_clusters, unsigned refcount_order)
{
    memset(t, 0, sizeof(*t));
    unsigned bits = 1u << refcount_order;
    t->max = bits >= 64 ? UINT64_MAX : (1ull << bits) - 1;
    t->bits = bits < 8 ? bits : 8;
    /* one spare entry: a reference may end less than a cluster past EOF */
    uint64_t alloc = nb_clusters + 1;
    if (alloc > SIZE_MAX / 2)
        return -ENOMEM;
    t->v = alloc_entries(t, alloc);
    if (!t->v)
        return -ENOMEM;
    t->alloc = alloc;
    t->n = nb_clusters;
    return 0;
}

static void spill_free(struct imrt_spill *sp)
{
    free(sp->key);
    free(sp->val);
    memset(sp, 0, sizeof(*sp));
}

void imrt_free(struct imrt *t)
{
    if (t->v)
        free_entries(t, t->v, t->alloc);
    spill_free(&t->spill);
    t->v = NULL;
    t->n = t->alloc = 0;
}

int imrt_grow(struct imrt *t, uint64_t k)
{
    if (k < t->n)
        return 0;
    if (k >= t->alloc) {
        uint64_t na = k + 1 + (k >> 3);
        if (na < k || na > SIZE_MAX / 2)
            return -ENOMEM;
        uint8_t *nv = alloc_entries(t, na);
        if (!nv)
            return -ENOMEM;
        memcpy(nv, t->v, (size_t)bytes_for(t, t->alloc));
        free_entries(t, t->v, t->alloc);
        t->v = nv;
        t->alloc = na;
    }
    t->n = k + 1;
    return 0;
}

void imrt_zero(struct imrt *t)
{
    if (t->v)
        memset(t->v, 0, (size_t)bytes_for(t, t->alloc));
    spill_free(&t->spill);
}

/* Fibonacci hashing of the cluster index into the power-of-two table. */
static uint64_t slot_of(const struct imrt_spill *sp, uint64_t k)
{
    return (k * 0x9e3779b97f4a7c15ull) >> 32 & (sp->cap - 1);
}

uint64_t imrt_spill_get(const struct imrt *t, uint64_t k)
{
    const struct imrt_spill *sp = &t->spill;
    for (uint64_t i = sp->cap ? slot_of(sp, k) : 0; sp->cap; i = (i + 1) & (sp->cap - 1)) {
        if (sp->key[i] == k + 1)
            return sp->val[i];
        if (!sp->key[i])
            break;
    }
    return IMRT_SPILL;   /* not reached while the byte says "spilled" */
}

static void spill_put(struct imrt_spill *sp, uint64_t k, uint64_t val)
{
    uint64_t i = slot_of(sp, k);
    while (sp->key[i] && sp->key[i] != k + 1)
        i = (i + 1) & (sp->cap - 1);
    if (!sp->key[i])
        sp->used++;
    sp->key[i] = k + 1;
    sp->val[i] = val;
}

/* Entries are few (each needs IMRT_SPILL references, i.e. that many L2 entries or
 * snapshots), so the map's memory stays far below the metadata that made it. */
void imrt_spill_set(struct imrt *t, uint64_t k, uint64_t val)
{
    struct imrt_spill *sp = &t->spill;
    if ((sp->used + 1) * 2 > sp->cap) {
        struct imrt_spill old = *sp;
        sp->cap = old.cap ? old.cap * 2 : 64;
        sp->key = xcalloc((size_t)sp->cap, sizeof(uint64_t));
        sp->val = xcalloc((size_t)sp->cap, sizeof(uint64_t));
        sp->used = 0;
        for (uint64_t i = 0; i < old.cap; i++)
            if (old.key[i])
                spill_put(sp, old.key[i] - 1, old.val[i]);
        free(old.key);
        free(old.val);
    }
    spill_put(sp, k, val);
    t->v[k] = IMRT_SPILL;
}
