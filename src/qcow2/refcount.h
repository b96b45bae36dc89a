/* Reading stored refcounts (qemu's qcow2_get_refcount), one implementation for the checker,
 * repair and the block driver's metadata-preallocation detection: a direct-mapped cache of
 * refblocks indexed by reftable index. The reftable itself is the caller's (repair's rebuild
 * replaces it), so each lookup passes it in. */
#ifndef QIMG_QCOW2_REFCOUNT_H
#define QIMG_QCOW2_REFCOUNT_H

#include <stdint.h>

#include "format/qcow2_refcount.h"
#include "io/qio.h"

#define QCOW2_RB_CACHE_SLOTS 64
/* at most this much of cached blocks (but always one slot): the checker's cache lives
 * beside the IMRT and the L2 batch, and peak memory stays at qemu's */
#define QCOW2_RB_CACHE_BYTES (2u << 20)

struct qcow2_rb_cache {
    uint8_t *buf[QCOW2_RB_CACHE_SLOTS];
    uint64_t off[QCOW2_RB_CACHE_SLOTS];   /* host offset of the block in buf; 0 = none */
};

/* The refblock for reftable index ti, read through the cache: *blk NULL when ti is past
 * the table's rt_n entries or its entry is 0 (all refcounts 0). -EIO for an unaligned
 * refblock offset (qemu signals corruption; the caller reports it), else 0 or -errno.
 * The block stays valid until the next call; repair patches it to mirror planned writes. */
int qcow2_rb_cache_get(struct qcow2_rb_cache *c, qio_t *q, uint64_t cluster_size,
                       const uint64_t *rt, uint64_t rt_n, uint64_t ti, uint8_t **blk);

/* Forget every cached block (the refcount structures changed under the cache). */
void qcow2_rb_cache_drop(struct qcow2_rb_cache *c);
void qcow2_rb_cache_free(struct qcow2_rb_cache *c);

/* The stored refcount of cluster k (0 when no refblock covers it): 0 or -errno. */
static inline int qcow2_rb_cache_refcount(struct qcow2_rb_cache *c, qio_t *q,
                                          uint64_t cluster_size, unsigned refcount_order,
                                          unsigned refcount_block_bits, const uint64_t *rt,
                                          uint64_t rt_n, uint64_t k, uint64_t *out)
{
    uint8_t *blk;
    *out = 0;
    int rc = qcow2_rb_cache_get(c, q, cluster_size, rt, rt_n, k >> refcount_block_bits, &blk);
    if (rc < 0 || !blk)
        return rc;
    *out = qcow2_refblock_entry(blk, refcount_order,
                                k & ((UINT64_C(1) << refcount_block_bits) - 1));
    return 0;
}

#endif
