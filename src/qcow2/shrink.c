/* Shrinking the refcount structures after an image was cut (qemu's qcow2_shrink_reftable and
 * qcow2_get_last_cluster, block/qcow2-refcount.c), for resize --shrink. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_refcount.h"
#include "qcow2/alloc.h"
#include "qcow2/port.h"
#include "qcow2/shrink.h"
#include "util/xalloc.h"

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* qemu's get_refblock_offset: the refblock covering off in the table as it stands (entries
 * dropped so far already cleared); its index truncated to 32 bits as qemu's. 0: none. */
static uint64_t covering_refblock(const struct qcow2_image *m, uint64_t off)
{
    uint32_t i = (uint32_t)(off >> (m->h.cluster_bits + m->h.refcount_block_bits));
    return i < m->rt_loaded && i < m->rt_entries ? m->rt[i] & QCOW2_REFT_OFFSET_MASK : 0;
}

/* qemu's qcow2_discard_refcount_block: the refcount of a dropped refblock's own cluster,
 * which must be 1, set to 0. Corruption events as qemu's (message into why). */
static int discard_refblock(struct qcow2_image *m, uint64_t off, char *why, size_t whylen)
{
    uint64_t cov = covering_refblock(m, off);
    if (!cov) {
        snprintf(why, whylen, "Refblock at %#llx is not covered by the refcount structures",
                 (unsigned long long)off);
        return -EIO;
    }
    if (cov & (m->cs - 1)) {
        snprintf(why, whylen, "Cannot get entry from refcount block cache: Offset %#llx is "
                 "unaligned", (unsigned long long)cov);
        return -EIO;
    }
    uint64_t rc;
    int e = qcow2_image_refcount(m, off >> m->h.cluster_bits, &rc);
    if (e < 0)
        return e;
    if (rc != 1) {
        snprintf(why, whylen, "Invalid refcount: refblock offset %#llx, reftable index %u, "
                 "block offset %#llx, refcount %#llx", (unsigned long long)cov,
                 (unsigned)(off >> (m->h.cluster_bits + m->h.refcount_block_bits)),
                 (unsigned long long)off, (unsigned long long)rc);
        return -EINVAL;
    }
    return qcow2_update_refcount(m, off, m->cs, -1, QCOW2_DISCARD_ALWAYS);
}

int qcow2_shrink_reftable(struct qcow2_image *m, char *why, size_t whylen)
{
    why[0] = '\0';
    int r = qcow2_refcount_cache_flush(m); /* the file holds every refblock as cached */
    if (r < 0)
        return r;
    uint64_t n = m->rt_entries < m->rt_loaded ? m->rt_entries : m->rt_loaded;
    size_t cs = (size_t)m->cs;
    uint64_t per = UINT64_C(1) << m->h.refcount_block_bits;
    uint8_t *blk = xmalloc(cs);
    uint8_t *table = xcalloc(1, (size_t)m->rt_entries * 8 + 1);
    bool *drop = xcalloc(1, (size_t)n + 1);
    for (uint64_t i = 0; i < n && r == 0; i++) {
        uint64_t off = m->rt[i] & QCOW2_REFT_OFFSET_MASK;
        if (!off)
            continue;
        if (off & (m->cs - 1)) { /* qcow2_cache_get refuses it: nothing written */
            snprintf(why, whylen, "Cannot get entry from refcount block cache: Offset %#llx "
                     "is unaligned", (unsigned long long)off);
            r = -EIO;
            break;
        }
        if ((r = qio_pread(m->q, blk, cs, off)) < 0)
            break;
        /* a refblock that counts itself is unused when that is its only reference */
        uint64_t k = off >> m->h.cluster_bits;
        if ((k >> m->h.refcount_block_bits) == i) {
            uint64_t idx = k & (per - 1);
            uint64_t own = qcow2_refblock_entry(blk, m->h.refcount_order, idx);
            qcow2_refblock_put(blk, m->h.refcount_order, idx, 0);
            drop[i] = all_zero(blk, cs);
            qcow2_refblock_put(blk, m->h.refcount_order, idx, own);
        } else {
            drop[i] = all_zero(blk, cs);
        }
        if (!drop[i])
            be64_put(table + i * 8, m->rt[i]);
    }
    if (r == 0) {
        r = qcow2_meta_pwrite(m, QCOW2_OL_REFCOUNT_TABLE, m->h.refcount_table_offset, table,
                              (size_t)m->rt_entries * 8);
        if (r == 0)
            r = qcow2_meta_flush(m);
        /* qemu's qcow2_discard_refcount_block for each dropped block (its own reference
         * released while the table in memory still names it), then the entry cleared;
         * after a failed table write the entries are cleared without that */
        for (uint64_t i = 0; i < n; i++) {
            if (!drop[i])
                continue;
            uint64_t off = m->rt[i] & QCOW2_REFT_OFFSET_MASK;
            if (r == 0)
                r = discard_refblock(m, off, why, whylen);
            m->rt[i] = 0;
        }
        qcow2_rb_cache_drop(&m->rb);
    }
    free(drop);
    free(table);
    free(blk);
    return r;
}

int64_t qcow2_get_last_cluster(struct qcow2_image *m, uint64_t file_size)
{
    uint64_t n = (file_size + m->cs - 1) >> m->h.cluster_bits;
    for (uint64_t i = n; i-- > 0;) {
        uint64_t rc;
        int r = qcow2_image_refcount(m, i, &rc);
        if (r < 0) {
            fprintf(stderr, "Can't get refcount for cluster %llu: %s\n", (unsigned long long)i,
                    strerror(-r));
            return r;
        }
        if (rc > 0)
            return (int64_t)i;
    }
    return -EIO; /* qemu: "There are no references in the refcount table." */
}
