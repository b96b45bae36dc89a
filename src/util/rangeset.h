/* A set of half-open ranges [start, end) answering "does anything overlap [a, b)?" in
 * O(log n): the ranges sorted by start and a prefix maximum of their ends. Built once
 * (add..., then seal), queried many times; used by the overlap guard (qcow2/overlap.c,
 * byte ranges) and by repair's live-metadata map (repair/metamap.c, cluster ranges).
 *
 * Elements are the caller's structs of esize bytes whose first member is a struct
 * rs_range, so a range can carry what the caller needs (a class name, ...). */
#ifndef QIMG_UTIL_RANGESET_H
#define QIMG_UTIL_RANGESET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rs_range {
    uint64_t start, end;
};

struct rangeset {
    unsigned char *v;      /* n elements of esize bytes, sorted by start once sealed */
    size_t esize;
    uint64_t *max_end;     /* max_end[i] = max end of elements 0..i (sealed) */
    size_t n, alloc;
};

/* esize: sizeof the caller's element (>= sizeof(struct rs_range)). */
void rangeset_init(struct rangeset *t, size_t esize);
void rangeset_free(struct rangeset *t);
/* Forget every range (memory kept for the next build). */
void rangeset_clear(struct rangeset *t);
/* Adds [start, end) and returns its element (zeroed past the range) for the caller to
 * fill; NULL (nothing added) when start >= end. Invalidates the seal. */
void *rangeset_add(struct rangeset *t, uint64_t start, uint64_t end);
/* Sort and index; needed before any query. */
void rangeset_seal(struct rangeset *t);

static inline void *rangeset_at(const struct rangeset *t, size_t i)
{
    return t->v + i * t->esize;
}

/* Does any range overlap [a, b)? */
bool rangeset_hits(const struct rangeset *t, uint64_t a, uint64_t b);
/* How many ranges overlap [a, b) (linear: for diagnostics). */
uint64_t rangeset_count(const struct rangeset *t, uint64_t a, uint64_t b);
/* If k lies in a range: the first point after the ranges covering it (> k); else k. */
uint64_t rangeset_skip(const struct rangeset *t, uint64_t k);
/* The last element (in start order) that overlaps [a, b), or NULL. */
void *rangeset_find(const struct rangeset *t, uint64_t a, uint64_t b);

#endif
