/* qio backend on a byte buffer: lets the checker, repair and read path run in fuzz targets
 * and unit tests without touching the disk. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/qio.h"
#include "util/xalloc.h"

static int mem_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    size_t have = 0;
    if (off < q->mem_len) {
        have = q->mem_len - (size_t)off;
        if (have > n)
            have = n;
        memcpy(buf, q->mem + off, have);
    }
    memset((unsigned char *)buf + have, 0, n - have);
    return 0;
}

static int mem_grow(qio_t *q, uint64_t len)
{
    if (len > q->mem_max)
        return -EFBIG;
    if (len > q->mem_cap) {
        size_t cap = q->mem_cap ? q->mem_cap : 4096;
        while (cap < len)
            cap *= 2;
        if (cap > q->mem_max)
            cap = q->mem_max;
        q->mem = xreallocarray(q->mem, cap, 1);
        q->mem_cap = cap;
    }
    if (len > q->mem_len) {
        memset(q->mem + q->mem_len, 0, (size_t)len - q->mem_len);
        q->mem_len = (size_t)len;
    }
    return 0;
}

static int mem_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    if (q->writes_left > 0 && --q->writes_left == 0)
        return -EIO;
    int r = mem_grow(q, off + n);
    if (r < 0)
        return r;
    memcpy(q->mem + off, buf, n);
    return 0;
}

static int mem_size(qio_t *q, uint64_t *out)
{
    *out = q->mem_len;
    return 0;
}

static int mem_truncate(qio_t *q, uint64_t size)
{
    if (size <= q->mem_len) {
        q->mem_len = (size_t)size;
        return 0;
    }
    return mem_grow(q, size);
}

static int mem_flush(qio_t *q)
{
    (void)q;
    return 0;
}

static int mem_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    *is_data = off < q->mem_len;
    *len = off < q->mem_len ? q->mem_len - off : 0;
    return 0;
}

static int mem_allocated(qio_t *q, uint64_t *out)
{
    *out = q->mem_len;
    return 0;
}

static void mem_close(qio_t *q)
{
    free(q->mem);
}

static const struct qio_ops mem_ops = {
    .pread = mem_pread,
    .pwrite = mem_pwrite,
    .size = mem_size,
    .truncate = mem_truncate,
    .flush = mem_flush,
    .extent = mem_extent,
    .allocated = mem_allocated,
    .close = mem_close,
};

qio_t *qio_open_mem(const void *data, size_t len, bool writable, size_t max_len)
{
    qio_t *q = xcalloc(1, sizeof(*q));
    q->ops = &mem_ops;
    q->fd = -1;
    q->path = xstrdup("<memory>");
    q->writable = writable;
    q->mem_max = max_len < len ? len : max_len;
    q->mem = xmalloc(len ? len : 1);
    if (len)
        memcpy(q->mem, data, len);
    q->mem_len = q->mem_cap = len;
    return q;
}
