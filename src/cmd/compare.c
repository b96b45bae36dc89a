/* qimg compare: qemu-img's img_compare (digest §6). The step structure is qemu's — block
 * status of both images, then at most 2 MiB per step — so mismatch offsets, strict-mode
 * status words and the progress values are the same. Ranges the metadata settles (both zero,
 * both unallocated) are never read; the rest is compared with one memcmp per step and only
 * on a difference narrowed to qemu's 512-byte piece. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/image.h"
#include "cmd/commands.h"
#include "cmd/compare_fast.h"
#include "util/cache.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/hugebuf.h"
#include "util/opts.h"
#include "util/progress.h"
#include "util/xalloc.h"

#define IO_BUF_SIZE (2u << 20) /* qemu-img's IO_BUF_SIZE: the step size qemu reads in */
#define SECTOR 512

struct cmp {
    bool quiet;
    uint8_t *buf1, *buf2;
    fastcmp_t *fast;
};

static void qprintf(const struct cmp *c, const char *fmt, long long v)
{
    if (!c->quiet)
        printf(fmt, v);
}

static bool is_zero(const uint8_t *p, size_t n)
{
    /* p[0] == 0 and every byte equal to its successor: one optimised memcmp */
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* qemu's find_nonzero(): start of the first 512-byte piece that is not all zero, or -1. */
static int64_t find_nonzero(const uint8_t *p, size_t n)
{
    if (is_zero(p, n))
        return -1;
    for (size_t i = 0; i < n; i += SECTOR)
        if (!is_zero(p + i, n - i < SECTOR ? n - i : SECTOR))
            return (int64_t)i;
    return -1;
}

/* Start of the first differing 512-byte piece (qemu's compare_buffers), or -1. */
static int64_t find_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (memcmp(a, b, n) == 0)
        return -1;
    for (size_t i = 0; i < n; i += SECTOR)
        if (memcmp(a + i, b + i, n - i < SECTOR ? n - i : SECTOR))
            return (int64_t)i;
    return -1;
}

static int read_at(image_t *img, const char *name, uint64_t off, uint8_t *buf, size_t n)
{
    int r = image_read(img, off, buf, n);
    if (r < 0) {
        err_report("Error while reading offset %llu of %s: %s", (unsigned long long)off, name,
                   strerror(-r));
        return 4;
    }
    return 0;
}

/* qemu's check_empty_sectors(): 0 zero, 1 mismatch (printed), 4 read error. */
static int check_empty(struct cmp *c, image_t *img, const char *name, uint64_t off, size_t n)
{
    int r = read_at(img, name, off, c->buf1, n);
    if (r)
        return r;
    int64_t idx = find_nonzero(c->buf1, n);
    if (idx >= 0) {
        qprintf(c, "Content mismatch at offset %lld!\n", (long long)(off + (uint64_t)idx));
        return 1;
    }
    return 0;
}

/* The guest bytes of the run are the file's bytes at st->map (no decompression, no zeros
 * from metadata), so the fast path may read them directly - unless a file acts on the
 * driver's events (blkdebug), or a blkdebug filter sits above img's format: then the read
 * must go through the driver. */
static bool plain_data(const image_t *img, const block_status_t *s)
{
    return !img->top_bd && (s->flags & (BS_DATA | BS_OFFSET_VALID | BS_ZERO)) == (BS_DATA | BS_OFFSET_VALID) &&
           s->file && !s->file->ops->event && !(s->layer && s->layer->file->ops->event);
}

/* One step where both images have data: 0 equal, 1 mismatch (printed), 4 read error.
 * Plain data is first tried on the fast path; whatever it cannot prove equal is redone
 * as qemu does it (image 1 read whole, then image 2, then 512-byte pieces), so the
 * message is qemu's. */
static int compare_data(struct cmp *c, image_t *img1, const char *fn1, const block_status_t *s1,
                        image_t *img2, const char *fn2, const block_status_t *s2,
                        uint64_t off, size_t n)
{
    if (plain_data(img1, s1) && plain_data(img2, s2) &&
        fastcmp_equal(c->fast, s1->file, s1->map, s2->file, s2->map, n))
        return 0;
    int r = read_at(img1, fn1, off, c->buf1, n);
    if (r || (r = read_at(img2, fn2, off, c->buf2, n)))
        return r;
    int64_t d = find_diff(c->buf1, c->buf2, n);
    if (d >= 0) {
        qprintf(c, "Content mismatch at offset %lld!\n", (long long)(off + d));
        return 1;
    }
    return 0;
}

/* check_empty() with the fast path first, as compare_data(). */
static int check_zero(struct cmp *c, image_t *img, const char *fn, const block_status_t *s,
                      uint64_t off, size_t n)
{
    if (plain_data(img, s) && fastcmp_equal(c->fast, s->file, s->map, NULL, 0, n))
        return 0;
    return check_empty(c, img, fn, off, n);
}

static int status_at(image_t *img, const char *name, uint64_t off, block_status_t *st)
{
    xalloc_set_oom_exit(3); /* out of memory while asking: a block-status error */
    int r = image_block_status_above(img, NULL, off, img->size - off, st);
    xalloc_set_oom_exit(4);
    if (r < 0 || st->pnum == 0) {
        err_report("Sector allocation test failed for %s", name);
        return 3;
    }
    return 0;
}

static int run(struct cmp *c, image_t *img1, const char *fn1, image_t *img2, const char *fn2,
               bool strict)
{
    uint64_t size1 = img1->size, size2 = img2->size;
    uint64_t total = size1 < size2 ? size1 : size2;
    uint64_t base = size1 > size2 ? size1 : size2;
    int r;

    progress_print(0, 100);
    if (strict && size1 != size2) {
        qprintf(c, "Strict mode: Image size mismatch!\n", 0);
        return 1;
    }
    uint64_t off = 0;
    while (off < total) {
        block_status_t s1, s2;
        if ((r = status_at(img1, fn1, off, &s1)) || (r = status_at(img2, fn2, off, &s2)))
            return r;
        bool a1 = s1.flags & BS_ALLOCATED, a2 = s2.flags & BS_ALLOCATED;
        uint64_t chunk = s1.pnum < s2.pnum ? s1.pnum : s2.pnum;
        if (strict && s1.flags != s2.flags) {
            qprintf(c, "Strict mode: Offset %lld block status mismatch!\n", (long long)off);
            return 1;
        }
        if ((s1.flags & BS_ZERO) && (s2.flags & BS_ZERO)) {
            /* both read as zeros: equal */
        } else if (a1 == a2) {
            if (a1) {
                if (chunk > IO_BUF_SIZE)
                    chunk = IO_BUF_SIZE;
                if ((r = compare_data(c, img1, fn1, &s1, img2, fn2, &s2, off, chunk)))
                    return r;
            }
        } else {
            if (chunk > IO_BUF_SIZE)
                chunk = IO_BUF_SIZE;
            r = a1 ? check_zero(c, img1, fn1, &s1, off, chunk)
                   : check_zero(c, img2, fn2, &s2, off, chunk);
            if (r)
                return r;
        }
        off += chunk;
        progress_print(((float)chunk / base) * 100, 100);
    }

    if (size1 != size2) {
        image_t *over = size1 > size2 ? img1 : img2;
        const char *fn = size1 > size2 ? fn1 : fn2;
        qprintf(c, "Warning: Image size mismatch!\n", 0);
        while (off < base) {
            block_status_t s;
            if ((r = status_at(over, fn, off, &s)))
                return r;
            uint64_t chunk = s.pnum;
            if ((s.flags & BS_ALLOCATED) && !(s.flags & BS_ZERO)) {
                if (chunk > IO_BUF_SIZE)
                    chunk = IO_BUF_SIZE;
                if ((r = check_zero(c, over, fn, &s, off, chunk)))
                    return r;
            }
            off += chunk;
            progress_print(((float)chunk / base) * 100, 100);
        }
    }
    qprintf(c, "Images are identical.\n", 0);
    return 0;
}

static void help(void)
{
    printf("usage: %s compare [--object OBJ] [--image-opts] [-f FMT] [-F FMT] [-T SRC_CACHE]"
           " [-p] [-q] [-s] [-U] FILENAME1 FILENAME2\n", qimg_progname);
}

int cmd_compare(int argc, char **argv)
{
    static const struct option longopts[] = { OPTS_LONG_COMMON, { 0, 0, 0, 0 } };
    const char *fmt1 = NULL, *fmt2 = NULL, *cache = "writeback";
    bool progress = false, strict = false, share = false, image_opts = false;
    struct cmp c = { 0 };
    int opt;
    opts_start();
    while ((opt = opts_next(argc, argv, ":hf:F:T:pqsU", longopts, help)) != -1) {
        switch (opt) {
        case 'f': fmt1 = optarg; break;
        case 'F': fmt2 = optarg; break;
        case 'T': cache = optarg; break;
        case 'p': progress = true; break;
        case 'q': c.quiet = true; break;
        case 's': strict = true; break;
        case 'U': share = true; break;
        case OPT_OBJECT: /* compare's error exit is 2 (1 means "images differ") */
            if (secrets_add_object(optarg) < 0)
                return 2;
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        }
    }
    if (c.quiet)
        progress = false;
    if (optind != argc - 2)
        err_usage("Expecting two image file names");
    const char *fn1 = argv[optind], *fn2 = argv[optind + 1];

    progress_init(progress, 2.0f);
    int ret = 2;
    image_t *img1 = NULL, *img2 = NULL;
    if (!cache_mode_valid(cache)) {
        err_report("Invalid source cache option: %s", cache);
        goto out;
    }
    /* out of memory must not exit 1, which says "images differ": 2 while opening, 3 in
     * block status, 4 while reading (qemu-img aborts instead) */
    xalloc_set_oom_exit(2);
    int flags = (share ? IMG_OPEN_SHARE : 0) | (image_opts ? IMG_OPEN_IMAGE_OPTS : 0);
    /* qemu-img's img_open() checks --image-opts against each image's format in turn */
    if (blockspec_check_image_opts_fmt(image_opts, fmt1) < 0 ||
        !(img1 = image_open_or_report(fn1, fmt1, flags)) ||
        blockspec_check_image_opts_fmt(image_opts, fmt2) < 0 ||
        !(img2 = image_open_or_report(fn2, fmt2, flags)))
        goto out;
    xalloc_set_oom_exit(4);
    c.buf1 = hugebuf_alloc(IO_BUF_SIZE);
    c.buf2 = hugebuf_alloc(IO_BUF_SIZE);
    c.fast = fastcmp_new();
    ret = run(&c, img1, fn1, img2, fn2, strict);
    fastcmp_free(c.fast);
out:
    progress_end();
    fflush(stdout);
    hugebuf_free(c.buf1, IO_BUF_SIZE);
    hugebuf_free(c.buf2, IO_BUF_SIZE);
    image_close(img2);
    image_close(img1);
    return ret;
}
