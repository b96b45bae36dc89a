/* `qimg rebase`: qemu-img 7.2's img_rebase. Safe mode (the default) opens the image with its
 * backing chain and the new backing file, and before the switch writes into the image every
 * piece whose guest content would change: for each run the image does not allocate itself
 * (2 MiB steps as qemu's IO_BUF_SIZE), the old and the new backing content are compared in
 * 512-byte pieces and the differing pieces are written (zero writes where the old backing
 * file has ended). -u only rewrites the stored name and format (block/backing_change.h).
 * --dry-run / --journal route the image's writes through a plan (cmd/ported.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/backing_change.h"
#include "block/blockspec.h"
#include "block/create_opts.h"
#include "block/image.h"
#include "cmd/commands.h"
#include "cmd/ported.h"
#include "util/cache.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/opts.h"
#include "util/progress.h"
#include "util/xalloc.h"

#define IO_BUF_SIZE (2u << 20) /* qemu-img's IO_BUF_SIZE */
#define SECTOR 512u

enum { OPT_DRY_RUN = OPT_CMD, OPT_JOURNAL };

static void help(void)
{
    printf("usage: %s rebase [--object OBJ] [--image-opts] [-f FMT] [-F BACKING_FMT] [-b BACKING]"
           " [-u] [-p] [-q] [-t CACHE] [-T SRC_CACHE] [-U] [--dry-run] [--journal FILE] FILE\n",
           qimg_progname);
}

/* qemu's compare_buffers: whether the first 512-byte piece differs, and how far (in whole
 * pieces) that answer holds. */
static bool compare_buffers(const uint8_t *a, const uint8_t *b, uint64_t n, uint64_t *pnum)
{
    uint64_t i = n < SECTOR ? n : SECTOR;
    bool res = memcmp(a, b, i) != 0;
    while (i < n) {
        uint64_t len = n - i < SECTOR ? n - i : SECTOR;
        if ((memcmp(a + i, b + i, len) != 0) != res)
            break;
        i += len;
    }
    *pnum = i;
    return res;
}

struct rebase {
    const char *filename, *out_baseimg, *out_basefmt;
    const char *path;  /* the overlay's file: filename, or what a json:/--image-opts name names */
    image_t *top;      /* the image with its old chain (safe) or alone (-u) */
    image_t *w;        /* where the writes go: top, or its plan overlay */
    image_t *old_b, *new_b, *prefix;
};

static int rd(image_t *img, uint64_t off, uint8_t *buf, uint64_t n, const char *which)
{
    int r = image_read(img, off, buf, (size_t)n);
    if (r < 0)
        err_report("error while reading from %s backing file", which);
    return r;
}

/* The copy loop of img_rebase. 0 or -1 (reported). */
static int copy_differences(struct rebase *rb)
{
    uint64_t size = rb->top->size;
    uint64_t old_size = rb->old_b ? rb->old_b->size : 0;
    uint64_t new_size = rb->new_b ? rb->new_b->size : 0;
    uint8_t *buf_old = xmalloc(IO_BUF_SIZE), *buf_new = xmalloc(IO_BUF_SIZE);
    float local_progress = 0;
    int ret = -1;
    if (size != 0)
        local_progress = (float)100 / (float)(size / (size < IO_BUF_SIZE ? size : IO_BUF_SIZE));
    uint64_t n;
    for (uint64_t off = 0; off < size; off += n) {
        bool old_is_zero = false;
        n = size - off < IO_BUF_SIZE ? size - off : IO_BUF_SIZE;
        block_status_t st;
        int r = image_block_status(rb->top, off, n, &st);
        if (r < 0) {
            err_report("error while reading image metadata: %s", strerror(-r));
            goto out;
        }
        n = st.pnum;
        if (st.flags & BS_ALLOCATED)
            continue;
        if (rb->prefix) {
            /* unchanged since the prefix image: nothing to do (qemu's
             * bdrv_is_allocated_above(backing, prefix, include_base=false)) */
            if (rb->top->backing == rb->prefix)
                continue;
            uint64_t bytes = n;
            r = image_block_status_above(rb->top->backing, rb->prefix, off, n, &st);
            if (r < 0) {
                err_report("error while reading image metadata: %s", strerror(-r));
                goto out;
            }
            n = st.pnum;
            if (!(st.flags & BS_ALLOCATED) && n)
                continue;
            /* past the old backing's end (no answer, n == 0) the overlay read zeros:
             * compare and zero the piece explicitly, as qemu 7.2's img_rebase (else
             * the loop would not advance) */
            if (!n)
                n = bytes;
        }
        if (off >= old_size) {
            memset(buf_old, 0, n);
            old_is_zero = true;
        } else {
            if (off + n > old_size)
                n = old_size - off;
            if (rd(rb->old_b, off, buf_old, n, "old") < 0)
                goto out;
        }
        if (off >= new_size || !rb->new_b) {
            memset(buf_new, 0, n);
        } else {
            if (off + n > new_size)
                n = new_size - off;
            if (rd(rb->new_b, off, buf_new, n, "new") < 0)
                goto out;
        }
        for (uint64_t done = 0, pnum; done < n; done += pnum) {
            if (!compare_buffers(buf_old + done, buf_new + done, n - done, &pnum))
                continue;
            r = old_is_zero ? image_write_zeroes(rb->w, off + done, pnum, false)
                            : image_write(rb->w, off + done, buf_old + done, (size_t)pnum);
            if (r < 0) {
                err_report("Error while writing to COW image: %s", strerror(-r));
                goto out;
            }
        }
        progress_print(local_progress, 100);
    }
    ret = 0;
out:
    free(buf_old);
    free(buf_new);
    return ret;
}

/* The switch to the new name, with qemu's messages. 0 or -1. */
static int change_backing(struct rebase *rb)
{
    const char *b = rb->out_baseimg;
    int r = b && *b ? image_change_backing_file(rb->w, b, rb->out_basefmt, true)
                    : image_change_backing_file(rb->w, NULL, NULL, false);
    const char *shown = b ? b : "(null)";
    if (r == -ENOSPC)
        err_report("Could not change the backing file to '%s': No space left in the file "
                   "header", shown);
    else if (r == -EINVAL && b && !rb->out_basefmt)
        err_report("Could not change the backing file to '%s': backing format must be "
                   "specified", shown);
    else if (r < 0)
        err_report("Could not change the backing file to '%s': %s", shown, strerror(-r));
    return r < 0 ? -1 : 0;
}

static int open_new_backing(struct rebase *rb, bool share)
{
    /* relative to the overlay's file (qemu's exact_filename), also when the overlay was
     * named by json: or --image-opts */
    char *real = image_path_combine(rb->path, rb->out_baseimg);
    rb->prefix = image_find_backing_image(rb->top, real);
    if (rb->prefix) {
        free(real);
        rb->new_b = rb->prefix;
        return 0;
    }
    char *msg = NULL;
    int r = image_open(real, rb->out_basefmt, share ? IMG_OPEN_SHARE : 0, &rb->new_b, &msg);
    if (r < 0) {
        /* qemu's blk_new_open error carries no "Could not open 'F': " of its own */
        char *pre = xasprintf("Could not open '%s': ", real);
        size_t pl = strlen(pre);
        err_report("Could not open new backing file '%s': %s", rb->out_baseimg,
                   strncmp(msg, pre, pl) ? msg : msg + pl);
        free(pre);
        free(msg);
        free(real);
        return -1;
    }
    free(real);
    return 0;
}

int cmd_rebase(int argc, char **argv)
{
    static const struct option longopts[] = {
        OPTS_LONG_COMMON,
        { "dry-run", no_argument, 0, OPT_DRY_RUN },
        { "journal", required_argument, 0, OPT_JOURNAL },
        { 0, 0, 0, 0 },
    };
    struct rebase rb = { 0 };
    const char *fmt = NULL, *cache = NULL, *src_cache = NULL, *journal = NULL;
    bool unsafe = false, progress = false, quiet = false, share = false, dry_run = false;
    bool image_opts = false;
    int c;
    opts_start();
    while ((c = opts_next(argc, argv, ":hf:F:b:upt:T:qU", longopts, help)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'F': rb.out_basefmt = optarg; break;
        case 'b': rb.out_baseimg = optarg; break;
        case 'u': unsafe = true; break;
        case 'p': progress = true; break;
        case 't': cache = optarg; break;
        case 'T': src_cache = optarg; break;
        case 'q': quiet = true; break;
        case 'U': share = true; break;
        case OPT_DRY_RUN: dry_run = true; break;
        case OPT_JOURNAL: journal = optarg; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                return 1;
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        }
    }
    if (quiet)
        progress = false;
    if (optind != argc - 1)
        err_usage("Expecting one image file name");
    if (!unsafe && !rb.out_baseimg)
        err_usage("Must specify backing file (-b) or use unsafe mode (-u)");
    rb.filename = argv[optind];
    if (!ported_modes_ok(dry_run, journal))
        return 1;

    progress_init(progress, 2.0f);
    progress_print(0, 100);
    int ret = -1;
    struct ported pt;
    bool ported = dry_run || journal;
    if (cache && !cache_mode_valid(cache)) {
        err_report("Invalid cache option: %s", cache);
        goto out;
    }
    if (src_cache && !cache_mode_valid(src_cache)) {
        err_report("Invalid source cache option: %s", src_cache);
        goto out;
    }
    /* the old backing file is not opened for -u: its name may be the thing to fix */
    int flags = (ported ? IMG_OPEN_SHARE : IMG_OPEN_RDWR) | (unsafe ? IMG_OPEN_NO_BACKING : 0);
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        goto out;
    rb.top = image_open_or_report(rb.filename, fmt,
                                  flags | (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    if (!rb.top)
        goto out;
    rb.path = image_opts || blockspec_has_protocol(rb.filename) ? rb.top->filename
                                                                : rb.filename;
    if (rb.out_basefmt && !copts_backing_fmt_known(rb.out_basefmt)) {
        err_report("Invalid format name: '%s'", rb.out_basefmt);
        goto out;
    }
    if (!unsafe) {
        rb.old_b = rb.top->backing;
        if (rb.out_baseimg[0] && open_new_backing(&rb, share) < 0)
            goto out;
    }
    char *msg = NULL;
    if (ported) {
        if (ported_open(&pt, rb.top, rb.path, &rb.w, &msg) < 0) {
            err_report("%s", msg);
            free(msg);
            goto out;
        }
    } else {
        rb.w = rb.top;
    }
    ret = unsafe ? 0 : copy_differences(&rb);
    /* Deliberately better than qemu 7.2, which switches the header while the copied
     * clusters' L2 entries may still sit in its cache: the copy is on disk before the
     * switch, so a crash at any point leaves the old or the new chain with the same guest
     * content. The bytes written are the same. */
    if (ret == 0 && !unsafe && (ret = image_flush(rb.w)) < 0) {
        err_report("Could not flush '%s': %s", rb.filename, strerror(-ret));
        ret = -1;
    }
    if (ret == 0) {
        ret = change_backing(&rb);
        progress_print(100, 0);
    }
    if (ported) {
        int r = ported_finish(&pt, rb.path, ret == 0, dry_run, journal, "Rebase", &msg);
        if (r < 0 && ret == 0) {
            if (msg)
                err_report("%s", msg);
            ret = -1;
        }
        free(msg);
    }
out:
    progress_end();
    if (rb.new_b && rb.new_b != rb.prefix)
        image_close(rb.new_b);
    image_close(rb.top);
    return ret ? 1 : 0;
}
