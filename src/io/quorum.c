/* qemu's quorum driver (block/quorum.c) for reading: quorum_vote, read_fifo_child,
 * quorum_co_getlength. No writes, no rewrite-corrupted, no QMP events. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/nbd.h" /* QIO_ST_* */
#include "io/quorum.h"
#include "util/xalloc.h"

struct quorum {
    qio_t **child;
    size_t n;
    int threshold;
    bool fifo;
};

static struct quorum *Q(qio_t *q)
{
    return q->priv;
}

/* The most common errno among the failed children (quorum_vote_error; ties go to the one
 * that failed last, as qemu's list puts new versions first). */
static int vote_error(const int *ret, size_t n)
{
    int best = -EIO, best_count = 0;
    for (size_t i = n; i-- > 0;) {
        if (!ret[i])
            continue;
        int c = 0;
        for (size_t j = 0; j < n; j++)
            c += ret[j] == ret[i];
        if (c > best_count) {
            best_count = c;
            best = ret[i];
        }
    }
    return best;
}

static int quorum_pread(qio_t *q, void *buf, size_t len, uint64_t off)
{
    struct quorum *s = Q(q);
    if (s->fifo) { /* read_fifo_child: the next child after a failure */
        int r = -EIO;
        for (size_t i = 0; i < s->n && (i == 0 || r < 0); i++)
            r = qio_pread(s->child[i], buf, len, off);
        return r;
    }
    uint8_t **b = xcalloc(s->n, sizeof(*b));
    int *ret = xcalloc(s->n, sizeof(*ret));
    int ok = 0, r = 0;
    for (size_t i = 0; i < s->n; i++) {
        b[i] = xmalloc(len ? len : 1);
        ret[i] = qio_pread(s->child[i], b[i], len, off);
        ok += ret[i] == 0;
    }
    if (ok < s->threshold) { /* quorum_has_too_much_io_failed */
        r = vote_error(ret, s->n);
        goto out;
    }
    /* quorum_vote: the version with most votes; among equal counts the one first seen
     * last (qemu's vote list is newest first) */
    size_t winner = s->n;
    int max = 0;
    for (size_t i = s->n; i-- > 0;) {
        if (ret[i])
            continue;
        bool first_seen = true; /* is i the first child with this version? */
        for (size_t j = 0; j < i && first_seen; j++)
            first_seen = ret[j] || memcmp(b[j], b[i], len) != 0;
        if (!first_seen)
            continue;
        int c = 0;
        for (size_t j = 0; j < s->n; j++)
            c += !ret[j] && !memcmp(b[j], b[i], len);
        if (c > max) {
            max = c;
            winner = i;
        }
    }
    if (max < s->threshold) {
        r = -EIO;
        goto out;
    }
    memcpy(buf, b[winner], len);
out:
    for (size_t i = 0; i < s->n; i++)
        free(b[i]);
    free(b);
    free(ret);
    return r;
}

static int quorum_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    (void)q, (void)buf, (void)n, (void)off;
    return -EROFS;
}

/* quorum_co_getlength: every child the same length */
static int quorum_size(qio_t *q, uint64_t *out)
{
    struct quorum *s = Q(q);
    int r = qio_size(s->child[0], out);
    for (size_t i = 1; r == 0 && i < s->n; i++) {
        uint64_t v;
        if ((r = qio_size(s->child[i], &v)) == 0 && v != *out)
            r = -EIO;
    }
    return r;
}

static int quorum_truncate(qio_t *q, uint64_t size)
{
    (void)q, (void)size;
    return -ENOTSUP;
}

static int quorum_flush(qio_t *q)
{
    (void)q;
    return 0;
}

/* no block status of its own: qemu's generic answer is data */
static int quorum_status(qio_t *q, uint64_t off, uint64_t bytes, unsigned *st, uint64_t *pnum)
{
    (void)q, (void)off;
    *st = QIO_ST_DATA;
    *pnum = bytes;
    return 0;
}

static int quorum_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    uint64_t size;
    int r = quorum_size(q, &size);
    if (r < 0)
        return r;
    *is_data = true;
    *len = off < size ? size - off : 0;
    return 0;
}

/* bdrv_sum_allocated_file_size: the children's sum */
static int quorum_allocated(qio_t *q, uint64_t *out)
{
    struct quorum *s = Q(q);
    *out = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint64_t a;
        int r = qio_allocated(s->child[i], &a);
        if (r < 0)
            return r;
        *out += a;
    }
    return 0;
}

static void quorum_close(qio_t *q)
{
    struct quorum *s = Q(q);
    for (size_t i = 0; i < s->n; i++)
        qio_close(s->child[i]);
    free(s->child);
    free(s);
}

static const struct qio_ops quorum_ops = {
    .pread = quorum_pread,
    .pwrite = quorum_pwrite,
    .size = quorum_size,
    .truncate = quorum_truncate,
    .flush = quorum_flush,
    .extent = quorum_extent,
    .allocated = quorum_allocated,
    .close = quorum_close,
    .status = quorum_status,
};

qio_t *qio_open_quorum(const char *name, qio_t **children, size_t n, int threshold,
                       bool fifo)
{
    qio_t *q = xcalloc(1, sizeof(*q));
    struct quorum *s = xcalloc(1, sizeof(*s));
    s->child = children;
    s->n = n;
    s->threshold = threshold;
    s->fifo = fifo;
    q->ops = &quorum_ops;
    q->priv = s;
    q->fd = -1;
    q->path = xstrdup(name);
    q->align = 1;
    return q;
}

bool qio_is_quorum(const qio_t *q)
{
    return q && q->ops == &quorum_ops;
}
