/* `qimg commit`: qemu-img 7.2's img_commit. The data of the image and of the layers down to
 * BASE (default: the image's backing file; -b implies -d) is copied into BASE the way
 * qemu's active commit job (a mirror job, block/mirror.c) copies it: BASE grown to the
 * image's length when shorter; a dirty bitmap at qemu's default granularity (BASE's
 * cluster size within 4 KiB..64 KiB) marked where any layer above BASE allocates; then in
 * offset order, batches of up to 16 MiB of dirty granules, each run copied (data, at most
 * 1 MiB at once), written as zeros or discarded as the chain's block status says. Then,
 * unless -d, the image is emptied (block/make_empty.h; formats without it keep their data,
 * as qemu's -ENOTSUP is ignored). The images between keep their bytes, as qemu leaves them.
 *
 * --dry-run / --journal (cmd/ported.h) plan the writes of both files: the dry run prints
 * both plans; --journal FILE journals the image in FILE and BASE in FILE.base, applied
 * BASE first (undo: `qimg undo FILE IMAGE` and `qimg undo FILE.base BASE`). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/backing_change.h"
#include "block/blockspec.h"
#include "block/image.h"
#include "block/make_empty.h"
#include "cmd/commands.h"
#include "cmd/ported.h"
#include "util/cache.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/opts.h"
#include "util/progress.h"
#include "util/size.h"
#include "util/xalloc.h"

#define MIRROR_BUF_SIZE (16u << 20)  /* qemu's DEFAULT_MIRROR_BUF_SIZE */
#define MAX_IO_BYTES (1u << 20)      /* qemu's MAX_IO_BYTES (buf_size / MAX_IN_FLIGHT too) */

enum { OPT_DRY_RUN = OPT_CMD, OPT_JOURNAL };

static void help(void)
{
    printf("usage: %s commit [--object OBJ] [--image-opts] [-f FMT] [-b BASE] [-d] [-p] [-q]"
           " [-r RATE] [-t CACHE] [--dry-run] [--journal FILE] FILE\n", qimg_progname);
}

/* qemu's bdrv_get_default_bitmap_granularity of the target. */
static uint64_t granularity(const image_t *base)
{
    uint64_t g = base->cluster_size ? base->cluster_size : 65536;
    return g < 4096 ? 4096 : g > 65536 ? 65536 : g;
}

struct job {
    image_t *top, *base;   /* base: the layer in top's chain (read side) */
    image_t *bw;           /* where base's writes go */
    uint64_t g, done, total;
    char *err;             /* qemu's error text */
};

static void job_progress(struct job *j)
{
    progress_print(j->total ? (float)j->done / (float)j->total * 100.f : 0.f, 0);
}

/* One run of mirror_iteration: the method for [off, off+len) and its length. */
static int mirror_perform(struct job *j, uint64_t off, uint64_t *len, uint8_t *buf)
{
    uint64_t size = j->top->size;
    block_status_t st;
    int r = image_block_status_above(j->top, NULL, off, *len, &st);
    uint64_t io = *len;
    enum { COPY, ZERO, DISCARD } method = COPY;
    if (r == 0) {
        io = st.pnum;
        if (st.flags & BS_DATA)
            io = io < MAX_IO_BYTES ? io : MAX_IO_BYTES;
    } else {
        io = io < MAX_IO_BYTES ? io : MAX_IO_BYTES;
    }
    io -= io % j->g;
    if (io < j->g) {
        io = j->g;
    } else if (r == 0 && !(st.flags & BS_DATA)) {
        uint64_t bc = j->bw->cluster_size;   /* bdrv_round_to_clusters: aligned as it is? */
        if (!bc || (off % bc == 0 && io % bc == 0))
            method = (st.flags & BS_ZERO) ? ZERO : DISCARD;
    }
    if (io > size - off)
        io = size - off;   /* mirror_clip_bytes */
    if (method == COPY) {
        if ((r = image_read(j->top, off, buf, (size_t)io)) < 0)
            return r;
        r = image_write(j->bw, off, buf, (size_t)io);
    } else if (method == ZERO) {
        r = image_write_zeroes(j->bw, off, io, true);
    } else {
        r = image_discard(j->bw, off, io);
    }
    *len = io;
    return r;
}

/* qemu's dirty bitmap of the job, computed as it is asked instead of stored (memory stays
 * bounded for any virtual size): granule c is dirty when a layer above base allocates any
 * byte of it (mirror_dirty_init). The copy writes only into base, below those layers, so
 * the answer does not change while the job runs. */
struct dscan {
    struct job *j;
    uint64_t rs, re;       /* the cached status run [rs, re) */
    bool alloc;
};

static int dscan_at(struct dscan *d, uint64_t off)
{
    if (off >= d->rs && off < d->re)
        return 0;
    uint64_t size = d->j->top->size, step = (0x7fffffffu / d->j->g) * d->j->g;
    block_status_t st;
    int r = image_block_status_above(d->j->top, d->j->base, off,
                                     size - off < step ? size - off : step, &st);
    if (r < 0)
        return r;
    if (st.pnum == 0)
        return -EIO;   /* no progress: never loop */
    d->rs = off;
    d->re = off + st.pnum;
    d->alloc = (st.flags & BS_ALLOCATED) != 0;
    return 0;
}

/* The first dirty granule at or after *c (nch when none). 0 or -errno. */
static int dscan_next(struct dscan *d, uint64_t *c, uint64_t nch)
{
    uint64_t g = d->j->g, size = d->j->top->size;
    for (; *c < nch;) {
        uint64_t p = *c * g, end = p + g < size ? p + g : size;
        while (p < end) {
            int r = dscan_at(d, p);
            if (r < 0)
                return r;
            if (d->alloc)
                return 0;
            p = d->re;
        }
        /* everything up to re is clean: skip to the granule holding it */
        uint64_t k = d->re / g;
        *c = k > *c ? k : *c + 1;
    }
    return 0;
}

/* The commit job (mirror_run for an active commit). 0 or -errno (j->err maybe set). */
static int run_job(struct job *j)
{
    uint64_t size = j->top->size;
    int r;
    if (j->bw->size < size) {
        char *msg = NULL;
        r = image_truncate(j->bw, size, IMG_PREALLOC_OFF, &msg);
        if (r < 0) {
            j->err = msg;
            return r;
        }
    }
    uint64_t g = j->g, nch = (size + g - 1) / g;
    struct dscan d = { .j = j };
    /* the job's length: every dirty granule (job_progress_set_remaining) */
    for (uint64_t c = 0;; c++) {
        if ((r = dscan_next(&d, &c, nch)) < 0)
            return r;
        if (c >= nch)
            break;
        j->total += g;
    }
    uint8_t *buf = xmalloc(MAX_IO_BYTES > 65536 ? MAX_IO_BYTES : 65536);
    for (uint64_t c = 0;;) {
        if ((r = dscan_next(&d, &c, nch)) < 0)
            goto out;
        if (c >= nch)
            break;
        /* mirror_iteration: the dirty granules that follow, up to the buffer size */
        uint64_t nb = 1;
        while (nb * g < MIRROR_BUF_SIZE && c + nb < nch) {
            uint64_t k = c + nb;
            if ((r = dscan_next(&d, &k, nch)) < 0)
                goto out;
            if (k != c + nb)
                break;
            nb++;
        }
        uint64_t off = c * g;
        c += nb;
        while (nb > 0 && off < size) {
            uint64_t len = nb * g;
            if (len > size - off)
                len = size - off;
            if ((r = mirror_perform(j, off, &len, buf)) < 0)
                goto out;
            off += len;
            uint64_t used = (len + g - 1) / g;
            nb = used < nb ? nb - used : 0;
            j->done += used * g;
            job_progress(j);
        }
    }
    r = image_flush(j->bw);
out:
    free(buf);
    return r;
}

/* The base layer of top's chain reopened read-write in place (qemu's
 * bdrv_reopen_set_read_only(base, false)). 0, or -1 after the message. */
static int reopen_rw(image_t *top, image_t *base, image_t **out)
{
    image_t *prev = top;
    while (prev->backing != base)
        prev = prev->backing;
    image_t *below = base->backing;
    base->backing = NULL;
    /* qemu reopens the same node: the name the base was opened by (the overlay's backing
     * name, a json: one with a blkdebug filter and its rules included), else the name it
     * shows ("blkdebug:CONF:FILE" keeps its filter) */
    char *name = xstrdup(prev->backing_full && !prev->backing_opts ? prev->backing_full
                                                                    : image_name(base));
    const char *fmt = base->format;   /* a driver's static name */
    /* an encrypted base keeps its key (qemu reopens the same node, options and all) */
    struct bspec kopts = { 0 };
    if (base->key_secret)
        bspec_put_str(&kopts, strcmp(fmt, "luks") ? "encrypt.key-secret" : "key-secret",
                      base->key_secret, true);
    image_close(base);
    prev->backing = NULL;
    char *msg = NULL;
    image_t *nb;
    int r = image_open_opts(name, &kopts, fmt, IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, &nb, &msg);
    bspec_free(&kopts);
    if (r < 0) {
        /* a reopen's error has no "Could not open 'F': " (e.g. the base's write lock) */
        char *pre = xasprintf("Could not open '%s': ", name);
        size_t pl = strlen(pre);
        err_report("%s", strncmp(msg, pre, pl) ? msg : msg + pl);
        free(pre);
        free(msg);
        free(name);
        image_close(below);
        return -1;
    }
    free(name);
    nb->backing = below;
    prev->backing = nb;
    *out = nb;
    return 0;
}

int cmd_commit(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, 0, 'h' },
        { "object", required_argument, 0, OPT_OBJECT },
        { "image-opts", no_argument, 0, OPT_IMAGE_OPTS },
        { "dry-run", no_argument, 0, OPT_DRY_RUN },
        { "journal", required_argument, 0, OPT_JOURNAL },
        { 0, 0, 0, 0 },
    };
    const char *fmt = NULL, *cache = NULL, *base_name = NULL, *journal = NULL;
    bool progress = false, quiet = false, drop = false, dry_run = false, image_opts = false;
    int c;
    opts_start();
    while ((c = opts_next(argc, argv, ":f:ht:b:dpqr:", longopts, help)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 't': cache = optarg; break;
        case 'b': base_name = optarg; drop = true; break;   /* -b implies -d */
        case 'd': drop = true; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 'r': {
            int64_t rate;
            if (cvtnum("rate limit", optarg, &rate) < 0)
                return 1;
            break;
        }   /* a rate only slows the copy down: accepted, not applied */
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
    const char *filename = argv[optind];
    if (!ported_modes_ok(dry_run, journal))
        return 1;
    if (cache && !cache_mode_valid(cache)) {
        err_report("Invalid cache option: %s", cache);
        return 1;
    }
    bool ported = dry_run || journal;
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        return 1;
    image_t *top = image_open_or_report(filename, fmt, (ported ? IMG_OPEN_SHARE : IMG_OPEN_RDWR) |
                                                       (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    if (!top)
        return 1;
    /* the plan and the journal name the top's file, not an option list */
    const char *top_file = image_opts || blockspec_has_protocol(filename) ? top->filename
                                                                          : filename;
    progress_init(progress, 1.f);
    progress_print(0.f, 100);
    struct job j = { .top = top };
    char *err = NULL;
    struct ported pt_top, pt_base;
    bool have_top = false, have_base = false;
    image_t *tw = top;
    int r = 0;
    if (base_name) {
        j.base = image_find_backing_image(top, base_name);
        if (!j.base)
            err = xasprintf("Did not find '%s' in the backing chain of '%s'", base_name,
                            filename);
    } else {
        j.base = top->backing;
        if (!j.base)
            err = xstrdup("Image does not have a backing file");
    }
    if (err)
        goto done;
    char *base_file = xstrdup(j.base->filename);
    if (ported) {
        if ((r = ported_open(&pt_base, j.base, base_file, &j.bw, &err)) < 0)
            goto done_free;
        have_base = true;
        if (!drop) {
            if ((r = ported_open(&pt_top, top, top_file, &tw, &err)) < 0)
                goto done_free;
            have_top = true;
        }
    } else if (reopen_rw(top, j.base, &j.bw) < 0) {
        r = -1;
        goto done_free;
    } else {
        j.base = j.bw;
    }
    j.g = granularity(j.bw);
    if ((r = run_job(&j)) < 0) {
        /* run_block_job: a job that failed is "Block job failed: <errno text>" */
        err = j.err ? j.err : xasprintf("Block job failed: %s", strerror(-r));
        j.err = NULL;
        goto done_free;
    }
    progress_print(100.f, 0);
    if (!drop) {
        r = image_make_empty(tw);
        if (r == -ENOTSUP) {
            r = 0;
        } else if (r < 0) { /* bdrv_make_empty's message names bs->filename */
            err = xasprintf("Failed to empty %s: %s",
                            image_name(top),
                            strerror(-r));
            goto done_free;
        }
    }
done_free:
    for (int k = 0; k < 2; k++) {
        if (!(k == 0 ? have_base : have_top))
            continue;
        bool ok = r == 0 && !err;
        char *jn = journal && k == 0 ? xasprintf("%s.base", journal) : NULL;
        char *m = NULL;
        int r2 = ported_finish(k == 0 ? &pt_base : &pt_top, k == 0 ? base_file : top_file, ok,
                               dry_run, k == 0 ? jn : journal, "Commit", &m);
        free(jn);
        if (r2 < 0 && ok) {
            r = r2;
            err = m;   /* NULL: the journal printed why */
            m = NULL;
        }
        free(m);
    }
    free(base_file);
done:
    progress_end();
    image_close(top);
    if (err || r < 0) {
        if (err)
            err_report("%s", err);
        free(err);
        return 1;
    }
    if (!quiet && !dry_run)
        printf("Image committed.\n");
    return 0;
}
