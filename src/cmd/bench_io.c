/* bench's request engines (see bench_io.h). */
#include "cmd/bench_io.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#ifdef QIMG_HAVE_LIBURING
#include <liburing.h>
#endif

#include "util/xalloc.h"

enum mode { MODE_BLOCK, MODE_THREADS, MODE_URING };
enum kind { K_READ, K_WRITE, K_FLUSH };

/* qemu's thread pool has at most 64 workers */
#define MAX_WORKERS 64

struct req {
    enum kind kind;
    enum bench_cb cb;
    uint64_t off;
};

/* A growable FIFO of fixed-size items. */
struct fifo {
    char *v;
    size_t item, head, n, cap;
};

static void fifo_push(struct fifo *f, const void *x)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        char *v = xmalloc(cap * f->item);
        for (size_t i = 0; i < f->n; i++)
            memcpy(v + i * f->item, f->v + ((f->head + i) % f->cap) * f->item, f->item);
        free(f->v);
        f->v = v, f->cap = cap, f->head = 0;
    }
    memcpy(f->v + ((f->head + f->n) % f->cap) * f->item, x, f->item);
    f->n++;
}

static void fifo_pop(struct fifo *f, void *x)
{
    memcpy(x, f->v + f->head * f->item, f->item);
    f->head = (f->head + 1) % f->cap;
    f->n--;
}

struct bench_io {
    enum mode mode;
    image_t *img;
    struct bench_opts o;
    uint8_t *buf;          /* every request's buffer (qemu passes qiov[0] to all) */
    int fd;                /* raw engines: the image file */
    size_t pending;        /* submitted, not yet returned by bench_io_wait */
    struct fifo done;      /* completions not yet returned */
    /* bdrv_co_flush's generations: writes completed, and as of the last flush; a flush
     * with no write completed since the last one does nothing (so undrained flushes
     * issued together cost one fdatasync, as in qemu) */
    uint64_t write_gen, flushed_gen;
    pthread_mutex_t flush_mu;   /* threads: one flush at a time (active_flush_req) */
    /* threads */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    struct fifo work;
    pthread_t th[MAX_WORKERS];
    int nthreads;
    bool stop;
#ifdef QIMG_HAVE_LIBURING
    struct io_uring ring;
    size_t unsubmitted;
    struct fifo flushq;         /* flushes waiting for the one in flight */
    bool flushing;
#endif
};

bool bench_io_have_uring(void)
{
#ifdef QIMG_HAVE_LIBURING
    return true;
#else
    return false;
#endif
}

/* ---- block layer -------------------------------------------------------------------- */

static int block_do(struct bench_io *io, const struct req *r)
{
    int ret;
    switch (r->kind) {
    case K_FLUSH:
        return io->o.no_flush ? 0 : image_flush(io->img);
    case K_READ:
        if ((ret = image_check_request(io->img, r->off, io->o.bufsize)) < 0)
            return ret;
        return image_read(io->img, r->off, io->buf, io->o.bufsize);
    case K_WRITE:
        ret = image_write(io->img, r->off, io->buf, io->o.bufsize);
        if (ret == 0 && io->o.writethrough && !io->o.no_flush)
            ret = image_flush(io->img);
        return ret;
    }
    return -EINVAL;
}

/* ---- raw file ------------------------------------------------------------------------ */

static int raw_flush(struct bench_io *io)
{
    if (io->o.no_flush)
        return 0;
    uint64_t cur = __atomic_load_n(&io->write_gen, __ATOMIC_SEQ_CST);
    int r = 0;
    pthread_mutex_lock(&io->flush_mu);
    if (io->flushed_gen != cur) {
        r = fdatasync(io->fd) < 0 ? -errno : 0;
        if (r == 0)
            io->flushed_gen = cur;
    }
    pthread_mutex_unlock(&io->flush_mu);
    return r;
}

/* the raw driver's read/write, straight on the file (a read past its end gives zeros) */
static int raw_rw(struct bench_io *io, bool write, uint64_t off, uint8_t *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = write ? pwrite(io->fd, buf, n, (off_t)off) : pread(io->fd, buf, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0) {
            if (write)
                return -EIO;
            memset(buf, 0, n);
            break;
        }
        buf += k, off += (uint64_t)k, n -= (size_t)k;
    }
    return 0;
}

static int raw_do(struct bench_io *io, const struct req *r)
{
    if (r->kind == K_FLUSH)
        return raw_flush(io);
    int ret = image_check_request(io->img, r->off, io->o.bufsize);
    if (ret < 0)
        return ret;
    ret = raw_rw(io, r->kind == K_WRITE, r->off, io->buf, io->o.bufsize);
    if (r->kind == K_WRITE) {
        __atomic_add_fetch(&io->write_gen, 1, __ATOMIC_SEQ_CST);
        if (ret == 0 && io->o.writethrough)
            ret = raw_flush(io);
    }
    return ret;
}

/* ---- threads ------------------------------------------------------------------------- */

static void *worker(void *arg)
{
    struct bench_io *io = arg;
    pthread_mutex_lock(&io->mu);
    for (;;) {
        while (!io->stop && io->work.n == 0)
            pthread_cond_wait(&io->work_cv, &io->mu);
        if (io->work.n == 0)
            break;
        struct req r;
        fifo_pop(&io->work, &r);
        pthread_mutex_unlock(&io->mu);
        struct bench_done d = { r.cb, raw_do(io, &r) };
        pthread_mutex_lock(&io->mu);
        fifo_push(&io->done, &d);
        pthread_cond_signal(&io->done_cv);
    }
    pthread_mutex_unlock(&io->mu);
    return NULL;
}

static bool threads_start(struct bench_io *io)
{
    int n = io->o.depth < MAX_WORKERS ? io->o.depth : MAX_WORKERS;
    if (n < 1)
        n = 1;
    pthread_mutex_init(&io->mu, NULL);
    pthread_cond_init(&io->work_cv, NULL);
    pthread_cond_init(&io->done_cv, NULL);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&io->th[i], NULL, worker, io) != 0)
            break;
        io->nthreads++;
    }
    return io->nthreads > 0;
}

/* ---- io_uring ------------------------------------------------------------------------ */

#ifdef QIMG_HAVE_LIBURING
static bool uring_start(struct bench_io *io, int *err)
{
    unsigned entries = 8;
    while (entries < (unsigned)io->o.depth * 2u && entries < 4096)
        entries *= 2;
    int r = io_uring_queue_init(entries, &io->ring, 0);
    *err = r;
    return r == 0;
}

static struct io_uring_sqe *uring_sqe(struct bench_io *io);

/* The next waiting flush: done at once if no write completed since the last flush, else
 * an fsync in the ring (one at a time, as bdrv_co_flush's active_flush_req). */
static void uring_next_flush(struct bench_io *io)
{
    while (!io->flushing && io->flushq.n > 0) {
        struct req r;
        fifo_pop(&io->flushq, &r);
        if (io->flushed_gen == r.off) {
            struct bench_done d = { r.cb, 0 };
            fifo_push(&io->done, &d);
            continue;
        }
        struct io_uring_sqe *sqe = uring_sqe(io);
        struct req *q = xmalloc(sizeof(*q));
        *q = r;
        io_uring_prep_fsync(sqe, io->fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data(sqe, q);
        io->unsubmitted++;
        io->flushing = true;
    }
}

/* One completion of the ring into io->done (blocking). */
static void uring_reap(struct bench_io *io)
{
    struct io_uring_cqe *cqe;
    if (io->unsubmitted) {
        io_uring_submit(&io->ring);
        io->unsubmitted = 0;
    }
    int r;
    while ((r = io_uring_wait_cqe(&io->ring, &cqe)) == -EINTR)
        ;
    if (r < 0) {
        struct bench_done d = { BENCH_CB_STEP, r };
        fifo_push(&io->done, &d);
        return;
    }
    struct req *q = io_uring_cqe_get_data(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&io->ring, cqe);
    struct bench_done d = { q->cb, 0 };
    if (q->kind == K_FLUSH) {
        d.ret = res < 0 ? res : 0;
        if (res >= 0)
            io->flushed_gen = q->off;   /* a flush's req carries its generation */
        io->flushing = false;
        free(q);
        fifo_push(&io->done, &d);
        uring_next_flush(io);
        return;
    }
    if (q->kind == K_WRITE)
        io->write_gen++;
    if (res < 0) {
        d.ret = res;
    } else if ((size_t)res < io->o.bufsize) {
        /* a short transfer: the rest as the raw driver would (zeros past EOF) */
        d.ret = raw_rw(io, q->kind == K_WRITE, q->off + (uint64_t)res, io->buf + res,
                       io->o.bufsize - (size_t)res);
        if (d.ret == 0 && q->kind == K_WRITE && io->o.writethrough)
            d.ret = raw_flush(io);
    }
    free(q);
    fifo_push(&io->done, &d);
}

/* A free submission entry, submitting and reaping to make room. */
static struct io_uring_sqe *uring_sqe(struct bench_io *io)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&io->ring))) {
        io_uring_submit(&io->ring);
        io->unsubmitted = 0;
        if ((sqe = io_uring_get_sqe(&io->ring)))
            break;
        uring_reap(io);
    }
    return sqe;
}

static void uring_submit(struct bench_io *io, const struct req *r)
{
    if (r->kind == K_FLUSH) {
        if (io->o.no_flush) {
            struct bench_done d = { r->cb, 0 };
            fifo_push(&io->done, &d);
            return;
        }
        struct req f = *r;
        f.off = io->write_gen;   /* bdrv_co_flush's current_gen */
        fifo_push(&io->flushq, &f);
        uring_next_flush(io);
        return;
    }
    int ret = image_check_request(io->img, r->off, io->o.bufsize);
    if (ret < 0) {
        struct bench_done d = { r->cb, ret };
        fifo_push(&io->done, &d);
        return;
    }
    struct io_uring_sqe *sqe = uring_sqe(io);
    struct req *q = xmalloc(sizeof(*q));
    *q = *r;
    if (r->kind == K_WRITE) {
        io_uring_prep_write(sqe, io->fd, io->buf, (unsigned)io->o.bufsize, r->off);
        if (io->o.writethrough)
            sqe->rw_flags = RWF_DSYNC;
    } else {
        io_uring_prep_read(sqe, io->fd, io->buf, (unsigned)io->o.bufsize, r->off);
    }
    io_uring_sqe_set_data(sqe, q);
    io->unsubmitted++;
}
#endif

/* ---- the engine ---------------------------------------------------------------------- */

struct bench_io *bench_io_open(image_t *img, const struct bench_opts *o, char **msg)
{
    struct bench_io *io = xcalloc(1, sizeof(*io));
    io->img = img;
    io->o = *o;
    io->done.item = sizeof(struct bench_done);
    io->work.item = sizeof(struct req);
    pthread_mutex_init(&io->flush_mu, NULL);
#ifdef QIMG_HAVE_LIBURING
    io->flushq.item = sizeof(struct req);
#endif
    io->buf = xmalloc(o->bufsize ? o->bufsize : 1);
    memset(io->buf, o->pattern, o->bufsize);
    io->fd = img->file ? img->file->fd : -1;
    bool raw = !strcmp(img->format, "raw") && !img->probed && io->fd >= 0 &&
               img->data_file == img->file && o->bufsize > 0;
    io->mode = MODE_BLOCK;
    (void)msg;   /* set only when io_uring is built in and refused */
    if (raw && o->aio != BENCH_AIO_THREADS) {
#ifdef QIMG_HAVE_LIBURING
        int err;
        if (uring_start(io, &err)) {
            io->mode = MODE_URING;
        } else if (o->aio == BENCH_AIO_IO_URING) {
            /* file-posix: "Unable to use io_uring: failed to init linux io_uring ring" */
            *msg = xasprintf("Could not open '%s': Unable to use io_uring: failed to init "
                             "linux io_uring ring: %s", img->filename, strerror(-err));
            free(io->buf);
            free(io);
            return NULL;
        }
#endif
    }
    if (raw && io->mode == MODE_BLOCK && threads_start(io))
        io->mode = MODE_THREADS;
    return io;
}

static void submit(struct bench_io *io, const struct req *r)
{
    io->pending++;
    switch (io->mode) {
    case MODE_BLOCK: {
        struct bench_done d = { r->cb, block_do(io, r) };
        fifo_push(&io->done, &d);
        break;
    }
    case MODE_THREADS:
        pthread_mutex_lock(&io->mu);
        fifo_push(&io->work, r);
        pthread_cond_signal(&io->work_cv);
        pthread_mutex_unlock(&io->mu);
        break;
    case MODE_URING:
#ifdef QIMG_HAVE_LIBURING
        uring_submit(io, r);
#endif
        break;
    }
}

void bench_io_submit(struct bench_io *io, bool write, uint64_t off)
{
    struct req r = { write ? K_WRITE : K_READ, BENCH_CB_STEP, off };
    submit(io, &r);
}

void bench_io_flush(struct bench_io *io, enum bench_cb cb)
{
    struct req r = { K_FLUSH, cb, 0 };
    submit(io, &r);
}

void bench_io_wait(struct bench_io *io, struct bench_done *d)
{
    switch (io->mode) {
    case MODE_BLOCK:
        break;
    case MODE_THREADS:
        pthread_mutex_lock(&io->mu);
        while (io->done.n == 0)
            pthread_cond_wait(&io->done_cv, &io->mu);
        fifo_pop(&io->done, d);
        pthread_mutex_unlock(&io->mu);
        io->pending--;
        return;
    case MODE_URING:
#ifdef QIMG_HAVE_LIBURING
        if (io->done.n == 0)
            uring_reap(io);
#endif
        break;
    }
    fifo_pop(&io->done, d);
    io->pending--;
}

bool bench_io_pending(const struct bench_io *io)
{
    return io->pending > 0;
}

void bench_io_close(struct bench_io *io)
{
    if (!io)
        return;
    if (io->mode == MODE_THREADS) {
        pthread_mutex_lock(&io->mu);
        io->stop = true;
        pthread_cond_broadcast(&io->work_cv);
        pthread_mutex_unlock(&io->mu);
        for (int i = 0; i < io->nthreads; i++)
            pthread_join(io->th[i], NULL);
    }
#ifdef QIMG_HAVE_LIBURING
    if (io->mode == MODE_URING)
        io_uring_queue_exit(&io->ring);
#endif
    free(io->done.v);
    free(io->work.v);
#ifdef QIMG_HAVE_LIBURING
    free(io->flushq.v);
#endif
    free(io->buf);
    free(io);
}
