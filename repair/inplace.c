/* Repair in place (see inplace.h): plan, verify, apply, double check, settle. */
#include "repair/inplace.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "checker/render.h"
#include "format/qcow2_header.h"
#include "repair/apply.h"
#include "repair/incompat.h"

/* Drop a journal that recorded nothing worth keeping. */
static void discard(struct repair_inplace *r)
{
    journal_discard(r->j);
    r->j = NULL;
}

/* Step 1: the fixing pass on the overlay, and the header fields the later steps need.
 * Returns false when the sequence stops here (r->stage says why). */
static bool plan_step(qio_t *q, const char *filename, const struct repair_inplace_opts *o,
                      struct repair_inplace *r)
{
    qio_t *ov = plan_overlay_qio(&r->plan);
    check_run_start(&r->run, o->check, true);
    int rc = repair_first_pass(ov, filename, o->check, o->fix, &r->ctx, &r->run);
    qio_close(ov);
    if (!r->run.opened) {
        r->stage = RIP_NOT_OPENED;
        r->rc = rc < 0 ? rc : -EINVAL;
        discard(r);
        return false;
    }
    repair_header_peek(q, &r->version, &r->cluster_bits);
    if (repair_incompat_read(q, r->version, &r->orig) < 0)
        r->orig = 0;
    if (rc < 0) {
        r->stage = RIP_PASS_FAILED;
        r->rc = rc;
        /* qemu's refused write marks the image corrupt; qimg writes that bit alone */
        if (o->crash_guard && r->ctx.guard.refused && !o->dry_run && r->version >= 3 &&
            !(r->orig & QCOW2_INCOMPAT_CORRUPT))
            repair_mark_corrupt(q, r->j, r->version, r->orig);
        else
            discard(r);
        return false;
    }
    if (o->stop_on_check_errors && r->run.res.check_errors) {
        r->stage = RIP_CHECK_ERRORS;
        r->rc = -EIO;
        discard(r);
        return false;
    }
    /* every write was checked when planned; nothing in the plan may touch guest data */
    if (r->cluster_bits >= QCOW2_MIN_CLUSTER_BITS && r->cluster_bits <= QCOW2_MAX_CLUSTER_BITS &&
        overlap_verify_plan(&r->ctx.guard, &r->plan, 1ull << r->cluster_bits) < 0) {
        r->stage = RIP_VERIFY_FAILED;
        r->rc = -EIO;
        discard(r);
        return false;
    }
    return true;
}

/* Step 3: the writes. Returns false when one failed. */
static bool apply_step(qio_t *q, const struct repair_inplace_opts *o, struct repair_inplace *r)
{
    if (o->crash_guard)
        repair_incompat_guard(&r->plan, r->version, r->orig);
    if (!r->plan.n)
        return true;
    const struct plan_entry *failed;
    int rc = repair_apply(q, &r->plan, r->j, &failed);
    if (rc == 0)
        return true;
    r->stage = RIP_WRITE_FAILED;
    r->rc = rc;
    if (o->write_failed)
        o->write_failed(failed, rc, o->arg);
    r->restore_rc = repair_incompat_restore(q, r->j, r->version, r->orig);
    if (r->j)
        journal_finish(r->j, q, false);
    return false;
}

void repair_inplace(qio_t *q, const char *filename, const struct repair_inplace_opts *o,
                    struct repair_inplace *r)
{
    memset(r, 0, sizeof(*r));
    r->j = o->j;
    plan_init(&r->plan, q);
    r->ctx.plan = &r->plan;
    if (!plan_step(q, filename, o, r))
        return;
    if (o->dry_run) {
        r->stage = RIP_PLANNED;
        return;
    }
    if (!apply_step(q, o, r))
        return;

    /* Step 4: judge the image as it is now, then settle the header */
    bool fixed = r->run.res.corruptions_fixed || r->run.res.leaks_fixed;
    if (fixed && o->repaired)
        o->repaired(&r->run.res, o->arg);
    if (fixed || o->recheck_always) {
        check_run_start(&r->second, o->recheck, o->recheck_print);
        r->final_rc = qcow2_check_run(q, filename, o->recheck, &r->second);
        r->second.res.corruptions_fixed = r->run.res.corruptions_fixed;
        r->second.res.leaks_fixed = r->run.res.leaks_fixed;
        r->has_second = true;
    }
    const struct check_run *fin = repair_inplace_final(r);
    uint64_t want = repair_incompat_final(r->orig, r->final_rc, &fin->res);
    r->stage = RIP_DONE;
    r->rc = repair_incompat_settle(q, r->j, r->version, want);
    r->consistent = r->rc == 0 && r->final_rc == 0 && fin->opened && !fin->res.corruptions &&
                    !fin->res.check_errors;
    if (r->j && r->rc == 0)
        journal_finish(r->j, q, true);
}

void repair_inplace_free(struct repair_inplace *r)
{
    check_run_free(&r->run);
    if (r->has_second)
        check_run_free(&r->second);
    overlap_guard_free(&r->ctx.guard);
    plan_free(&r->plan);
}
