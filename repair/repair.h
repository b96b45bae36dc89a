/* The repair engine behind `check -r leaks|all` for qcow2 (digest §3, §4); the command
 * (src/cmd/check_repair.c) opens and locks the image, drives these steps and prints.
 *
 * 1. Plan: the first pass (repair_first_pass) runs the checker's passes with qemu's fix
 *    mode on an overlay of the image (journal/plan.h); every fix qemu would write is
 *    recorded as a plan entry instead, so the passes read back their own fixes exactly as
 *    qemu's in-place repair does, and nothing touches the file.
 * 2. Dry run: print the plan, write nothing.
 * 3. Apply (repair/apply.c): set the corrupt bit first (repair/incompat.h), journal each
 *    write before making it (journal/journal.h), flush between dependent steps, then run
 *    the double check on the real file, and clear the corrupt/dirty bits only if it
 *    passes. */
#ifndef QIMG_REPAIR_REPAIR_H
#define QIMG_REPAIR_REPAIR_H

#include <stdbool.h>

#include "checker/check.h"
#include "checker/qcow2_check.h"
#include "io/wport.h"
#include "journal/plan.h"
#include "repair/data_guard.h"

struct repair_ctx {
    struct plan *plan;
    struct qcow2_port port;       /* the model's port: the plan backend on plan */
    struct overlap_guard guard;   /* repair's part of the guard (data_guard.h) */
};

static inline struct plan *rp_plan(struct qc2 *s)
{
    return ((struct repair_ctx *)s->fixer_ctx)->plan;
}

extern const struct qc2_fixer repair_fixer;

/* First (fixing) pass over the overlay: qemu's qcow2_co_check_locked with fix. */
int repair_first_pass(qio_t *overlay, const char *filename, const struct check_opts *o,
                      unsigned fix, struct repair_ctx *ctx, struct check_run *run);

/* §3.1 under -r all (repair/snapshots.c), and the table rewrite of §3 step 3. */
int repair_snapshot_pass(struct qc2 *s, struct check_result *r);
int repair_snapshot_rewrite(struct qc2 *s);

/* §3.8 (repair/rebuild.c): new refblocks and reftable from the IMRT. */
int repair_rebuild(struct qc2 *s);

/* A fix: the model's guarded metadata write (qcow2_meta_pwrite, ign as qemu's) through
 * the port, labelled cls and reason (printf-style) for the plan. 0 or -errno. */
int repair_write(struct qc2 *s, unsigned ign, enum plan_class cls, uint64_t off,
                 const void *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* Write refcount of cluster k through the plan (and the refblock cache). */
int repair_set_refcount(struct qc2 *s, uint64_t k, uint64_t value, enum plan_class cls,
                        const char *why);
/* Refcounts of clusters [first, first + n): set to value (dec false) or each decremented
 * by one (dec true; a zero refcount stops it with -EINVAL before its refblock is touched).
 * One write per refblock: a run of a million clusters (a huge old snapshot table freed)
 * costs a write per block, not per cluster. */
int repair_refcount_run(struct qc2 *s, uint64_t first, uint64_t n, bool dec, uint64_t value,
                        enum plan_class cls, const char *why);
/* Forget cached refblocks (after a write the cache does not see). */
void repair_drop_rb_cache(struct qc2 *s);

#endif
