/* qimg create: qemu-img 7.2's img_create and bdrv_img_create (block.c): the command line,
 * the option list, the backing file check, the "Formatting" line, then the format's own
 * creation (block/create.h). */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/create.h"
#include "block/create_opts.h"
#include "block/image.h"
#include "cmd/commands.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/opts.h"
#include "util/size.h"
#include "util/xalloc.h"

static void help(void)
{
    printf("usage: %s create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]]"
           " [-u] [-o options] filename [size]\n", qimg_progname);
}

/* "qemu-img: FILE: msg" (error_reportf_err(err, "%s: ", filename)) */
static void report(const char *filename, const char *msg)
{
    err_report("%s: %s", filename, msg);
}

/* bdrv_img_create without the driver's part: 0 or 1 (exit status) */
static int img_create(const char *filename, const char *fmt, const char *base,
                      const char *base_fmt, const char *options, int64_t img_size, bool no_backing,
                      bool quiet)
{
    struct copts o;
    char err[1024];
    int ret = 1;

    /* bdrv_img_create's order: format, protocol, the format's creation support */
    bool known = copts_init(&o, fmt, true) == 0;
    if (!known && !copts_format_no_create(fmt)) {
        snprintf(err, sizeof(err), "Unknown file format '%s'", fmt);
        report(filename, err);
        return 1;
    }
    /* qemu's bdrv_find_protocol(): "file:NAME" creates NAME; messages keep the name given */
    char *path = NULL, *perr = NULL;
    int pr = blockspec_plain_path(filename, &path, &perr);
    /* an unknown protocol fails in bdrv_find_protocol, before the format's creation
     * support is asked; a protocol qemu has (-ENOTSUP: qimg cannot create there) after */
    if ((pr < 0 && pr != -ENOTSUP) || (pr < 0 && known)) {
        report(filename, perr);
        free(perr);
        if (known)
            copts_free(&o);
        return 1;
    }
    if (!known) {
        snprintf(err, sizeof(err), "Format driver '%s' does not support image creation", fmt);
        report(filename, err);
        free(perr);
        free(path);
        return 1;
    }
    if (options && copts_parse(&o, options, err, sizeof(err)) < 0) {
        report(filename, err);
        goto out;
    }
    if (!copts_isset(&o, "size")) {
        copts_set_number(&o, "size", (uint64_t)img_size);
    } else if (img_size != -1) {
        report(filename, "The image size must be specified only once");
        goto out;
    }
    if (base && copts_set(&o, "backing_file", base) < 0) {
        snprintf(err, sizeof(err), "Backing file not supported for file format '%s'", fmt);
        report(filename, err);
        goto out;
    }
    if (base_fmt && copts_set(&o, "backing_fmt", base_fmt) < 0) {
        snprintf(err, sizeof(err), "Backing file format not supported for file format '%s'", fmt);
        report(filename, err);
        goto out;
    }
    const char *backing = copts_isset(&o, "backing_file") ? copts_str(&o, "backing_file") : NULL;
    if (backing) {
        if (!strcmp(filename, backing)) {
            report(filename,
                   "Error: Trying to create an image with the same filename as the backing file");
            goto out;
        }
        if (!backing[0]) {
            report(filename, "Expected backing file name, got empty string");
            goto out;
        }
    }
    const char *bfmt = copts_isset(&o, "backing_fmt") ? copts_str(&o, "backing_fmt") : NULL;
    uint64_t size = copts_num(&o, "size", (uint64_t)img_size);
    if (backing && !no_backing) {
        char *full = image_path_combine(path, backing);
        image_t *bs = NULL;
        char *msg = NULL;
        /* bdrv_img_create: BDRV_O_NO_BACKING | BDRV_O_NO_IO */
        int r = image_open(full, bfmt, IMG_OPEN_NO_BACKING | IMG_OPEN_NO_IO | IMG_OPEN_SHARE,
                           &bs, &msg);
        if (r < 0) {
            /* the block layer's message: without the "Could not open 'F': " that image_open
             * puts in front as qemu-img's own opens do */
            const char *m = msg ? msg : "";
            size_t n = strlen(full) + 20;
            char *pre = xmalloc(n);
            snprintf(pre, n, "Could not open '%s': ", full);
            if (!strncmp(m, pre, strlen(pre)))
                m += strlen(pre);
            err_report("%s: %s\nCould not open backing image.", filename, m);
            free(pre);
            free(msg);
            free(full);
            goto out;
        }
        free(full);
        if (!bfmt) {
            /* qemu appends the hint without a newline */
            fprintf(stderr, "%s: %s: Backing file specified without backing format\n"
                    "Detected format of %s.", qimg_progname, filename, bs->format);
            image_close(bs);
            goto out;
        }
        if (size == (uint64_t)-1) {
            size = bs->size;
            copts_set_number(&o, "size", size);
        }
        image_close(bs);
    } else if (backing && !bfmt) {
        report(filename, "Backing file specified without backing format");
        goto out;
    }
    if (size == (uint64_t)-1) {
        report(filename, "Image creation needs a size parameter");
        goto out;
    }
    if (!quiet) {
        printf("Formatting '%s', fmt=%s ", filename, fmt);
        copts_print(&o, stdout);
        printf("\n");
        fflush(stdout);
    }
    char *msg = NULL;
    int r = block_create(fmt, path, &o, &msg);
    if (r == -EFBIG) {
        snprintf(err, sizeof(err), "The image size is too large for file format '%s'%s", fmt,
                 copts_num(&o, "cluster_size", 0) ? " (try using a larger cluster size)" : "");
        report(filename, err);
    } else if (r < 0) {
        report(filename, msg ? msg : strerror(-r));
    } else {
        ret = 0;
    }
    free(msg);
out:
    free(path);
    copts_free(&o);
    return ret;
}

int cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, 0, 'h' },
        { "object", required_argument, 0, OPT_OBJECT },
        { 0, 0, 0, 0 },
    };
    const char *fmt = "raw", *base = NULL, *base_fmt = NULL;
    char *options = NULL;
    bool quiet = false, no_backing = false;
    int c;

    opts_start();
    while ((c = opts_next(argc, argv, ":F:b:f:ho:qu", longopts, help)) != -1) {
        switch (c) {
        case 'F': base_fmt = optarg; break;
        case 'b': base = optarg; break;
        case 'f': fmt = optarg; break;
        case 'o':
            if (opts_accumulate(&options, optarg) < 0) {
                free(options);
                return 1;
            }
            break;
        case 'q': quiet = true; break;
        case 'u': no_backing = true; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0) {
                free(options);
                return 1;
            }
            break;
        }
    }
    const char *filename = optind < argc ? argv[optind] : NULL;
    if (options && copts_has_help(options)) {
        free(options);
        if (copts_format_no_create(fmt)) {
            err_report("Format driver '%s' does not support image creation", fmt);
            return 1;
        }
        if (!copts_format_known(fmt)) {
            err_report("Unknown file format '%s'", fmt);
            return 1;
        }
        copts_print_help(fmt, filename != NULL);
        return 0;
    }
    if (optind >= argc)
        err_usage("Expecting image file name");
    optind++;
    int64_t img_size = -1;
    if (optind < argc) {
        if (cvtnum("image size", argv[optind++], &img_size) < 0) {
            free(options);
            return 1;
        }
    }
    if (optind != argc)
        err_usage("Unexpected argument: %s", argv[optind]);
    int ret = img_create(filename, fmt, base, base_fmt, options, img_size, no_backing, quiet);
    free(options);
    return ret;
}
