#include "checker/imrt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int imrt_init(struct imrt *t, uint64_t nb_clusters, unsigned refcount_order)
{
    memset(t, 0, sizeof(*t));
    t->width = refcount_order <= 3 ? 1 : 1u << (refcount_order - 3);
    unsigned bits = 1u << refcount_order;
    t->max = bits >= 64 ? UINT64_MAX : (1ull << bits) - 1;
    /* one spare entry: a reference may end less than a cluster past EOF */
    uint64_t alloc = nb_clusters + 1;
    if (alloc > SIZE_MAX / t->width)
        return -ENOMEM;
    t->v = calloc((size_t)alloc, t->width);
    if (!t->v)
        return -ENOMEM;
    t->alloc = alloc;
    t->n = nb_clusters;
    return 0;
}

void imrt_free(struct imrt *t)
{
    free(t->v);
    t->v = NULL;
    t->n = t->alloc = 0;
}

int imrt_grow(struct imrt *t, uint64_t k)
{
    if (k < t->n)
        return 0;
    if (k >= t->alloc) {
        uint64_t na = k + 1 + (k >> 3);
        if (na < k || na > SIZE_MAX / t->width)
            return -ENOMEM;
        void *nv = realloc(t->v, (size_t)(na * t->width));
        if (!nv)
            return -ENOMEM;
        memset((char *)nv + t->alloc * t->width, 0, (size_t)((na - t->alloc) * t->width));
        t->v = nv;
        t->alloc = na;
    }
    t->n = k + 1;
    return 0;
}

void imrt_zero(struct imrt *t)
{
    if (t->v)
        memset(t->v, 0, (size_t)(t->alloc * t->width));
}
