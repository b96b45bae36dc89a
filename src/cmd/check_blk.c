/* Formats checked through the block layer (QED, VDI): open as qemu-img check does (backing
 * chain too, read-write under -r unless a dry run), one pass with the fix mode and, if it
 * fixed anything, a second without, reported with the first's *_fixed counts. QED's fixes
 * are written through the write port (io/wport.h): planned for --dry-run, journaled for
 * --journal (undone by `qimg undo`), else direct. */
#include "cmd/check_blk.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "block/image.h"
#include "checker/blk_check.h"
#include "checker/render.h"
#include "io/wport.h"
#include "cmd/check_run.h"
#include "journal/journal.h"
#include "journal/plan.h"
#include "util/err.h"

/* One pass of a block-layer checker on a fresh run; QED's fixes go through w. */
static int blk_pass(image_t *img, unsigned fix, const struct check_opts *o,
                    struct check_run *run, struct wport *w)
{
    check_run_start(run, o, true);
    run->format = img->format;
    run->opened = true;
    return !strcmp(img->format, "qed") ? qed_check_pass_port(img, fix, run, w)
                                       : vdi_check_pass(img, fix, run);
}

/* QED --dry-run: the plan, the check as it would report after the repair (on the plan's
 * overlay) and the report of the image as it is, as for qcow2 (repair/qcow2_repair.c). */
static int blk_dry_run(image_t *img, struct plan *p, struct check_run *run,
                       const char *filename, bool json, bool quiet, const struct check_opts *o)
{
    qio_t *real = img->file, *ov = plan_overlay_qio(p);
    struct check_run after, now;
    img->file = ov;   /* the pass reads the L1 it fixed from memory, the rest from here */
    blk_pass(img, 0, o, &after, NULL);
    img->file = real;
    qio_close(ov);
    if (!json && !quiet) {
        plan_print(p, stdout);
        if (run->res.corruptions_fixed || run->res.leaks_fixed)
            printf("\nThe following inconsistencies would be repaired:\n\n"
                   "    %lld leaked clusters\n    %lld corruptions\n\n",
                   (long long)run->res.leaks_fixed, (long long)run->res.corruptions_fixed);
        printf("After the repair, check would report:\n");
        check_print_human(stdout, &after.res);
        printf("\nThe image as it is now:\n");
    }
    check_run_free(&after);
    /* the image as it is: opened afresh (the fixing pass changed the driver's tables) */
    image_t *cur = image_open_or_report(filename, img->format, img->flags);
    if (!cur)
        return 1;
    int rc = blk_pass(cur, 0, o, &now, NULL);
    image_close(cur);
    int ret = check_run_report(&now, rc, filename, json, quiet, plan_add_json, p);
    check_run_free(&now);
    return ret;
}

int check_blk(const char *filename, const char *fmt, int fix, bool json, bool quiet,
              const struct check_opts *o, bool dry_run, const char *journal)
{
    int flags = (fix && !dry_run ? IMG_OPEN_RDWR : 0) | (o->share ? IMG_OPEN_SHARE : 0) |
                IMG_OPEN_CHECK;
    /* the journal first: a refused journal stops the repair before anything is printed
     * or written (a read-write QED open clears NEED_CHECK when it closes) */
    journal_t *j = NULL;
    qio_t *jq;
    if (journal && qio_open_file(filename, QIO_RDONLY, &jq) == 0) {
        int jrc = journal_create(journal, filename, jq, &j);
        qio_close(jq);
        if (jrc < 0)
            return 1;
    }
    image_t *img = image_open_or_report(filename, fmt, flags);
    if (!img) {
        journal_discard(j);
        return 1;
    }
    struct plan plan;
    struct wport w = { 0 };
    plan_init(&plan, img->file);
    int rc = 0;
    if (dry_run)
        wport_init_plan(&w, &plan);
    else if (fix)
        rc = j ? wport_init_journal(&w, img->file, j) : wport_init_direct(&w, img->file);
    struct check_run run;
    if (rc == 0)
        rc = blk_pass(img, (unsigned)fix, o, &run, &w);
    else
        check_run_start(&run, o, true);
    if (rc == -ENOTSUP) {
        err_report("This image format does not support checks");
        check_run_free(&run);
        journal_discard(j);
        plan_free(&plan);
        image_close(img);
        return 63;
    }
    if (dry_run && rc == 0) {
        int ret = blk_dry_run(img, &plan, &run, filename, json, quiet, o);
        check_run_free(&run);
        plan_free(&plan);
        image_close(img);
        return ret;
    }
    bool complete = rc == 0;
    if (rc == 0 && (run.res.corruptions_fixed || run.res.leaks_fixed)) {
        int64_t cf = run.res.corruptions_fixed, lf = run.res.leaks_fixed;
        if (!json && !quiet)
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %lld leaked clusters\n    %lld corruptions\n\n"
                   "Double checking the fixed image now...\n", (long long)lf, (long long)cf);
        check_run_free(&run);
        rc = blk_pass(img, 0, o, &run, NULL);
        run.res.corruptions_fixed = cf;
        run.res.leaks_fixed = lf;
    }
    if (w.q && !strcmp(img->format, "qed"))
        qed_check_close_clean(img, &w);
    if (j) {
        journal_finish(j, img->file, complete);
        journal_close(j);
    }
    plan_free(&plan);
    image_close(img);
    int ret = check_run_report(&run, rc, filename, json, quiet, NULL, NULL);
    check_run_free(&run);
    return ret;
}

