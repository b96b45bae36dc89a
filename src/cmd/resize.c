/* `qimg resize`: qemu-img 7.2's img_resize. The SIZE operand is taken off the end of argv
 * before the options are parsed, so "-1G" is a size and not an option; "+N"/"-N" are
 * relative to the current virtual size; shrinking needs --shrink. The resize itself is
 * image_truncate (the drivers' bdrv_co_truncate). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/image.h"
#include "cmd/commands.h"
#include "cmd/ported.h"
#include "cmd/resize_port.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/opts.h"
#include "util/size.h"

enum { OPT_PREALLOC = OPT_CMD, OPT_SHRINK, OPT_DRY_RUN, OPT_JOURNAL };

static void help(void)
{
    printf("usage: %s resize [-f FMT] [--preallocation=PREALLOC] [--shrink] [-q]"
           " [--dry-run] [--journal FILE] FILENAME [+ | -]SIZE\n", qimg_progname);
}

/* qemu's parse_option_size for the "size" option, with its messages. */
static int parse_size_opt(const char *s, uint64_t *n)
{
    int r = parse_size_ex(s, n);
    if (r == -ERANGE) {
        err_report("Value '%s' is out of range for parameter 'size'", s);
        return -1;
    }
    if (r < 0) {
        err_report("Parameter 'size' expects a non-negative number below 2^64");
        fputs("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
              "and exabytes, respectively.\n", stderr);
        return -1;
    }
    return 0;
}

int cmd_resize(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, 0, 'h' },
        { "object", required_argument, 0, OPT_OBJECT },
        { "image-opts", no_argument, 0, OPT_IMAGE_OPTS },
        { "preallocation", required_argument, 0, OPT_PREALLOC },
        { "shrink", no_argument, 0, OPT_SHRINK },
        { "dry-run", no_argument, 0, OPT_DRY_RUN },
        { "journal", required_argument, 0, OPT_JOURNAL },
        { 0, 0, 0, 0 },
    };
    static const char *const modes[] = { "off", "metadata", "falloc", "full" };
    if (argc < 3)
        err_usage("Not enough arguments");
    const char *size = argv[--argc];
    const char *fmt = NULL, *journal = NULL;
    bool quiet = false, shrink = false, dry_run = false, image_opts = false;
    enum img_prealloc prealloc = IMG_PREALLOC_OFF;
    int c;
    opts_start();
    while ((c = opts_next(argc, argv, ":f:hq", longopts, help)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'q': quiet = true; break;
        case OPT_SHRINK: shrink = true; break;
        case OPT_DRY_RUN: dry_run = true; break;
        case OPT_JOURNAL: journal = optarg; break;
        case OPT_PREALLOC: {
            size_t i = 0;
            while (i < 4 && strcmp(optarg, modes[i]))
                i++;
            if (i == 4) {
                err_report("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            prealloc = (enum img_prealloc)i;
            break;
        }
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                return 1;
            break;
        }
    }
    if (optind != argc - 1)
        err_usage("Expecting image file name and size");
    const char *filename = argv[optind];
    if (!ported_modes_ok(dry_run, journal))
        return 1;

    int relative = 0;
    if (size[0] == '+' || size[0] == '-')
        relative = *size++ == '+' ? 1 : -1;
    uint64_t n;
    if (parse_size_opt(size, &n) < 0)
        return 1;

    /* --dry-run and --journal open read-only: the resize is planned on an overlay
     * (resize_port.c), nothing it does reaches the file before the journal has it */
    int flags = dry_run ? 0 : journal ? IMG_OPEN_SHARE : IMG_OPEN_RDWR;
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        return 1;
    image_t *img = image_open_or_report(filename, fmt, flags |
                                        (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    if (!img)
        return 1;
    int ret = 1;
    /* qemu computes in int64_t: a sum past INT64_MAX wraps negative and is refused below */
    uint64_t cur = img->size;
    int64_t total = (int64_t)(relative == 0 ? n : relative > 0 ? cur + n : cur - n);
    if (total <= 0) {
        err_report("New image size must be positive");
        goto out;
    }
    if ((uint64_t)total <= cur && prealloc != IMG_PREALLOC_OFF) {
        err_report("Preallocation can only be used for growing images");
        goto out;
    }
    if ((uint64_t)total < cur && !shrink) {
        err_report("Use the --shrink option to perform a shrink operation.");
        err_report("warning: Shrinking an image will delete all data beyond the shrunken "
                   "image's end. Before performing such an operation, make sure there is no "
                   "important data there.");
        goto out;
    }
    char *msg = NULL;
    int r;
    if (dry_run || journal)
        r = resize_ported(img, img->filename, (uint64_t)total, prealloc, dry_run, journal, &msg);
    else
        r = image_truncate(img, (uint64_t)total, prealloc, &msg);
    if (r == 0 && !dry_run && (r = image_flush(img)) < 0)
        msg = NULL, err_report("Could not flush '%s': %s", filename, strerror(-r));
    if (r < 0) {
        if (msg)
            err_report("%s", msg);
        free(msg);
        goto out;
    }
    if (!quiet && !dry_run)
        printf("Image resized.\n");
    ret = 0;
out:
    image_close(img);
    return ret;
}
