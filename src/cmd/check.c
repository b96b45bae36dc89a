/* qimg check: option parsing as qemu-img's img_check, then the format's checker, then
 * qemu-img's report and exit code (digest §4). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/image.h"
#include "block/luks.h"
#include "checker/blk_check.h"
#include "checker/check.h"
#include "checker/qcow2_check.h"
#include "checker/render.h"
#include "cmd/commands.h"
#include "format/probe.h"
#include "io/lock.h"
#include "io/qio.h"
#include "io/wport.h"
#include "repair/journal.h"
#include "repair/plan.h"
#include "repair/repair.h"
#include "repair/check_cli.h"
#include "util/cache.h"
#include "util/err.h"
#include "util/opts.h"

enum { OPT_DEEP = OPT_CMD, OPT_FINDINGS_CAP, OPT_DRY_RUN, OPT_JOURNAL };

static void help(void)
{
    printf("usage: %s check [--object OBJ] [--image-opts] [-q] [-f FMT] [--output=human|json]"
           " [-r leaks|all] [-T SRC_CACHE] [-U] [--deep] FILENAME\n", qimg_progname);
}

/* qemu-img's report and exit code for a finished run (digest §4 steps 4-6); frees run. */
static int check_report(struct check_run *run, int rc, const char *filename, bool json,
                        bool quiet)
{
    int ret = check_run_report(run, rc, filename, json, quiet, NULL, NULL);
    check_run_free(run);
    return ret;
}

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

/* Formats checked through the block layer (QED, VDI): open as qemu-img check does (backing
 * chain too, read-write under -r), run a pass with the fix mode and, if it fixed anything,
 * a second pass without, reporting the second with the first's *_fixed counts. QED's
 * fixes go through the write port: planned (--dry-run), journaled (--journal) or direct. */
static int check_blk(const char *filename, const char *fmt, int fix, bool json, bool quiet,
                     const struct check_opts *o, bool dry_run, const char *journal)
{
    int flags = (fix && !dry_run ? IMG_OPEN_RDWR : 0) | (o->share ? IMG_OPEN_SHARE : 0);
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
    return check_report(&run, rc, filename, json, quiet);
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        OPTS_LONG_COMMON,
        OPTS_LONG_FORMAT_OUTPUT,
        { "repair", required_argument, 0, 'r' },
        { "deep", no_argument, 0, OPT_DEEP },
        { "findings-cap", required_argument, 0, OPT_FINDINGS_CAP },
        { "dry-run", no_argument, 0, OPT_DRY_RUN },
        { "journal", required_argument, 0, OPT_JOURNAL },
        { 0, 0, 0, 0 },
    };
    const char *fmt = NULL, *output = NULL, *cache = NULL, *journal = NULL;
    bool dry_run = false;
    struct check_opts o;
    memset(&o, 0, sizeof(o));
    bool quiet = false, json = false;
    int fix = 0;
    int c;
    opts_start();
    while ((c = opts_next(argc, argv, ":hf:r:T:qU", longopts, help)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'r':
            if (!strcmp(optarg, "leaks"))
                fix = CHECK_FIX_LEAKS;
            else if (!strcmp(optarg, "all"))
                fix = CHECK_FIX_LEAKS | CHECK_FIX_ERRORS;
            else
                err_usage("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            break;
        case 'T': cache = optarg; break;
        case 'q': quiet = true; break;
        case 'U': o.share = true; break;
        case OPT_OUTPUT: output = optarg; break;
        case OPT_OBJECT: break;        /* accepted for compatibility; no secrets needed */
        case OPT_IMAGE_OPTS: break;
        case OPT_DEEP: o.deep = true; break;
        case OPT_FINDINGS_CAP: o.findings_cap = strtoul(optarg, NULL, 10); break;
        case OPT_DRY_RUN: dry_run = true; break;
        case OPT_JOURNAL: journal = optarg; break;
        }
    }
    const char *filename = opts_one_file(argc, argv);
    if (opts_output_json(output, &json) < 0)
        return 1;
    if (cache && !cache_mode_valid(cache)) {
        err_report("Invalid source cache option: %s", cache);
        return 1;
    }
    if ((dry_run || journal) && !fix) {
        err_report("--dry-run and --journal only make sense with -r leaks|all");
        return 1;
    }
    if (dry_run && journal) {
        /* a dry run writes nothing, so there is nothing to journal or undo */
        err_report("--journal cannot be used with --dry-run: a dry run writes nothing to "
                   "journal");
        return 1;
    }
    if (fix && o.share && !dry_run) {
        /* qemu would take no lock and repair an image another process may be writing */
        err_report("-U (force-share) cannot be used with -r: a repair must not run while "
                   "another process may use the image");
        return 1;
    }
    /* qemu-img check -r opens the image read-write from the start: a directory then fails
     * in open(2) itself ("Is a directory"), a FIFO or /proc file as in a read-only open */
    qio_t *q;
    char *msg = NULL;
    o.rdwr = fix && !dry_run;
    int mode = o.rdwr ? QIO_RDWR : QIO_RDONLY;
    int rc = qio_open_image(filename, mode | (o.share ? QIO_SHARE : 0), &q, &msg);
    if (rc < 0) {
        err_report("Could not open '%s': %s", filename, msg);
        free(msg);
        return 1;
    }
    bool fmt_given = fmt != NULL;
    if (!fmt) {
        /* qemu probes a zero-padded 2048-byte read: a header cut short still has its
         * magic (and then fails to open as that format) */
        uint8_t buf[PROBE_BUF_SIZE];
        uint64_t size = 0;
        qio_size(q, &size);
        if (size == 0 || qio_pread(q, buf, sizeof(buf), 0) < 0)
            memset(buf, 0, sizeof(buf));
        fmt = probe_format(buf, sizeof(buf));
    }
    if (strcmp(fmt, "qcow2") != 0) {
        static const char *const known[] = { "raw", "file", "qcow", "luks", "vpc", "dmg",
                                             "cloop", "bochs", "vvfat", "vmdk", "vhdx",
                                             "parallels", "qed", "vdi" };
        bool k = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            k |= !strcmp(fmt, known[i]);
        qio_close(q);
        if (!k) {
            err_report("Could not open '%s': Unknown driver '%s'", filename, fmt);
            return 1;
        }
        if (!strcmp(fmt, "vdi") && (dry_run || journal)) {
            /* VDI has no repair: a dry run or a journal would be ignored */
            err_report("--dry-run and --journal are only supported for qcow2 and qed images");
            return 1;
        }
        if (!strcmp(fmt, "qed") || !strcmp(fmt, "vdi"))
            return check_blk(filename, fmt, fix, json, quiet, &o, dry_run, journal);
        if (!strcmp(fmt, "luks")) {
            /* qemu's open for I/O asks for the key before it reads the header */
            err_report("Could not open '%s': %s", filename, LUKS_NO_KEY_MSG);
            return 1;
        }
        if (!strcmp(fmt, "qcow")) {
            /* qemu opens the image (and its backing chain) before it finds no check; a
             * failed open is exit 1. Opened read-only: nothing is written either way. */
            image_t *img = image_open_or_report(filename, fmt, o.share ? IMG_OPEN_SHARE : 0);
            if (!img)
                return 1;
            image_close(img);
        }
        if (!strcmp(fmt, "vmdk") ||
            !strcmp(fmt, "vhdx") || !strcmp(fmt, "parallels")) {
            err_report("check of %s images is not implemented yet", fmt);
            return 1;
        }
        if (fix && !strcmp(fmt, "raw") && !fmt_given)
            /* qemu's warning for a read-write open of a probed raw image */
            fprintf(stderr, "WARNING: Image format was not specified for '%s' and probing "
                    "guessed raw.\n         Automatically detecting the format is dangerous for "
                    "raw images, write operations on block 0 will be restricted.\n         "
                    "Specify the 'raw' format explicitly to remove the restrictions.\n",
                    filename);
        err_report("This image format does not support checks");
        return 63;
    }

    if (fix) {
        qio_close(q);
        struct repair_opts ro = { (unsigned)fix, dry_run, journal, json, quiet, o };
        return repair_qcow2(filename, &ro);
    }
    char *lockmsg = NULL;
    if (qio_lock_image(q, false, true, o.share, filename, &lockmsg) < 0) {
        err_report("Could not open '%s': %s", filename, lockmsg);
        free(lockmsg);
        qio_close(q);
        return 1;
    }
    struct check_run run;
    check_run_start(&run, &o, true);
    rc = qcow2_check_run(q, filename, &o, &run);
    qio_close(q);
    if (!run.opened) {
        check_run_free(&run);
        return 1;
    }
    return check_report(&run, rc, filename, json, quiet);
}
