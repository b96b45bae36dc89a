/* The first, fixing pass of `check -r` on the plan overlay: qemu's qcow2_co_check_locked
 * (digest §3 top level) and qcow2_check_refcounts (§3.7) with a fix mode. The checker's
 * passes do the detecting and call repair_fixer for each fix. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_header.h"
#include "qcow2/header_write.h"
#include "repair/repair.h"
#include "util/err.h"
#include "util/xalloc.h"

/* A refcount fix refused by the overlap guard: qemu's node is unusable from then on and
 * the check fails (compare_refcounts itself has no way to say so). */
static bool refused(struct qc2 *s)
{
    return ((struct repair_ctx *)s->fixer_ctx)->guard.refused != 0;
}

static int refcount_pass(struct qc2 *s, unsigned fix)
{
    struct check_result *r = s->res;
    int rc = qc2_refcount_setup(s);
    if (rc < 0)
        return rc;
    s->fix = fix;
    rc = qc2_calculate_refcounts(s);
    if (rc < 0)
        return rc;
    struct check_result pre = *r;
    s->fix = 0;                       /* report only: ERROR / Leaked */
    qc2_pass_compare(s);
    if (s->rebuild && (fix & CHECK_FIX_ERRORS)) {
        struct check_result old = *r;
        int64_t fresh_leaks = 0;
        err_plain("Rebuilding refcount structure\n");
        rc = repair_rebuild(s);
        if (rc < 0)
            return rc;
        r->corruptions = r->leaks = 0;
        s->rebuild = false;
        imrt_zero(&s->imrt);
        struct check_result stats = *r;
        rc = qc2_calculate_refcounts(s);
        if (rc < 0)
            return rc;
        /* the recount must not count the statistics twice */
        r->allocated_clusters = stats.allocated_clusters;
        r->fragmented_clusters = stats.fragmented_clusters;
        r->compressed_clusters = stats.compressed_clusters;
        if (fix & CHECK_FIX_LEAKS) {
            /* the old structures are leaks now: free them, counting nothing */
            struct check_result saved = *r, scratch;
            memset(&scratch, 0, sizeof(scratch));
            s->res = &scratch;
            s->fix = CHECK_FIX_LEAKS;
            qc2_pass_compare(s);
            if (s->rebuild)
                err_plain("ERROR rebuilt refcount structure is still broken\n");
            fresh_leaks = scratch.leaks;
            s->res = r;
            *r = saved;
            if (refused(s))
                return -EIO;
        }
        if (r->corruptions < old.corruptions)
            r->corruptions_fixed += old.corruptions - r->corruptions;
        if (r->leaks < old.leaks)
            r->leaks_fixed += old.leaks - r->leaks;
        r->leaks += fresh_leaks;
    } else if (fix) {
        if (s->rebuild) {
            err_plain("ERROR need to rebuild refcount structures\n");
            r->check_errors++;
            return -EIO;
        }
        if (r->leaks || r->corruptions) {
            *r = pre;
            s->fix = fix;
            qc2_pass_compare(s);
            if (refused(s))
                return -EIO;
        }
    }
    s->fix = fix;
    rc = qc2_pass_copied(s);
    if (rc < 0)
        return rc;
    r->image_end_offset = (s->highest_cluster + 1) * (int64_t)s->cs;
    return 0;
}

/* qemu's read-write open rewrites the header when it clears unknown autoclear bits or
 * drops an ignored bitmaps extension (qcow2_header_open_update, the block driver's
 * read-write open uses it too). Planned as one write of the bytes that change, the header
 * built as qemu's qcow2_update_header builds it, but with the snapshot table kept: qemu's
 * check mode has not read it at that point and writes nb_snapshots 0 (README). */
static int header_open_update(struct qc2 *s)
{
    uint64_t a = s->h.autoclear_features;
    bool dropped = s->ext.bitmaps_ignored;
    if (!qcow2_header_open_update(&s->m))
        return 0;
    size_t cs = (size_t)s->cs, from, to;
    uint8_t *cur = xmalloc(cs), *now = xmalloc(cs);
    uint64_t boff;
    uint32_t bsize;
    int rc = qcow2_header_build(&s->m, now, cs, &boff, &bsize);
    if (rc == 0)
        rc = qc2_read(s, cur, cs, 0);
    if (rc == 0) {
        qcow2_header_diff(cur, now, cs, s->file_size, &from, &to);
        char what[160] = "";
        if (a != s->h.autoclear_features)
            snprintf(what, sizeof(what), "autoclear features 0x%" PRIx64 " -> 0x%" PRIx64
                     " (unknown bits cleared)%s", a, s->h.autoclear_features,
                     dropped ? ", " : "");
        if (dropped)
            snprintf(what + strlen(what), sizeof(what) - strlen(what),
                     "ignored bitmaps extension dropped");
        if (to > from)
            rc = repair_write(s, QCOW2_OL_ALL, PC_HEADER, from, now + from, to - from,
                              "header: %s, as qemu does on a read-write open", what);
    }
    free(cur);
    free(now);
    return rc;
}

static void add_result(struct check_result *to, const struct check_result *from)
{
    to->corruptions += from->corruptions;
    to->leaks += from->leaks;
    to->check_errors += from->check_errors;
    to->corruptions_fixed += from->corruptions_fixed;
    to->leaks_fixed += from->leaks_fixed;
}

int repair_first_pass(qio_t *overlay, const char *filename, const struct check_opts *o,
                      unsigned fix, struct repair_ctx *ctx, struct check_run *run)
{
    struct qc2 s;
    int rc = qc2_run_open(&s, overlay, filename, o, run);
    if (rc < 0)
        return rc;
    s.fixer = &repair_fixer;
    s.fixer_ctx = ctx;
    /* every fix is a metadata write of the model through its port, here the plan */
    wport_init_plan(&ctx->port.w, ctx->plan);
    qcow2_port_set(&s.m, &ctx->port);
    overlap_guard_attach(&s);
    s.fix = fix;
    rc = header_open_update(&s);
    if (rc < 0)
        goto out;

    struct check_result snap;
    memset(&snap, 0, sizeof(snap));
    s.res = &snap;
    rc = (fix & CHECK_FIX_ERRORS) ? repair_snapshot_pass(&s, &snap)
                                  : qc2_pass_snapshots(&s, &snap);
    if (rc < 0) {
        add_result(&run->res, &snap);
        goto out;
    }
    qc2_keep_snapshot_names(&s, run);
    s.res = &run->res;
    rc = refcount_pass(&s, fix);
    if (rc < 0) {
        add_result(&run->res, &snap);
        goto out;
    }
    if (snap.corruptions > 0 && (fix & CHECK_FIX_ERRORS)) {
        if (repair_snapshot_rewrite(&s) < 0) {
            snap.check_errors++;
        } else {
            snap.corruptions_fixed += snap.corruptions;
            snap.corruptions = 0;
        }
    }
    add_result(&run->res, &snap);
out:
    if (rc >= 0 && ctx->guard.refused)
        rc = -EIO;   /* a refused write fails the check, whichever pass made it */
    run->ret = rc < 0 ? rc : 0;
    if (rc < 0 && ctx->guard.refused)
        overlap_explain(&s);
    qc2_close(&s);
    return run->ret;
}
