/* The repair of a dirty image at a read-write open (see qcow2/dirty_repair.h): `check -r all`'s
 * engine without its report. */
#include "qcow2/dirty_repair.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_header.h"
#include "checker/render.h"
#include "repair/apply.h"
#include "repair/incompat.h"
#include "repair/repair.h"

int repair_dirty_on_open(qio_t *q, const char *filename, bool *consistent)
{
    /* the caller holds the image's, data file's and backing chain's locks: the check's
     * own opens of them share (qemu's check runs inside the open node) */
    struct check_opts o = { .share = true, .no_open_warnings = true,
                            .fix = CHECK_FIX_LEAKS | CHECK_FIX_ERRORS };
    uint8_t hb[QCOW2_HDR_V3_LEN];
    *consistent = false;
    memset(hb, 0, sizeof(hb));
    int rc = qio_pread(q, hb, sizeof(hb), 0);
    if (rc < 0)
        return rc;
    uint32_t version = be32_get(hb + QCOW2_OFF_VERSION), cb = be32_get(hb + QCOW2_OFF_CLUSTER_BITS);
    uint64_t orig = be64_get(hb + QCOW2_OFF_INCOMPAT);
    if (version < 3 || cb < QCOW2_MIN_CLUSTER_BITS || cb > QCOW2_MAX_CLUSTER_BITS)
        return -EINVAL; /* only a v3 image has a dirty bit; the open validated it */

    struct plan plan;
    plan_init(&plan, q);
    struct repair_ctx ctx = { .plan = &plan };
    qio_t *ov = plan_overlay_qio(&plan);
    struct check_run run, after;
    check_run_start(&run, &o, true); /* qemu's check prints its findings on this path */
    rc = repair_first_pass(ov, filename, &o, o.fix, &ctx, &run);
    qio_close(ov);
    if (rc == 0 && !run.opened)
        rc = -EINVAL;
    if (rc == 0 && run.res.check_errors)
        rc = -EIO; /* qemu fails the open so, whatever its check fixed */
    if (rc == 0 && overlap_verify_plan(&ctx.guard, &plan, 1ull << cb) < 0)
        rc = -EIO;
    if (rc == 0 && plan.n) {
        /* no corrupt-bit guard here (unlike `check -r`): the dirty bit stays set until the
         * repair is done, so after a crash the next read-write open repairs again, as
         * qemu's does; a corrupt bit would instead lock qemu out of the image */
        const struct plan_entry *failed;
        rc = repair_apply(q, &plan, NULL, &failed);
        if (rc < 0)
            repair_incompat_restore(q, NULL, version, orig);
    }
    if (rc == 0) {
        /* qemu clears the dirty bit when its fixing pass leaves no corruption; qimg judges
         * the image as it is now, as `check -r` does */
        struct check_opts co = o;
        co.fix = 0;
        co.quiet_diag = true;
        check_run_start(&after, &co, false);
        int arc = qcow2_check_run(q, filename, &co, &after);
        *consistent = arc == 0 && after.opened && !after.res.corruptions &&
                      !after.res.check_errors;
        check_run_free(&after);
        uint64_t want = *consistent
                            ? orig & ~(QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DIRTY)
                            : orig;
        rc = repair_incompat_settle(q, NULL, version, want);
        if (rc < 0)
            *consistent = false;
    }
    check_run_free(&run);
    overlap_guard_free(&ctx.guard);
    plan_free(&plan);
    return rc;
}
