/* `qimg bench`: qemu-img 7.2's img_bench. COUNT requests of SIZE bytes (reads, or with -w
 * writes of the pattern byte) at OFFSET, OFFSET+STEP, ... wrapping at the virtual size, at
 * most DEPTH in flight, with a flush every N requests (--flush-interval, the queue drained
 * first unless --no-drain). The request order, the offsets and the flush points are those of
 * qemu's bench_cb state machine (bench_step below), whatever the engine (bench_io.h) that
 * carries the requests: every request goes through the block layer (so a qcow2 -w bench
 * allocates as qemu's), raw images with DEPTH requests really in flight (worker threads, or
 * io_uring with -n / -i io_uring). A failed request ends the run with qemu's "Failed
 * request: ..." and exit 1, as qemu's callback does. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "block/blockspec.h"
#include "block/image.h"
#include "cmd/bench_io.h"
#include "cmd/commands.h"
#include "util/err.h"
#include "util/opts.h"
#include "util/size.h"
#include "util/xalloc.h"

enum { OPT_FLUSH_INTERVAL = OPT_CMD, OPT_PATTERN, OPT_NO_DRAIN };

static void help(void)
{
    printf("usage: %s bench [--image-opts] [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N]"
           " [-i AIO] [-n] [--no-drain] [-o OFFSET] [--pattern=N] [-q] [-s SIZE] [-S STEP]"
           " [-t CACHE] [-w] [-U] FILENAME\n", qimg_progname);
}

/* qemu_strtoul(s, NULL, 0): leading blanks, an optional sign, base prefix, nothing after;
 * a negative number wraps as strtoul makes it. 0 or -1. */
static int parse_ulong(const char *s, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

/* One bench: qemu's BenchData */
struct bench {
    struct bench_io *io;
    uint64_t image_size;
    bool write;
    int bufsize, step, nrreq, n, flush_interval;
    bool drain_on_flush;
    int in_flight;
    bool in_flush;
    uint64_t offset;
};

/* bench_cb: one completion (or the start, ret 0), then as many submissions as allowed */
static void bench_step(struct bench *b, int ret)
{
    if (ret < 0) {
        err_report("Failed request: %s", strerror(-ret));
        exit(EXIT_FAILURE);
    }
    if (b->in_flush) {
        b->in_flush = false;   /* a drained flush finished: submit again */
    } else if (b->in_flight > 0) {
        int remaining = b->n - b->in_flight;   /* requests not submitted yet */
        b->n--;
        b->in_flight--;
        if (b->flush_interval && remaining % b->flush_interval == 0) {
            if (!b->in_flight || !b->drain_on_flush) {
                if (b->drain_on_flush)
                    b->in_flush = true;
                bench_io_flush(b->io, b->drain_on_flush ? BENCH_CB_STEP : BENCH_CB_FLUSH);
            }
            if (b->drain_on_flush)
                return;
        }
    }
    while (b->n > b->in_flight && b->in_flight < b->nrreq) {
        uint64_t offset = b->offset;
        b->in_flight++;
        b->offset = (b->offset + (uint64_t)b->step) % b->image_size;
        bench_io_submit(b->io, b->write, offset);
    }
}

/* bench_undrained_flush_cb */
static void flush_done(int ret)
{
    if (ret < 0) {
        err_report("Failed flush request: %s", strerror(-ret));
        exit(EXIT_FAILURE);
    }
}

static void dispatch(struct bench *b, const struct bench_done *d)
{
    if (d->cb == BENCH_CB_FLUSH)
        flush_done(d->ret);
    else
        bench_step(b, d->ret);
}

/* Does the file a name (or an --image-opts list) names exist? qemu's aio=native refusal
 * comes once file-posix opened it; a name that does not resolve fails in the open. */
static bool native_file_exists(const char *filename, bool image_opts)
{
    if (!image_opts && !blockspec_has_protocol(filename))
        return access(filename, F_OK) == 0;
    struct bspec kv = { 0 };
    struct bs_resolved res = { 0 };
    char *msg = NULL;
    if (image_opts)
        bspec_parse_keyval(filename, &kv);
    bool ok = blockspec_resolve(image_opts ? NULL : filename, &kv, NULL, true, &res, &msg) == 0 &&
              !res.nbd && res.path && access(res.path, F_OK) == 0;
    free(msg);
    bspec_free(&kv);
    blockspec_resolved_free(&res);
    return ok;
}

int cmd_bench(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, 0, 'h' },
        { "flush-interval", required_argument, 0, OPT_FLUSH_INTERVAL },
        { "image-opts", no_argument, 0, OPT_IMAGE_OPTS },
        { "pattern", required_argument, 0, OPT_PATTERN },
        { "no-drain", no_argument, 0, OPT_NO_DRAIN },
        { "force-share", no_argument, 0, 'U' },
        { 0, 0, 0, 0 },
    };
    const char *fmt = NULL;
    bool is_write = false, force_share = false, drain_on_flush = true, image_opts = false;
    int count = 75000, depth = 64, pattern = 0, flush_interval = 0;
    int64_t offset = 0, bufsize = 4096, step = 0;
    struct bench_opts bo = { .aio = BENCH_AIO_THREADS };
    unsigned long res;
    int c;
    opts_start();
    while ((c = opts_next(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", longopts, help)) != -1) {
        switch (c) {
        case 'c':
            if (parse_ulong(optarg, &res) < 0 || res > INT_MAX) {
                err_report("Invalid request count specified");
                return 1;
            }
            count = (int)res;
            break;
        case 'd':
            if (parse_ulong(optarg, &res) < 0 || res > INT_MAX) {
                err_report("Invalid queue depth specified");
                return 1;
            }
            depth = (int)res;
            break;
        case 'f': fmt = optarg; break;
        case 'n': bo.aio = BENCH_AIO_NATIVE; break;
        case 'i':
            if (!strcmp(optarg, "threads")) {
                bo.aio = BENCH_AIO_THREADS;
            } else if (!strcmp(optarg, "native")) {
                bo.aio = BENCH_AIO_NATIVE;
            } else if (!strcmp(optarg, "io_uring") && bench_io_have_uring()) {
                bo.aio = BENCH_AIO_IO_URING;
            } else {
                err_report("Invalid aio option: %s", optarg);
                return 1;
            }
            break;
        case 'o':
            if (cvtnum("offset", optarg, &offset) < 0)
                return 1;
            break;
        case 'q': break;   /* qemu-img prints the bench lines even then */
        case 's':
            if (cvtnum_full("buffer size", optarg, 0, INT_MAX, &bufsize) < 0)
                return 1;
            break;
        case 'S':
            if (cvtnum_full("step_size", optarg, 0, INT_MAX, &step) < 0)
                return 1;
            break;
        case 't':
            /* bdrv_parse_cache_mode */
            if (!strcmp(optarg, "none") || !strcmp(optarg, "off")) {
                bo.direct = true, bo.writethrough = false, bo.no_flush = false;
            } else if (!strcmp(optarg, "directsync")) {
                bo.direct = true, bo.writethrough = true, bo.no_flush = false;
            } else if (!strcmp(optarg, "writeback")) {
                bo.direct = false, bo.writethrough = false, bo.no_flush = false;
            } else if (!strcmp(optarg, "unsafe")) {
                bo.direct = false, bo.writethrough = false, bo.no_flush = true;
            } else if (!strcmp(optarg, "writethrough")) {
                bo.direct = false, bo.writethrough = true, bo.no_flush = false;
            } else {
                err_report("Invalid cache mode");
                return 1;
            }
            break;
        case 'w': is_write = true; break;
        case 'U': force_share = true; break;
        case OPT_PATTERN:
            if (parse_ulong(optarg, &res) < 0 || res > 0xff) {
                err_report("Invalid pattern byte specified");
                return 1;
            }
            pattern = (int)res;
            break;
        case OPT_FLUSH_INTERVAL:
            if (parse_ulong(optarg, &res) < 0 || res > INT_MAX) {
                err_report("Invalid flush interval specified");
                return 1;
            }
            flush_interval = (int)res;
            break;
        case OPT_NO_DRAIN: drain_on_flush = false; break;
        case OPT_IMAGE_OPTS: image_opts = true; break; /* qemu-img bench has no --object */
        }
    }
    if (optind != argc - 1)
        err_usage("Expecting one image file name");
    const char *filename = argv[argc - 1];
    if (!is_write && flush_interval) {
        err_report("--flush-interval is only available in write tests");
        return 1;
    }
    if (flush_interval && flush_interval < depth) {
        err_report("Flush interval can't be smaller than depth");
        return 1;
    }
    /* qemu-img would wait forever for requests it never sends */
    if (depth == 0 && count > 0) {
        err_report("Invalid queue depth specified");
        return 1;
    }
    /* the checks qemu's open makes before the image is read: force-share, then (once the
     * file opened) aio=native without O_DIRECT */
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        return 1;
    if (force_share && is_write) {
        err_report("Could not open '%s': force-share=on can only be used with read-only "
                   "images", filename);
        return 1;
    }
    if (bo.aio == BENCH_AIO_NATIVE && !bo.direct && native_file_exists(filename, image_opts)) {
        err_report("Could not open '%s': aio=native was specified, but it requires "
                   "cache.direct=on, which was not specified.", filename);
        return 1;
    }
    image_t *img = image_open_or_report(filename, fmt, (is_write ? IMG_OPEN_RDWR : 0) |
                                        (force_share ? IMG_OPEN_SHARE : 0) |
                                        (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    if (!img)
        return 1;

    struct bench b = {
        .image_size = img->size,
        .write = is_write,
        .bufsize = (int)bufsize,
        .step = step ? (int)step : (int)bufsize,
        .nrreq = depth,
        .n = count,
        .offset = (uint64_t)offset,
        .flush_interval = flush_interval,
        .drain_on_flush = drain_on_flush,
    };
    printf("Sending %d %s requests, %d bytes each, %d in parallel "
           "(starting at offset %lld, step size %d)\n", b.n, b.write ? "write" : "read",
           b.bufsize, b.nrreq, (long long)offset, b.step);
    if (flush_interval)
        printf("Sending flush every %d requests\n", flush_interval);
    fflush(stdout);

    char *msg = NULL;
    bo.depth = depth;
    bo.bufsize = (size_t)bufsize;
    bo.pattern = (uint8_t)pattern;
    if (!(b.io = bench_io_open(img, &bo, &msg))) {
        err_report("%s", msg ? msg : "Could not start the requests");
        free(msg);
        image_close(img);
        return 1;
    }
    struct timeval t1, t2;
    gettimeofday(&t1, NULL);
    if (b.image_size == 0 && b.n > 0) {
        /* qemu divides by the size to wrap the offset: a request on an empty image fails */
        err_report("Failed request: %s", strerror(EIO));
        exit(EXIT_FAILURE);
    }
    bench_step(&b, 0);
    while (b.n > 0) {
        struct bench_done d;
        bench_io_wait(b.io, &d);
        dispatch(&b, &d);
    }
    gettimeofday(&t2, NULL);
    printf("Run completed in %3.3f seconds.\n",
           (double)(t2.tv_sec - t1.tv_sec) + (double)(t2.tv_usec - t1.tv_usec) / 1000000);
    fflush(stdout);
    /* blk_unref drains what is still in flight (flushes), their callbacks included */
    struct bench_done d;
    while (bench_io_pending(b.io)) {
        bench_io_wait(b.io, &d);
        dispatch(&b, &d);
    }
    bench_io_close(b.io);
    image_close(img);
    return 0;
}
