/* qimg check: option parsing as qemu-img's img_check, then the format's checker, then
 * qemu-img's report and exit code (digest §4). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/image.h"
#include "checker/blk_check.h"
#include "checker/check.h"
#include "checker/qcow2_check.h"
#include "checker/render.h"
#include "cmd/commands.h"
#include "format/probe.h"
#include "io/lock.h"
#include "io/qio.h"
#include "repair/repair.h"
#include "util/err.h"
#include "util/json.h"

enum { OPT_OUTPUT = 256, OPT_OBJECT, OPT_IMAGE_OPTS, OPT_DEEP, OPT_FINDINGS_CAP, OPT_DRY_RUN,
       OPT_JOURNAL };

static void sink_stderr(void *opaque, const struct finding *f)
{
    const struct check_run *run = opaque;
    char buf[1024];
    finding_format(f, &run->names, buf, sizeof(buf));
    if (buf[0])
        fputs(buf, stderr);
}

static bool valid_cache(const char *c)
{
    static const char *const modes[] = { "none", "off", "writeback", "writethrough",
                                         "directsync", "unsafe" };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (!strcmp(c, modes[i]))
            return true;
    return false;
}

static void help(void)
{
    printf("usage: %s check [--object OBJ] [--image-opts] [-q] [-f FMT] [--output=human|json]"
           " [-r leaks|all] [-T SRC_CACHE] [-U] [--deep] FILENAME\n", qimg_progname);
}

static int check_report(struct check_run *run, int rc, const char *filename, bool json,
                        bool quiet);

/* Formats checked through the block layer (QED, VDI): open as qemu-img check does (backing
 * chain too, read-write under -r), run a pass with the fix mode and, if it fixed anything,
 * a second pass without, reporting the second with the first's *_fixed counts. */
static int check_blk(const char *filename, const char *fmt, int fix, bool json, bool quiet,
                     const struct check_opts *o)
{
    image_t *img;
    char *msg = NULL;
    int flags = (fix ? IMG_OPEN_RDWR : 0) | (o->share ? IMG_OPEN_SHARE : 0);
    if (image_open(filename, fmt, flags, &img, &msg) < 0) {
        err_report("%s", msg);
        free(msg);
        return 1;
    }
    int (*pass)(image_t *, unsigned, struct check_run *) =
        !strcmp(fmt, "qed") ? qed_check_pass : vdi_check_pass;
    struct check_run run;
    memset(&run, 0, sizeof(run));
    run.format = img->format;
    run.opened = true;
    findings_init(&run.findings, o->findings_cap ? o->findings_cap : 100000);
    run.findings.sink = sink_stderr;
    run.findings.sink_opaque = &run;
    int rc = pass(img, (unsigned)fix, &run);
    if (rc == -ENOTSUP) {
        err_report("This image format does not support checks");
        check_run_free(&run);
        image_close(img);
        return 63;
    }
    if (rc == 0 && (run.res.corruptions_fixed || run.res.leaks_fixed)) {
        int64_t cf = run.res.corruptions_fixed, lf = run.res.leaks_fixed;
        if (!json && !quiet)
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %lld leaked clusters\n    %lld corruptions\n\n"
                   "Double checking the fixed image now...\n", (long long)lf, (long long)cf);
        check_run_free(&run);
        memset(&run.res, 0, sizeof(run.res));
        findings_init(&run.findings, o->findings_cap ? o->findings_cap : 100000);
        run.findings.sink = sink_stderr;
        run.findings.sink_opaque = &run;
        rc = pass(img, 0, &run);
        run.res.corruptions_fixed = cf;
        run.res.leaks_fixed = lf;
    }
    image_close(img);
    return check_report(&run, rc, filename, json, quiet);
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, 0, 'h' },
        { "format", required_argument, 0, 'f' },
        { "repair", required_argument, 0, 'r' },
        { "output", required_argument, 0, OPT_OUTPUT },
        { "object", required_argument, 0, OPT_OBJECT },
        { "image-opts", no_argument, 0, OPT_IMAGE_OPTS },
        { "force-share", no_argument, 0, 'U' },
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
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hf:r:T:qU", longopts, NULL)) != -1) {
        switch (c) {
        case ':':
            err_usage("missing argument for option '%s'", argv[optind - 1]);
        case '?':
            err_usage("unrecognized option '%s'", argv[optind - 1]);
        case 'h':
            help();
            return 0;
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
    if (optind != argc - 1)
        err_usage("Expecting one image file name");
    const char *filename = argv[optind];
    if (output && !strcmp(output, "json")) {
        json = true;
    } else if (output && strcmp(output, "human")) {
        err_report("--output must be used with human or json as argument.");
        return 1;
    }
    if (cache && !valid_cache(cache)) {
        err_report("Invalid source cache option: %s", cache);
        return 1;
    }
    if ((dry_run || journal) && !fix) {
        err_report("--dry-run and --journal only make sense with -r leaks|all");
        return 1;
    }
    if (fix && o.share && !dry_run) {
        /* qemu would take no lock and repair an image another process may be writing */
        err_report("-U (force-share) cannot be used with -r: a repair must not run while "
                   "another process may use the image");
        return 1;
    }
    qio_t *q;
    int rc = qio_open_file(filename, QIO_RDONLY | (o.share ? QIO_SHARE : 0), &q);
    if (rc < 0) {
        err_report("Could not open '%s': Could not open '%s': %s", filename, filename,
                   strerror(-rc));
        return 1;
    }
    bool fmt_given = fmt != NULL;
    if (!fmt) {
        uint8_t buf[PROBE_BUF_SIZE];
        uint64_t size = 0;
        qio_size(q, &size);
        size_t n = size < sizeof(buf) ? (size_t)size : sizeof(buf);
        if (qio_pread(q, buf, n, 0) < 0)
            n = 0;
        fmt = probe_format(buf, n);
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
        if (!strcmp(fmt, "qed") || !strcmp(fmt, "vdi"))
            return check_blk(filename, fmt, fix, json, quiet, &o);
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
    memset(&run, 0, sizeof(run));
    findings_init(&run.findings, o.findings_cap ? o.findings_cap : 100000);
    run.findings.sink = sink_stderr;
    run.findings.sink_opaque = &run;
    rc = qcow2_check_run(q, filename, &o, &run);
    qio_close(q);
    if (!run.opened) {
        check_run_free(&run);
        return 1;
    }
    return check_report(&run, rc, filename, json, quiet);
}

/* qemu-img's report and exit code for a finished run (digest §4 steps 4-6); frees run. */
static int check_report(struct check_run *run, int rc, const char *filename, bool json,
                        bool quiet)
{
    int ret;
    if (rc == 0) {
        if (json) {
            if (!quiet) {
                json_t *j = check_to_json(filename, run->format, &run->res, &run->findings,
                                          &run->names);
                json_print(stdout, j);
                fputc('\n', stdout);
                json_free(j);
            }
        } else if (!quiet) {
            check_print_human(stdout, &run->res);
        }
    }
    fflush(stdout);
    if (rc < 0 || run->res.check_errors) {
        if (rc < 0)
            err_report("Check failed: %s", strerror(-rc));
        else
            err_report("Check failed");
        ret = 1;
    } else if (run->res.corruptions) {
        ret = 2;
    } else if (run->res.leaks) {
        ret = 3;
    } else {
        ret = 0;
    }
    check_run_free(run);
    return ret;
}
