/* `qimg check -r leaks|all` for qcow2: open and lock, create the journal, run the repair
 * in place (repair/inplace.h: plan on an overlay, apply with the crash guard, journal and
 * double check) and print: the dry run's plan, qemu-img's lines and report. Output and
 * exit codes are qemu-img's (digest §4). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checker/render.h"
#include "cmd/check_repair.h"
#include "cmd/check_run.h"
#include "format/qcow2_header.h"
#include "io/lock.h"
#include "repair/incompat.h"
#include "repair/inplace.h"
#include "util/err.h"
#include "util/json.h"

/* The plain (non-fixing) check of what q holds now; diagnostics printed if print. */
static int plain_check(qio_t *q, const char *filename, const struct check_opts *o, bool print,
                       struct check_run *run)
{
    check_run_start(run, o, print);
    return qcow2_check_run(q, filename, o, run);
}

static int dry_run(qio_t *q, struct plan *p, struct check_run *run, const char *filename,
                   const struct repair_opts *o, uint32_t version, uint64_t orig)
{
    /* the double check as it would run after the repair, on the overlay */
    qio_t *ov = plan_overlay_qio(p);
    struct check_run after;
    int arc = plain_check(ov, filename, &o->check, false, &after);
    qio_close(ov);
    uint64_t fin = repair_incompat_final(orig, arc, &after.res);
    uint64_t cur = repair_incompat_guard(p, version, orig);
    repair_incompat_plan(p, version, cur, fin);
    if (!o->json && !o->quiet) {
        plan_print(p, stdout);
        if (run->res.corruptions_fixed || run->res.leaks_fixed)
            printf("\nThe following inconsistencies would be repaired:\n\n"
                   "    %" PRId64 " leaked clusters\n    %" PRId64 " corruptions\n\n",
                   run->res.leaks_fixed, run->res.corruptions_fixed);
        printf("After the repair, check would report:\n");
        check_print_human(stdout, &after.res);
        printf("\nThe image as it is now:\n");
    }
    check_run_free(&after);
    /* report and exit code: the image as it is (nothing was changed) */
    struct check_run now;
    int rc = plain_check(q, filename, &o->check, false, &now);
    int ret = check_run_report(&now, rc, filename, o->json, o->quiet, plan_add_json, p);
    check_run_free(&now);
    return ret;
}

/* qemu-img's message for a repair write that failed, by what the write was (qemu's
 * rebuild_refcount_structure, check_refblocks, fix_l2_entry_by_zero, check_oflag_copied);
 * qemu's check then fails: "Check failed: <error>", exit 1, no report. */
static void report_write_error(const struct plan_entry *e, int rc)
{
    const char *err = strerror(-rc);
    switch (e ? (int)e->cls : -1) {
    case -1:
        break;   /* journal (message printed) or flush */
    case PC_REBUILD:
        err_report("ERROR writing %s: %s",
                   strncmp(e->reason, "new refcount table", 18) ? "refblock" : "reftable", err);
        break;
    case PC_REBUILD_HDR:
        err_report("ERROR setting reftable: %s", err);
        break;
    case PC_GROW:
        err_plain("ERROR could not resize image: %s\n", err);
        break;
    case PC_L2_ZERO:
        err_plain("ERROR: Failed to overwrite L2 table entry: %s\n", err);
        break;
    default:
        if (e->cls == PC_COPIED && !strncmp(e->reason, "OFLAG_COPIED of L2", 18))
            err_plain("ERROR: Could not write L2 table: %s\n", err);
        else   /* qimg's own writes, and those qemu fails without a message of its own */
            err_report("ERROR writing the repair to the image: %s", err);
        break;
    }
    err_report("Check failed: %s", err);
}

/* The engine's hooks: qemu-img's lines between its steps. */
static void on_write_failed(const struct plan_entry *failed, int rc, void *arg)
{
    (void)arg;
    report_write_error(failed, rc);
}

static void on_repaired(const struct check_result *first, void *arg)
{
    const struct repair_opts *o = arg;
    if (!o->json && !o->quiet)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRId64 " leaked clusters\n    %" PRId64 " corruptions\n\n"
               "Double checking the fixed image now...\n",
               first->leaks_fixed, first->corruptions_fixed);
    fflush(stdout);
}

int check_repair_qcow2(const char *filename, const struct repair_opts *o)
{
    qio_t *q;
    int rc = qio_open_file(filename, o->dry_run ? QIO_RDONLY : QIO_RDWR, &q);
    if (rc < 0) {
        err_report("Could not open '%s': Could not open '%s': %s", filename, filename,
                   strerror(-rc));
        return 1;
    }
    const char *perm;
    if (!o->dry_run && (rc = qio_lock_for_repair(q, &perm)) < 0) {
        if (rc == -EBUSY)
            err_report("Could not open '%s': Failed to get \"%s\" lock\n"
                       "Is another process using the image [%s]?", filename, perm, filename);
        else
            err_report("Could not open '%s': %s", filename, strerror(-rc));
        qio_close(q);
        return 1;
    }
    /* the journal first: a refused journal stops the repair before any line is printed */
    journal_t *j = NULL;
    if (o->journal && !o->dry_run && journal_create(o->journal, filename, q, &j) < 0) {
        qio_close(q);
        return 1;
    }
    struct check_opts co = o->check;
    co.no_open_warnings = true;
    struct repair_inplace_opts ro = {
        .check = &o->check, .recheck = &co, .recheck_print = true, .fix = o->fix, .j = j,
        .dry_run = o->dry_run, .crash_guard = true,
        .write_failed = on_write_failed, .repaired = on_repaired, .arg = (void *)o,
    };
    struct repair_inplace r;
    repair_inplace(q, filename, &ro, &r);
    int ret = 1;
    switch (r.stage) {
    case RIP_NOT_OPENED:      /* nothing is applied when the fixing pass fails (README) */
    case RIP_VERIFY_FAILED:
    case RIP_CHECK_ERRORS:    /* (not asked for here) */
        break;
    case RIP_PASS_FAILED:
        ret = check_run_report(&r.run, r.rc, filename, o->json, o->quiet, NULL, NULL);
        break;
    case RIP_PLANNED:
        ret = dry_run(q, &r.plan, &r.run, filename, o, r.version, r.orig);
        break;
    case RIP_WRITE_FAILED:
        if (r.restore_rc < 0)
            err_report("Could not restore the header of '%s' (the corrupt bit stays set): %s",
                       filename, strerror(-r.restore_rc));
        break;
    case RIP_DONE:
        if (r.rc < 0)
            err_report("Could not update the header of '%s': %s", filename, strerror(-r.rc));
        ret = check_run_report(repair_inplace_final(&r), r.final_rc, filename, o->json,
                               o->quiet, NULL, NULL);
        break;
    }
    journal_close(r.j);
    repair_inplace_free(&r);
    qio_close(q);
    return ret;
}
