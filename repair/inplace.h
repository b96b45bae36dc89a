/* Repair in place: the one sequence behind `check -r leaks|all` (src/cmd/check_repair.c)
 * and the repair of a dirty image at a read-write open (repair/dirty_open.c):
 *
 *   1. plan: the fixing pass on an overlay of q (repair_first_pass), nothing written;
 *   2. verify: every planned write checked once more against guest data (overlap guard);
 *   3. apply: the crash guard first (optional), each write journaled before it is made
 *      (when a journal is given), a flush between dependent steps; a failed write puts the
 *      incompatible-features field back;
 *   4. double check the file as it is now, then settle the incompatible features: corrupt
 *      and dirty cleared iff the image is consistent (repair_incompat_final).
 *
 * It prints nothing of its own: the passes print their findings as the caller's check
 * options and flags say, and the caller's hooks print at the two points where qemu-img
 * prints between steps. The caller opens and locks q, creates the journal, reads the
 * outcome and prints its report. */
#ifndef QIMG_REPAIR_INPLACE_H
#define QIMG_REPAIR_INPLACE_H

#include <stdbool.h>
#include <stdint.h>

#include "checker/check.h"
#include "io/qio.h"
#include "journal/journal.h"
#include "journal/plan.h"
#include "repair/repair.h"

struct repair_inplace_opts {
    const struct check_opts *check;   /* the fixing pass (its findings are printed) */
    const struct check_opts *recheck; /* the double check */
    bool recheck_print;               /* the double check prints its findings */
    bool recheck_always;              /* double check even when nothing was fixed (else
                                       * the fixing pass's result stands) */
    unsigned fix;                     /* CHECK_FIX_* */
    journal_t *j;                     /* every write journaled first, or NULL */
    bool dry_run;                     /* stop once the plan is made and verified */
    bool crash_guard;                 /* check -r: the corrupt bit is the plan's first write,
                                       * and a fix refused by the overlap guard marks the
                                       * image corrupt (qemu's qcow2_signal_corruption) */
    bool stop_on_check_errors;        /* a fixing pass with check errors writes nothing
                                       * (qemu's open of a dirty image fails then) */
    /* a write failed (failed: the entry, NULL when the journal or a flush failed), before
     * the header is put back */
    void (*write_failed)(const struct plan_entry *failed, int rc, void *arg);
    /* the fixes are written and something was fixed, before the double check */
    void (*repaired)(const struct check_result *first, void *arg);
    void *arg;
};

enum repair_inplace_stage {
    RIP_DONE,           /* written (or nothing to write), double checked, settled */
    RIP_NOT_OPENED,     /* the fixing pass could not open the image; nothing written */
    RIP_PASS_FAILED,    /* the fixing pass failed (rc); nothing written but, with the crash
                         * guard, the corrupt bit when the overlap guard refused a fix */
    RIP_CHECK_ERRORS,   /* stop_on_check_errors and the fixing pass had check errors */
    RIP_VERIFY_FAILED,  /* a planned write would touch guest data; nothing written */
    RIP_PLANNED,        /* dry run: plan made and verified, nothing written */
    RIP_WRITE_FAILED,   /* a write failed (rc); the header put back (restore_rc) */
};

struct repair_inplace {
    enum repair_inplace_stage stage;
    int rc;                       /* -errno of the failing step (RIP_DONE: of the settle) */
    journal_t *j;                 /* the journal, NULL once discarded (nothing kept) */
    struct plan plan;
    struct repair_ctx ctx;        /* the plan's context: ctx.guard.refused */
    struct check_run run;         /* the fixing pass */
    struct check_run second;      /* the double check, when has_second */
    bool has_second;
    int final_rc;                 /* RIP_DONE: the double check's rc (0 without one) */
    bool consistent;              /* RIP_DONE: corrupt/dirty cleared (settle succeeded) */
    uint32_t version, cluster_bits;
    uint64_t orig;                /* incompatible features before the repair */
    int restore_rc;               /* RIP_WRITE_FAILED: the header's put-back */
};

/* Runs the steps on q (open read-write and locked unless o->dry_run) and fills r, which
 * repair_inplace_free releases. r->j is o->j, or NULL when the journal was discarded
 * because nothing was written (the caller closes r->j). */
void repair_inplace(qio_t *q, const char *filename, const struct repair_inplace_opts *o,
                    struct repair_inplace *r);
/* The check that decides the report: the double check when there was one, else the
 * fixing pass. */
static inline const struct check_run *repair_inplace_final(const struct repair_inplace *r)
{
    return r->has_second ? &r->second : &r->run;
}
void repair_inplace_free(struct repair_inplace *r);

#endif
