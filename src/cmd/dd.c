/* qimg dd: qemu-img 7.2's img_dd. Operands bs= count= skip= if= of= (dd(1) style, parsed in
 * order, the first bad one ends the command); the source is opened read-only, the target
 * created with only its size set (bdrv_create with the format's defaults, no "Formatting"
 * line), opened read-write, then every block is read and written as data, zeros included
 * (blk_pread/blk_pwrite without flags: a qcow2 target ends up fully allocated as qemu's).
 *
 * qemu 7.2's size arithmetic is kept as it is, quirk included: count caps the source size
 * (count*bs) BEFORE skip is taken off, so "skip=2 count=3" copies one block, not three. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
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
#include "util/opts.h"
#include "util/secrets.h"
#include "util/size.h"
#include "util/xalloc.h"

/* Largest single read/write: a block larger than this (bs goes up to INT_MAX) is copied in
 * pieces of this size, so memory stays bounded where qemu allocates the whole block. */
#define DD_CHUNK (16u << 20)

enum { DD_BS = 1, DD_COUNT = 2, DD_IF = 4, DD_OF = 8, DD_SKIP = 16 };

struct dd {
    unsigned flags;  /* DD_* operands given */
    int64_t bs;      /* block size for input and output (default 512) */
    int64_t count;   /* blocks to copy (with DD_COUNT) */
    int64_t skip;    /* input blocks to skip (with DD_SKIP) */
    const char *in;  /* if= */
    const char *out; /* of= */
};

static void help(void)
{
    printf("usage: %s dd [--object OBJ] [--image-opts] [-U] [-f FMT] [-O OUTPUT_FMT]"
           " [bs=BLOCK_SIZE] [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT\n", qimg_progname);
}

/* One NAME=VALUE operand (img_dd's option table). 0, or -1 after qemu's message. */
static int operand(struct dd *dd, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq) {
        err_report("unrecognized operand %s", arg);
        return -1;
    }
    size_t n = (size_t)(eq - arg);
    const char *val = eq + 1;
#define IS(name) (n == strlen(name) && !strncmp(arg, name, n))
    if (IS("bs")) {
        if (cvtnum_full("bs", val, 1, INT_MAX, &dd->bs) < 0)
            return -1;
        dd->flags |= DD_BS;
    } else if (IS("count")) {
        if (cvtnum("count", val, &dd->count) < 0)
            return -1;
        dd->flags |= DD_COUNT;
    } else if (IS("if")) {
        dd->in = val;
        dd->flags |= DD_IF;
    } else if (IS("of")) {
        dd->out = val;
        dd->flags |= DD_OF;
    } else if (IS("skip")) {
        if (cvtnum("skip", val, &dd->skip) < 0)
            return -1;
        dd->flags |= DD_SKIP;
    } else {
        /* qemu prints the name only: the '=' was cut off before the lookup */
        err_report("unrecognized operand %.*s", (int)n, arg);
        return -1;
    }
#undef IS
    return 0;
}

/* The target's format check, after the source opened (img_dd's order). 0 or -1 reported. */
static int check_out_format(const char *fmt)
{
    if (copts_format_known(fmt))
        return 0;
    if (!copts_backing_fmt_known(fmt)) {
        err_report("Unknown file format");
        return -1;
    }
    /* a driver qemu knows: either it cannot create (bochs, dmg, ...: qemu's words) or qimg
     * cannot (vmdk, vpc, ...: see README) */
    err_report("Format driver '%s' does not support image creation", fmt);
    return -1;
}

/* bdrv_create of the target with size set; 0 or -1 reported as img_dd does. */
static int create_target(const char *fmt, const char *filename, int64_t size)
{
    struct copts o;
    if (copts_init(&o, fmt, true) < 0)
        return -1;
    copts_set_number(&o, "size", (uint64_t)size);
    char *msg = NULL;
    /* an NBD export is written through (qemu's bdrv_co_create_opts_simple) */
    int r = block_create_is_nbd(filename) ? block_create_nbd(fmt, filename, &o, &msg)
                                          : block_create(fmt, filename, &o, &msg);
    if (r < 0) {
        if (r == -EFBIG)
            err_report("%s: error while creating output image: The image size is too large for"
                       " file format '%s'%s", filename, fmt,
                       copts_num(&o, "cluster_size", 0) ? " (try using a larger cluster size)"
                                                        : "");
        else
            err_report("%s: error while creating output image: %s", filename,
                       msg ? msg : strerror(-r));
    }
    free(msg);
    copts_free(&o);
    return r < 0 ? -1 : 0;
}

/* The copy loop: bs-sized blocks from in_pos of the source to out_pos 0 of the target. */
static int copy(image_t *src, image_t *dst, int64_t in_pos, int64_t size, int64_t bs)
{
    size_t bufsz = (size_t)(bs < (int64_t)DD_CHUNK ? bs : (int64_t)DD_CHUNK);
    if (size - in_pos < (int64_t)bufsz)
        bufsz = (size_t)(size - in_pos);
    uint8_t *buf = bufsz ? xmalloc(bufsz) : NULL;
    int64_t out_pos = 0;
    int ret = 0;
    while (in_pos < size) {
        int64_t block = size - in_pos < bs ? size - in_pos : bs;
        for (int64_t done = 0; done < block;) {
            size_t n = (size_t)(block - done < (int64_t)bufsz ? block - done : (int64_t)bufsz);
            int r = image_read(src, (uint64_t)(in_pos + done), buf, n);
            if (r < 0) {
                err_report("error while reading from input image file: %s", strerror(-r));
                ret = -1;
                goto out;
            }
            r = image_write(dst, (uint64_t)(out_pos + done), buf, n);
            if (r < 0) {
                err_report("error while writing to output image file: %s", strerror(-r));
                ret = -1;
                goto out;
            }
            done += (int64_t)n;
        }
        in_pos += block;
        out_pos += block;
    }
out:
    free(buf);
    return ret;
}

int cmd_dd(int argc, char **argv)
{
    static const struct option longopts[] = {
        OPTS_LONG_COMMON,
        { 0, 0, 0, 0 },
    };
    const char *fmt = NULL, *out_fmt = "raw";
    bool force_share = false, image_opts = false;
    struct dd dd = { .bs = 512 };
    int c;

    opts_start();
    while ((c = opts_next(argc, argv, ":hf:O:U", longopts, help)) != -1) {
        switch (c) {
        case 'O': out_fmt = optarg; break;
        case 'f': fmt = optarg; break;
        case 'U': force_share = true; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                return 1;
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        }
    }
    for (int i = optind; i < argc; i++)
        if (operand(&dd, argv[i]) < 0)
            return 1;
    if (!(dd.flags & DD_IF) || !(dd.flags & DD_OF)) {
        err_report("Must specify both input and output files");
        return 1;
    }

    /* --image-opts names the source only: qemu-img dd creates and opens of= as a file
     * name (bdrv_create takes no option list) */
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        return 1;
    image_t *src = image_open_or_report(dd.in, fmt, (force_share ? IMG_OPEN_SHARE : 0) |
                                                    (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    if (!src)
        return 1;
    image_t *dst = NULL;
    int ret = 1;
    if (check_out_format(out_fmt) < 0)
        goto out;

    /* img_dd's arithmetic, in int64_t as qemu does it */
    int64_t bs = dd.bs, size = (int64_t)src->size;
    if ((dd.flags & DD_COUNT) && dd.count <= INT64_MAX / bs && dd.count * bs < size)
        size = dd.count * bs;
    bool skip_past = (dd.flags & DD_SKIP) && (dd.skip > INT64_MAX / bs || size < dd.skip * bs);
    if (create_target(out_fmt, dd.out, skip_past ? 0 : size - dd.skip * bs) < 0)
        goto out;
    dst = image_open_or_report(dd.out, out_fmt, IMG_OPEN_RDWR);
    if (!dst)
        goto out;
    image_hint_filling(dst); /* created just above */
    int64_t in_pos = skip_past ? size : dd.skip * bs;
    if (skip_past) /* like dd(1): a warning and an empty target, exit 0 */
        err_report("%s: cannot skip to specified offset", dd.in);
    if (copy(src, dst, in_pos, size, bs) < 0)
        goto out;
    int r = image_flush(dst);
    if (r < 0) {
        err_report("error while writing to output image file: %s", strerror(-r));
        goto out;
    }
    ret = 0;
out:
    image_close(dst);
    image_close(src);
    return ret;
}
