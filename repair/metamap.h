/* Live metadata of a qcow2 image as cluster ranges (repair/metamap.c), for the refcount
 * rebuild (§3.8): its allocator never hands out a cluster in one of these ranges (its
 * writes then go through the overlap guard, qcow2/overlap.h, like every repair write).
 *
 * The IMRT alone is not enough: metadata whose reference the check did not count (it lies
 * past EOF, or its entry is damaged) looks free there, and qemu's rebuild then writes
 * over it (or its overlap check refuses the write and fails the repair). */
#ifndef QIMG_REPAIR_METAMAP_H
#define QIMG_REPAIR_METAMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "checker/qcow2_check.h"
#include "util/rangeset.h"

struct meta_range {
    struct rs_range r;     /* clusters [r.start, r.end) */
    const char *what;      /* qemu's class name ("active L1 table", ...) */
    /* a reference the check did not count because it lies past EOF: its bytes
     * [ref_off, ref_end) (ref_end 0: not such a reference) */
    uint64_t ref_off, ref_end;
    bool counted;          /* the rebuild has added it to the IMRT */
};

struct metamap {
    struct rangeset rs;    /* of struct meta_range, sorted by start once built */
};

static inline struct meta_range *metamap_at(const struct metamap *m, size_t i)
{
    return rangeset_at(&m->rs, i);
}

/* Collect every live metadata range of s as it is now (header, active L1 and L2 tables,
 * reftable and refblocks, snapshot table, snapshot L1 and L2 tables, bitmap directory
 * and tables, crypto header), and every reference the check found past EOF (its
 * s->past_eof, not the capped findings list). Ranges are clamped to qemu's size limits. 0 or -errno. */
int metamap_build(struct metamap *m, struct qc2 *s);
void metamap_free(struct metamap *m);

/* If cluster k lies in a range: the first cluster after the ranges covering it
 * (> k); else k. */
uint64_t metamap_skip(const struct metamap *m, uint64_t k);

/* The class name of a range that [first, end) overlaps, or NULL. */
const char *metamap_overlap(const struct metamap *m, uint64_t first, uint64_t end);

/* The class of live metadata other than the header and the refcount structures that lies
 * in cluster 0 (the header's cluster), or NULL. m must be built (sorted). */
const char *metamap_shares_header(const struct metamap *m);

#endif
