/* The refblock cache (see refcount.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2/alloc.h"
#include "qcow2/refcount.h"
#include "util/xalloc.h"

static inline unsigned rb_slot(uint64_t cluster_size, uint64_t ti)
{
    uint64_t slots = QCOW2_RB_CACHE_BYTES / cluster_size;
    slots = slots < 1 ? 1 : slots > QCOW2_RB_CACHE_SLOTS ? QCOW2_RB_CACHE_SLOTS : slots;
    return (unsigned)(ti % slots);
}

unsigned qcow2_rb_cache_slot(uint64_t cluster_size, uint64_t ti)
{
    return rb_slot(cluster_size, ti);
}

int qcow2_rb_cache_take(struct qcow2_rb_cache *c, qio_t *q, uint64_t cluster_size, uint64_t ti,
                        uint64_t off, bool fresh, uint8_t **blk)
{
    unsigned slot = rb_slot(cluster_size, ti);
    *blk = NULL;
    if (c->buf[slot] && c->off[slot] == off) {
        if (fresh)
            memset(c->buf[slot], 0, (size_t)cluster_size);
        *blk = c->buf[slot];
        return 0;
    }
    /* the slot's block is about to be replaced: a dirty one reaches the file first */
    if (c->buf[slot] && c->off[slot] && c->dirty[slot]) {
        int rc = qcow2_refcount_write_slot(c->owner, slot);
        if (rc < 0)
            return rc;
    }
    if (!c->buf[slot])
        c->buf[slot] = xmalloc((size_t)cluster_size);
    c->dirty[slot] = false;
    if (fresh) {
        memset(c->buf[slot], 0, (size_t)cluster_size);
    } else {
        int rc = qio_pread(q, c->buf[slot], (size_t)cluster_size, off);
        if (rc < 0) {
            c->off[slot] = 0;
            return rc;
        }
    }
    c->off[slot] = off;
    *blk = c->buf[slot];
    return 0;
}

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
    /* the checker's per-cluster path: a hit costs no call */
    unsigned slot = rb_slot(cluster_size, ti);
    if (c->buf[slot] && c->off[slot] == off) {
        *blk = c->buf[slot];
        return 0;
    }
    return qcow2_rb_cache_take(c, q, cluster_size, ti, off, false, blk);
}

void qcow2_rb_cache_drop(struct qcow2_rb_cache *c)
{
    for (int i = 0; i < QCOW2_RB_CACHE_SLOTS; i++)
        if (!c->dirty[i])
            c->off[i] = 0;
}

void qcow2_rb_cache_free(struct qcow2_rb_cache *c)
{
    for (int i = 0; i < QCOW2_RB_CACHE_SLOTS; i++) {
        free(c->buf[i]);
        c->buf[i] = NULL;
        c->off[i] = 0;
        c->dirty[i] = false;
    }
}
