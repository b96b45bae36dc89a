/* The refblock cache (see refcount.h). */
#include <errno.h>
#include <stdlib.h>

#include "qcow2/refcount.h"
#include "util/xalloc.h"

int qcow2_rb_cache_get(struct qcow2_rb_cache *c, qio_t *q, uint64_t cluster_size,
                       const uint64_t *rt, uint64_t rt_n, uint64_t ti, uint8_t **blk)
{
    *blk = NULL;
    if (ti >= rt_n)
        return 0;
    uint64_t off = rt[ti] & QCOW2_REFT_OFFSET_MASK;
    if (!off)
        return 0;
    if (off & (cluster_size - 1))
        return -EIO;
    uint64_t slots = QCOW2_RB_CACHE_BYTES / cluster_size;
    slots = slots < 1 ? 1 : slots > QCOW2_RB_CACHE_SLOTS ? QCOW2_RB_CACHE_SLOTS : slots;
    unsigned slot = (unsigned)(ti % slots);
    if (!c->buf[slot] || c->off[slot] != off) {
        if (!c->buf[slot])
            c->buf[slot] = xmalloc((size_t)cluster_size);
        int rc = qio_pread(q, c->buf[slot], (size_t)cluster_size, off);
        if (rc < 0) {
            c->off[slot] = 0;
            return rc;
        }
        c->off[slot] = off;
    }
    *blk = c->buf[slot];
    return 0;
}

void qcow2_rb_cache_drop(struct qcow2_rb_cache *c)
{
    for (int i = 0; i < QCOW2_RB_CACHE_SLOTS; i++)
        c->off[i] = 0;
}

void qcow2_rb_cache_free(struct qcow2_rb_cache *c)
{
    for (int i = 0; i < QCOW2_RB_CACHE_SLOTS; i++) {
        free(c->buf[i]);
        c->buf[i] = NULL;
        c->off[i] = 0;
    }
}
