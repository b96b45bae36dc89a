/* Reading stored refcounts (qemu's qcow2_get_refcount), one implementation for the checker,
 * repair and the block driver's metadata-preallocation detection: a direct-mapped cache of
 * refblocks indexed by reftable index. The reftable itself is the caller's (repair's rebuild
 * replaces it), so each lookup passes it in.
 *
 * The writer (qcow2/alloc.c) uses the same cache write-back: it marks the slots it changes
 * dirty, and a dirty slot is written through the owner's metadata port before its buffer is
 * reused (qcow2_rb_cache_get/_take) and in qcow2_refcount_flush. Readers never dirty a
 * slot, so for them nothing changes. */
#ifndef QIMG_QCOW2_REFCOUNT_H
#define QIMG_QCOW2_REFCOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include "format/qcow2_refcount.h"
#include "io/qio.h"

#define QCOW2_RB_CACHE_SLOTS 64
/* at most this much of cached blocks (but always one slot): the checker's cache lives
 * beside the IMRT and the L2 batch, and peak memory stays at qemu's */
#define QCOW2_RB_CACHE_BYTES (2u << 20)

struct qcow2_image;

struct qcow2_rb_cache {
    uint8_t *buf[QCOW2_RB_CACHE_SLOTS];
    uint64_t off[QCOW2_RB_CACHE_SLOTS];   /* host offset of the block in buf; 0 = none */
    /* writer only (qcow2/alloc.h): */
    bool dirty[QCOW2_RB_CACHE_SLOTS];     /* buf differs from the file: write before reuse */
    struct qcow2_image *owner;            /* whose port writes the dirty slots */
    /* Write order against the L2 cache (qemu's qcow2_cache_set_dependency), never both:
     * rb_waits_l2  a refcount was decreased: the L2 cache is flushed (l2_flush) before any
     *              refblock is written, so no table still names a cluster counted free;
     * l2_waits_rb  a refcount was increased: the refblocks are flushed
     *              (qcow2_refcount_cache_flush) before any L2 table is written. */
    bool rb_waits_l2, l2_waits_rb;
    /* Hooks of the L2 cache (NULL: none): its qcow2_cache_flush (dirty tables written, then
     * a barrier), and qcow2_cache_discard of a table whose cluster was freed. */
    int (*l2_flush)(struct qcow2_image *m);
    void (*l2_forget)(struct qcow2_image *m, uint64_t off);
};

/* The refblock for reftable index ti, read through the cache: *blk NULL when ti is past
 * the table's rt_n entries or its entry is 0 (all refcounts 0). -EIO for an unaligned
 * refblock offset (qemu signals corruption; the caller reports it), else 0 or -errno.
 * The block stays valid until the next call; repair patches it to mirror planned writes. */
int qcow2_rb_cache_get(struct qcow2_rb_cache *c, qio_t *q, uint64_t cluster_size,
                       const uint64_t *rt, uint64_t rt_n, uint64_t ti, uint8_t **blk);

/* The writer's form: the block at off for reftable index ti (which may not name it yet: a
 * new refblock), read from q, or all zeros when fresh. A dirty block in the slot is written
 * back first (qcow2_refcount_write_slot); on failure nothing changes. 0 or -errno. */
int qcow2_rb_cache_take(struct qcow2_rb_cache *c, qio_t *q, uint64_t cluster_size, uint64_t ti,
                        uint64_t off, bool fresh, uint8_t **blk);
/* The slot that holds reftable index ti's block. */
unsigned qcow2_rb_cache_slot(uint64_t cluster_size, uint64_t ti);

/* Forget every cached block (the refcount structures changed under the cache); dirty blocks
 * (the writer's, not yet written) are kept. */
void qcow2_rb_cache_drop(struct qcow2_rb_cache *c);
/* Frees the buffers; dirty blocks are lost (the writer flushes before closing). */
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
