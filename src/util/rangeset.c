/* Sorted range sets (see rangeset.h). */
#include "util/rangeset.h"

#include <stdlib.h>
#include <string.h>

#include "util/xalloc.h"

void rangeset_init(struct rangeset *t, size_t esize)
{
    memset(t, 0, sizeof(*t));
    t->esize = esize < sizeof(struct rs_range) ? sizeof(struct rs_range) : esize;
}

void rangeset_free(struct rangeset *t)
{
    size_t esize = t->esize;
    free(t->v);
    free(t->max_end);
    rangeset_init(t, esize);
}

void rangeset_clear(struct rangeset *t)
{
    t->n = 0;
}

void *rangeset_add(struct rangeset *t, uint64_t start, uint64_t end)
{
    if (start >= end)
        return NULL;
    if (t->n == t->alloc) {
        t->alloc = t->alloc ? t->alloc * 2 : 16;
        t->v = xreallocarray(t->v, t->alloc, t->esize);
    }
    unsigned char *e = rangeset_at(t, t->n++);
    memset(e, 0, t->esize);
    *(struct rs_range *)e = (struct rs_range){ start, end };
    return e;
}

static int cmp_start(const void *a, const void *b)
{
    const struct rs_range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

void rangeset_seal(struct rangeset *t)
{
    if (t->n)
        qsort(t->v, t->n, t->esize, cmp_start);
    t->max_end = xreallocarray(t->max_end, t->n ? t->n : 1, sizeof(*t->max_end));
    for (size_t i = 0; i < t->n; i++) {
        uint64_t end = ((const struct rs_range *)rangeset_at(t, i))->end;
        t->max_end[i] = i && t->max_end[i - 1] > end ? t->max_end[i - 1] : end;
    }
}

/* Number of ranges with start < x. */
static size_t count_before(const struct rangeset *t, uint64_t x)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (((const struct rs_range *)rangeset_at(t, mid))->start < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool rangeset_hits(const struct rangeset *t, uint64_t a, uint64_t b)
{
    if (a >= b)
        return false;
    size_t i = count_before(t, b);
    return i && t->max_end[i - 1] > a;
}

uint64_t rangeset_count(const struct rangeset *t, uint64_t a, uint64_t b)
{
    uint64_t n = 0;
    for (size_t i = 0; i < t->n; i++) {
        const struct rs_range *r = rangeset_at(t, i);
        if (r->start >= b)
            break;
        n += r->end > a;
    }
    return n;
}

uint64_t rangeset_skip(const struct rangeset *t, uint64_t k)
{
    size_t i = k == UINT64_MAX ? t->n : count_before(t, k + 1);   /* start <= k */
    /* the range reaching max_end[i-1] starts at or before k, so it covers [k, max_end) */
    return i && t->max_end[i - 1] > k ? t->max_end[i - 1] : k;
}

void *rangeset_find(const struct rangeset *t, uint64_t a, uint64_t b)
{
    if (a >= b)
        return NULL;
    size_t i = count_before(t, b);
    if (!i || t->max_end[i - 1] <= a)
        return NULL;
    while (i--) {
        struct rs_range *r = rangeset_at(t, i);
        if (r->end > a)
            return r;
    }
    return NULL;
}
