/* The engines that carry `qimg bench`'s requests (bench.c decides what is sent when, as
 * qemu's bench_cb; an engine only executes and reports completions, in completion order).
 *   block    every request through the block layer (image_read/image_write/image_flush),
 *            executed at submission, one at a time (the drivers keep one state, as qemu's
 *            qcow2 keeps its s->lock; qimg holds it for the data I/O too), completions
 *            reported in submission order: qcow2, qed, vdi, a probed raw image (its sector 0
 *            write check), and raw without liburing/threads;
 *   threads  raw images: up to 64 worker threads (qemu's thread pool size) doing pread/
 *            pwrite/fdatasync on the image file, DEPTH requests really in flight;
 *   io_uring raw images with -n or -i io_uring: one ring of DEPTH entries (liburing); a
 *            kernel that refuses io_uring makes -n fall back to threads (qemu's native AIO
 *            would be Linux AIO), while -i io_uring fails as qemu's does.
 * The raw engines do what the raw driver does (the request checked against the virtual
 * size first: a request past it completes with -EIO as qemu's blk_check_byte_request). */
#ifndef QIMG_CMD_BENCH_IO_H
#define QIMG_CMD_BENCH_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/image.h"

enum bench_aio { BENCH_AIO_THREADS, BENCH_AIO_NATIVE, BENCH_AIO_IO_URING };
/* which callback a completion goes to: bench_cb, or bench_undrained_flush_cb */
enum bench_cb { BENCH_CB_STEP, BENCH_CB_FLUSH };

struct bench_opts {
    enum bench_aio aio;
    bool direct;         /* cache=none/directsync: accepted, the page cache is still used */
    bool writethrough;   /* each write made stable before it completes */
    bool no_flush;       /* cache=unsafe: flushes do nothing */
    int depth;
    size_t bufsize;
    uint8_t pattern;
};

struct bench_done {
    enum bench_cb cb;
    int ret;             /* 0 or -errno */
};

struct bench_io;

/* Was qimg built with liburing (else -i io_uring is an unknown aio mode, as in a qemu
 * built without it). */
bool bench_io_have_uring(void);

/* NULL with *msg (qemu's text after the command's prefix) if the engine cannot start. */
struct bench_io *bench_io_open(image_t *img, const struct bench_opts *o, char **msg);
/* A read or write (of the pattern) of bufsize bytes at off; completes as BENCH_CB_STEP. */
void bench_io_submit(struct bench_io *io, bool write, uint64_t off);
void bench_io_flush(struct bench_io *io, enum bench_cb cb);
/* Blocks until a completion is there (one must be pending). */
void bench_io_wait(struct bench_io *io, struct bench_done *d);
bool bench_io_pending(const struct bench_io *io);
void bench_io_close(struct bench_io *io);

#endif
