/* `qimg amend`: qemu-img 7.2's img_amend. -o is required (repeated -o join with ','),
 * `-o help` lists the format's amend options (with -f before the image is opened, else
 * after), -p prints qemu's progress lines, --force is LUKS's, --object defines the
 * secrets that --image-opts / json: names and the LUKS keyslot options refer to. The work
 * is image_amend (block/amend.h: qemu's qcow2_amend_options, and the luks format's
 * keyslot amend). Beyond qemu-img: --dry-run and --journal (cmd/ported.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/amend.h"
#include "block/blockspec.h"
#include "block/create_opts.h"
#include "block/driver.h"
#include "block/image.h"
#include "cmd/commands.h"
#include "cmd/ported.h"
#include "crypto/luks_amend.h"
#include "util/err.h"
#include "util/opts.h"
#include "util/progress.h"
#include "util/secrets.h"
#include "util/xalloc.h"

enum { OPT_FORCE = OPT_CMD, OPT_DRY_RUN, OPT_JOURNAL };

static void help(void)
{
    printf("usage: %s amend [--object OBJECTDEF] [--image-opts] [-p] [-q] [-f FMT]"
           " [-t CACHE] [--force] [--dry-run] [--journal FILE] -o OPTIONS FILENAME\n"
           "  -o help lists the options of the format (qcow2: compat, lazy_refcounts,\n"
           "  refcount_bits, data_file, data_file_raw, backing_file, backing_fmt, size,\n"
           "  encrypt.state, encrypt.keyslot, encrypt.old-secret, encrypt.new-secret,\n"
           "  encrypt.iter-time; luks: state, keyslot, old-secret, new-secret, iter-time)\n",
           qimg_progname);
}

/* qemu-img's is_valid_option_list: not empty, no leading comma, no unescaped trailing one */
static bool valid_option_list(const char *s)
{
    size_t len = strlen(s), i;
    if (!s[0] || s[0] == ',')
        return false;
    for (i = len; i > 0 && s[i - 1] == ','; i--)
        ;
    return (len - i) % 2 == 0;
}

static int cmp_desc(const void *a, const void *b)
{
    return strcmp((*(const struct copt_desc *const *)a)->name,
                  (*(const struct copt_desc *const *)b)->name);
}

/* qemu-img's print_amend_option_help (qemu_opts_print_help: sorted by name) */
static int print_amend_help(const char *fmt)
{
    bool known = driver_find(fmt) != NULL || copts_backing_fmt_known(fmt);
    if (!known) {
        err_report("Unknown file format '%s'", fmt);
        return 1;
    }
    if (!amend_format_supported(fmt)) {
        err_report("Format driver '%s' does not support option amendment", fmt);
        return 1;
    }
    struct copts o;
    amend_opts_init(&o, fmt, false);
    qsort(o.desc, o.n, sizeof(o.desc[0]), cmp_desc);
    printf("Amend options for '%s':\n", fmt);
    for (size_t i = 0; i < o.n; i++) {
        const struct copt_desc *d = o.desc[i];
        const char *t = d->type == COPT_BOOL ? "bool (on/off)" : d->type == COPT_NUM ? "num" :
                        d->type == COPT_SIZE ? "size" : "str";
        char left[128];
        snprintf(left, sizeof(left), "%s=<%s>", d->name, t);
        printf("  %-22s - %s\n", left, d->help);
    }
    return 0;
}

/* qemu-img's amend_status_cb */
static void status_cb(void *opaque, int64_t offset, int64_t total)
{
    (void)opaque;
    progress_print(100.f * (float)offset / (float)total, 0);
}

struct amend_ctx {
    const struct copts *o;
    bool force;
};

static int amend_work(image_t *img, const struct amend_ctx *a, char **errmsg)
{
    return image_amend(img, a->o, a->force, status_cb, NULL, errmsg);
}

/* Does the amend change LUKS key slots (any keyslot option given)? */
static bool luks_update(const char *fmt, const struct copts *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->str[i] && (!strcmp(fmt, "luks") || !strncmp(o->desc[i]->name, "encrypt.", 8)))
            return true;
    return false;
}

static bool cache_mode_valid(const char *c)
{
    static const char *const modes[] = { "none", "off", "writeback", "unsafe", "directsync",
                                         "writethrough", NULL };
    for (const char *const *m = modes; *m; m++)
        if (!strcmp(c, *m))
            return true;
    return false;
}

int cmd_amend(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, 0, 'h' },
        { "object", required_argument, 0, OPT_OBJECT },
        { "image-opts", no_argument, 0, OPT_IMAGE_OPTS },
        { "force", no_argument, 0, OPT_FORCE },
        { "dry-run", no_argument, 0, OPT_DRY_RUN },
        { "journal", required_argument, 0, OPT_JOURNAL },
        { 0, 0, 0, 0 },
    };
    char *options = NULL;
    const char *fmt = NULL, *cache = "writeback", *journal = NULL;
    bool quiet = false, progress = false, force = false, dry_run = false, image_opts = false;
    int c;

    opts_start();
    while ((c = opts_next(argc, argv, ":ho:f:t:pq", longopts, help)) != -1) {
        switch (c) {
        case 'o':
            if (!valid_option_list(optarg)) {
                err_report("Invalid option list: %s", optarg);
                free(options);
                return 1;
            }
            if (options) {
                char *n = xasprintf("%s,%s", options, optarg);
                free(options);
                options = n;
            } else {
                options = xstrdup(optarg);
            }
            break;
        case 'f': fmt = optarg; break;
        case 't': cache = optarg; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case OPT_FORCE: force = true; break;
        case OPT_DRY_RUN: dry_run = true; break;
        case OPT_JOURNAL: journal = optarg; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0) {
                free(options);
                return 1;
            }
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        }
    }
    if (!options)
        err_usage("Must specify options (-o)");
    if (quiet || dry_run)
        progress = false;
    progress_init(progress, 1.0f);

    int ret = 1;
    image_t *img = NULL;
    struct copts o;
    memset(&o, 0, sizeof(o));
    const char *filename = optind == argc - 1 ? argv[argc - 1] : NULL;
    if (fmt && copts_has_help(options)) {
        ret = print_amend_help(fmt);
        goto out;
    }
    if (!filename) {
        err_report("Expecting one image file name");
        goto out;
    }
    if (!ported_modes_ok(dry_run, journal))
        goto out;
    if (!cache_mode_valid(cache)) {
        err_report("Invalid cache option: %s", cache);
        goto out;
    }
    /* --dry-run and --journal open read-only: the amend runs on a plan overlay
     * (cmd/ported.h); nothing reaches the file before the journal has it */
    int flags = (dry_run ? 0 : journal ? IMG_OPEN_SHARE : IMG_OPEN_RDWR) |
                (image_opts ? IMG_OPEN_IMAGE_OPTS : 0);
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        goto out;
    if (!(img = image_open_or_report(filename, fmt, flags)))
        goto out;
    if (copts_has_help(options)) {
        ret = print_amend_help(img->format);
        goto out;
    }
    if (!amend_format_supported(img->format)) {
        err_report("Format driver '%s' does not support option amendment", img->format);
        goto out;
    }
    char err[1024];
    amend_opts_init(&o, img->format, false);
    if (copts_parse(&o, options, err, sizeof(err)) < 0) {
        /* qemu tries the creation options too, to say why */
        struct copts all;
        char ignored[1024];
        amend_opts_init(&all, img->format, true);
        bool create_only = copts_parse(&all, options, ignored, sizeof(ignored)) == 0;
        copts_free(&all);
        err_report("%s", err);
        if (create_only)
            fputs("This option is only supported for image creation\n", stderr);
        goto out;
    }

    if (journal && luks_update(img->format, &o)) {
        /* undo needs the old bytes: the journal would keep a copy of the erased (or
         * replaced) key material next to the image */
        err_report("--journal is not supported for LUKS keyslot changes: the journal would "
                   "keep copies of key material");
        goto out;
    }

    progress_print(0.f, 0);
    struct amend_ctx a = { &o, force };
    char *msg = NULL;
    int r;
    if (dry_run || journal) {
        /* the amend on a plan overlay (cmd/ported.h): printed or journaled, written only
         * when it succeeded */
        struct ported pt;
        image_t *pimg;
        r = ported_open(&pt, img, img->filename, &pimg, &msg);
        if (r == 0) {
            r = amend_work(pimg, &a, &msg);
            char *fmsg = NULL;
            int fr = ported_finish(&pt, img->filename, r == 0, dry_run, journal, "Amend",
                                   &fmsg);
            if (r == 0) {
                r = fr;
                msg = fmsg;
            } else {
                free(fmsg);
            }
        }
    } else {
        r = amend_work(img, &a, &msg);
    }
    progress_print(100.f, 0);
    if (r < 0) {
        size_t len = msg ? strlen(msg) : 0;
        if (len && msg[len - 1] == LUKS_MSG_NO_NEWLINE) {
            /* qemu's hint without a final newline */
            msg[len - 1] = 0;
            fprintf(stderr, "%s: %s", qimg_progname, msg);
        } else if (msg) {
            err_report("%s", msg);
        }
        free(msg);
        goto out;
    }
    ret = 0;
out:
    progress_end();
    copts_free(&o);
    image_close(img);
    free(options);
    return ret;
}
