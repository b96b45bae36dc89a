/* qemu's null-co / null-aio protocol (block/null.c) as a qio backend. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/nbd.h" /* QIO_ST_* */
#include "io/null.h"
#include "util/xalloc.h"

struct null_state {
    uint64_t size;
    bool read_zeroes;
};

static int null_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    (void)q, (void)off;
    memset(buf, 0, n);
    return 0;
}

static int null_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    (void)q, (void)buf, (void)n, (void)off;
    return 0; /* null_co_pwritev: accepted, dropped */
}

static int null_size(qio_t *q, uint64_t *out)
{
    *out = ((struct null_state *)q->priv)->size;
    return 0;
}

static int null_flush(qio_t *q)
{
    (void)q;
    return 0;
}

static int null_truncate(qio_t *q, uint64_t size)
{
    (void)q, (void)size;
    return -ENOTSUP; /* block/null.c has no truncate */
}

static int null_allocated(qio_t *q, uint64_t *out)
{
    (void)q;
    *out = 0; /* qemu's info: "disk size: 0 B" */
    return 0;
}

/* null_co_block_status: the whole request in one run, ZERO only with read-zeroes */
static int null_status(qio_t *q, uint64_t off, uint64_t bytes, unsigned *st, uint64_t *pnum)
{
    (void)off;
    *st = ((struct null_state *)q->priv)->read_zeroes ? QIO_ST_ZERO : 0;
    *pnum = bytes;
    return 0;
}

static int null_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    uint64_t size = ((struct null_state *)q->priv)->size;
    *is_data = false;
    *len = off < size ? size - off : 0;
    return 0;
}

static void null_close(qio_t *q)
{
    free(q->priv); /* qio_close frees q and its path */
}

static const struct qio_ops null_ops = {
    .pread = null_pread,
    .pwrite = null_pwrite,
    .size = null_size,
    .truncate = null_truncate,
    .flush = null_flush,
    .extent = null_extent,
    .allocated = null_allocated,
    .close = null_close,
    .status = null_status,
};

qio_t *qio_open_null(const char *name, uint64_t size, bool read_zeroes, int flags)
{
    qio_t *q = xcalloc(1, sizeof(*q));
    struct null_state *s = xcalloc(1, sizeof(*s));
    s->size = size;
    s->read_zeroes = read_zeroes;
    q->ops = &null_ops;
    q->priv = s;
    q->fd = -1;
    q->path = xstrdup(name);
    q->writable = flags & QIO_RDWR;
    q->align = 1;
    return q;
}

bool qio_is_null(const qio_t *q)
{
    return q && q->ops == &null_ops;
}
