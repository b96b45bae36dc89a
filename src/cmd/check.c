/* qimg check: option parsing as qemu-img's img_check, then the format's checker, then
 * qemu-img's report and exit code (digest §4); -r of a qcow2 image is check_repair.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/image.h"
#include "block/luks.h"
#include "checker/blk_check.h"
#include "checker/check.h"
#include "checker/qcow2_check.h"
#include "cmd/check_repair.h"
#include "cmd/check_run.h"
#include "cmd/commands.h"
#include "cmd/check_blk.h"
#include "format/probe.h"
#include "io/nbd.h"
#include "io/null.h"
#include "io/lock.h"
#include "io/qio.h"
#include "util/cache.h"
#include "util/err.h"
#include "util/secrets.h"
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

/* The image as the command line names it, for the formats whose check qemu reaches only
 * after a full open (qcow, luks): that open's errors (a missing key, a password that opens
 * no key slot) are qemu's. */
static struct {
    const char *name, *fmt;
    int flags;
} named;

/* img_open of the image as named; 0, or 1 after qemu's message. */
static int open_named(bool share)
{
    image_t *img = image_open_or_report(named.name, named.fmt,
                                        named.flags | (share ? IMG_OPEN_SHARE : 0));
    if (!img)
        return 1;
    image_close(img);
    return 0;
}

static int check_file(const char *filename, const char *arg, const char *fmt,
                      const struct bs_resolved *res, int fix, bool dry_run, const char *journal,
                      bool json, bool quiet, struct check_opts *op);

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
    bool dry_run = false, image_opts = false;
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
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                return 1;
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
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
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        return 1;
    /* json:, file: and --image-opts names: the checker works on the file they name, with the
     * format they give; the JSON report keeps the name as given (qemu-img's check->filename) */
    const char *arg = filename;
    named.name = filename;
    named.fmt = fmt;
    named.flags = image_opts ? IMG_OPEN_IMAGE_OPTS : 0;
    struct bs_resolved res = { 0 };
    char *msg = NULL;
    if (image_opts || blockspec_has_protocol(filename)) {
        struct bspec kv = { 0 };
        if (image_opts)
            bspec_parse_keyval(filename, &kv);
        int r = blockspec_resolve(image_opts ? NULL : filename, &kv, fmt, true, &res, &msg);
        bspec_free(&kv);
        if (r < 0) {
            err_report("Could not open '%s': %s", arg, msg);
            free(msg);
            return 1;
        }
        filename = res.path;
        fmt = res.format;
        check_run_set_report_name(arg);
        o.open_name = arg;
        o.no_backing = res.backing == BS_BACKING_NONE;
        o.data_file = res.data_file;
        o.key_secret = res.key_secret;
        o.encrypt_format = res.encrypt_format;
        o.backing_opts = res.backing == BS_BACKING_OPTS ? &res.backing_opts : NULL;
    }
    int ret = check_file(filename, arg, fmt, &res, fix, dry_run, journal, json, quiet, &o);
    blockspec_resolved_free(&res);
    return ret;
}

/* check of the file filename (arg: the name as given, for messages), fmt NULL: probed. */
static int check_file(const char *filename, const char *arg, const char *fmt,
                      const struct bs_resolved *res, int fix, bool dry_run, const char *journal,
                      bool json, bool quiet, struct check_opts *op)
{
    struct check_opts o = *op;
    /* qemu-img check -r opens the image read-write from the start: a directory then fails
     * in open(2) itself ("Is a directory"), a FIFO or /proc file as in a read-only open */
    qio_t *q;
    char *msg = NULL;
    o.rdwr = fix && !dry_run;
    int mode = o.rdwr ? QIO_RDWR : QIO_RDONLY;
    if ((res->nbd || res->ssh) && o.rdwr) {
        /* repair journals and reopens the image by file name */
        err_report("check -r of an image over %s is not supported by qimg",
                   res->nbd ? "NBD" : "ssh");
        return 1;
    }
    int rc = 0;
    if (res->null_drv)
        q = qio_open_null(filename, res->null_size, res->null_zeroes, mode);
    else
        rc = res->nbd ? qio_open_nbd(res->nbd, mode, &q, &msg)
             : res->ssh ? qio_open_ssh(res->ssh, mode, &q, &msg)
                      : qio_open_image(filename, mode | (o.share ? QIO_SHARE : 0), &q, &msg);
    if (rc < 0) {
        err_report("Could not open '%s': %s", arg, msg);
        free(msg);
        return 1;
    }
    if ((msg = blockspec_file_unknown_msg(res))) {
        err_report("Could not open '%s': %s", arg, msg);
        free(msg);
        qio_close(q);
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
    if (res->rest.n && (msg = blockspec_format_unknown_msg(res, fmt))) {
        /* qemu reports left-over options once the format has opened; close enough here */
        err_report("Could not open '%s': %s", arg, msg);
        free(msg);
        qio_close(q);
        return 1;
    }
    if (strcmp(fmt, "qcow2") != 0) {
        static const char *const known[] = { "raw", "file", "qcow", "luks", "vpc", "dmg",
                                             "cloop", "bochs", "vvfat", "vmdk", "vhdx",
                                             "parallels", "qed", "vdi", "nbd", "ssh", "null-co",
                                             "null-aio" };
        bool k = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            k |= !strcmp(fmt, known[i]);
        qio_close(q);
        if (!k) {
            err_report("Could not open '%s': Unknown driver '%s'", arg, fmt);
            return 1;
        }
        if (!strcmp(fmt, "vdi") && (dry_run || journal)) {
            /* VDI has no repair: a dry run or a journal would be ignored */
            err_report("--dry-run and --journal are only supported for qcow2 and qed images");
            return 1;
        }
        if (!strcmp(fmt, "qed") || !strcmp(fmt, "vdi"))
            return check_blk(filename, fmt, fix, json, quiet, &o, dry_run, journal);
        /* qemu opens the image (and its backing chain) before it finds no check; a
         * failed open (no key, a wrong one) is exit 1. Opened read-only: nothing is
         * written either way. */
        if ((!strcmp(fmt, "luks") || !strcmp(fmt, "qcow")) && open_named(o.share))
            return 1;
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
        return check_repair_qcow2(filename, &ro);
    }
    char *lockmsg = NULL;
    if (qio_lock_image(q, false, true, o.share, filename, &lockmsg) < 0) {
        err_report("Could not open '%s': %s", arg, lockmsg);
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
