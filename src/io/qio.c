#include "io/qio.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int qio_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    if (n == 0)
        return 0;
    if (off > QIO_MAX_LENGTH || n > QIO_MAX_LENGTH - off)
        return -EIO;
    return q->ops->pread(q, buf, n, off);
}

int qio_pread_cb(void *q, void *buf, uint64_t len, uint64_t off)
{
    if (len > SIZE_MAX)
        return -EINVAL;
    return qio_pread(q, buf, (size_t)len, off);
}

int qio_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    if (!q->writable)
        return -EBADF;
    if (off > QIO_MAX_LENGTH || n > QIO_MAX_LENGTH - off)
        return -EIO;
    q->bsc_hi = q->bsc_lo = 0;
    return q->ops->pwrite(q, buf, n, off);
}

int qio_size(qio_t *q, uint64_t *out) { return q->ops->size(q, out); }

int qio_truncate(qio_t *q, uint64_t size)
{
    if (!q->writable)
        return -EBADF;
    q->bsc_hi = q->bsc_lo = 0;
    return q->ops->truncate(q, size);
}

int qio_flush(qio_t *q) { return q->ops->flush(q); }

int qio_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    if (off >= q->bsc_lo && off < q->bsc_hi) {
        *is_data = true;
        *len = q->bsc_hi - off;
        return 0;
    }
    int r = q->ops->extent(q, off, is_data, len);
    if (r == 0 && *is_data && *len > 0) {
        q->bsc_lo = off;
        q->bsc_hi = off + *len;
    }
    return r;
}

int qio_allocated(qio_t *q, uint64_t *out) { return q->ops->allocated(q, out); }

int qio_fallocate(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len)
{
    if (!q->writable)
        return -EBADF;
    if (off > QIO_MAX_LENGTH || len > QIO_MAX_LENGTH - off)
        return -EIO;
    if (!q->ops->fallocate)
        return -ENOTSUP;
    q->bsc_hi = q->bsc_lo = 0;
    return q->ops->fallocate(q, mode, off, len);
}

void qio_event(qio_t *q, int ev)
{
    if (q && q->ops->event)
        q->ops->event(q, ev);
}

void qio_close(qio_t *q)
{
    if (!q)
        return;
    q->ops->close(q);
    free(q->path);
    free(q);
}
