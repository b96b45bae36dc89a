/* TEMPORARY stand-in for qcow2/alloc.h until branch i11-alloc is merged (its strong
 * definitions replace these weak ones at link time; delete this file after the merge).
 * Write-through refcount updates inside existing refblocks only (-ENOSPC when a new
 * refblock would be needed), qemu's free-cluster search order. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "format/qcow2_l2.h"
#include "format/qcow2_refcount.h"
#include "qcow2/alloc.h"
#include "qcow2/l2.h"
#include "qcow2/port.h"

#define WEAK __attribute__((weak))

static int set_rc(struct qcow2_image *m, uint64_t k, uint64_t v)
{
    int r = qcow2_image_load_reftable(m);
    if (r < 0)
        return r;
    uint8_t *blk;
    uint64_t n = m->rt_entries < m->rt_loaded ? m->rt_entries : m->rt_loaded;
    uint64_t ti = k >> m->h.refcount_block_bits;
    r = qcow2_rb_cache_get(&m->rb, m->q, m->cs, m->rt, n, ti, &blk);
    if (r < 0)
        return r;
    if (!blk)
        return -ENOSPC;
    qcow2_refblock_put(blk, m->h.refcount_order,
                       k & ((UINT64_C(1) << m->h.refcount_block_bits) - 1), v);
    return qcow2_meta_pwrite(m, QCOW2_OL_REFCOUNT_BLOCK, m->rt[ti] & QCOW2_REFT_OFFSET_MASK,
                             blk, (size_t)m->cs);
}

WEAK int qcow2_update_refcount(struct qcow2_image *m, uint64_t off, uint64_t len,
                               int64_t addend, enum qcow2_discard_type type)
{
    if (!len)
        return 0;
    int r = qcow2_image_load_reftable(m);
    if (r < 0)
        return r;
    uint64_t first = off >> m->h.cluster_bits;
    uint64_t last = (off + len - 1) >> m->h.cluster_bits;
    for (uint64_t k = first; k <= last; k++) {
        uint64_t rc;
        if ((r = qcow2_image_refcount(m, k, &rc)) < 0)
            return r;
        rc += (uint64_t)addend;
        if ((r = set_rc(m, k, rc)) < 0)
            return r;
        if (rc == 0) {
            if (k < m->free_cluster_index)
                m->free_cluster_index = k;
            qcow2_l2_forget(m, k << m->h.cluster_bits);
            if (m->discard_passthrough[type])
                (void)qio_fallocate(m->q, QIO_FALLOC_PUNCH_HOLE, k << m->h.cluster_bits,
                                    m->cs);
        }
    }
    return 0;
}

static int64_t alloc_noref(struct qcow2_image *m, uint64_t n)
{
    int r = qcow2_image_load_reftable(m);
    if (r < 0)
        return r;
retry:
    for (uint64_t i = 0; i < n; i++) {
        uint64_t rc;
        uint64_t k = m->free_cluster_index++;
        if ((r = qcow2_image_refcount(m, k, &rc)) < 0)
            return r;
        if (rc != 0)
            goto retry;
    }
    return (int64_t)((m->free_cluster_index - n) << m->h.cluster_bits);
}

WEAK int64_t qcow2_alloc_clusters(struct qcow2_image *m, uint64_t size)
{
    uint64_t n = (size + m->cs - 1) >> m->h.cluster_bits;
    int64_t off = alloc_noref(m, n);
    if (off < 0)
        return off;
    int r = qcow2_update_refcount(m, (uint64_t)off, n << m->h.cluster_bits, 1,
                                  QCOW2_DISCARD_NEVER);
    return r < 0 ? r : off;
}

WEAK int64_t qcow2_alloc_clusters_at(struct qcow2_image *m, uint64_t off, uint64_t n)
{
    int r = qcow2_image_load_reftable(m);
    if (r < 0)
        return r;
    uint64_t k = off >> m->h.cluster_bits, i;
    for (i = 0; i < n; i++) {
        uint64_t rc;
        if ((r = qcow2_image_refcount(m, k + i, &rc)) < 0)
            return r;
        if (rc)
            break;
    }
    r = qcow2_update_refcount(m, off, i << m->h.cluster_bits, 1, QCOW2_DISCARD_NEVER);
    return r < 0 ? r : (int64_t)i;
}

WEAK int64_t qcow2_alloc_bytes(struct qcow2_image *m, uint64_t size)
{
    uint64_t off = m->free_byte_offset;
    uint64_t free_in = m->cs - (off & (m->cs - 1));
    if (!off || free_in < size) {
        int64_t nc = alloc_noref(m, 1);
        if (nc < 0)
            return nc;
        if (!off || ((off + m->cs - 1) & ~(m->cs - 1)) != (uint64_t)nc)
            off = (uint64_t)nc;
    }
    int r = qcow2_update_refcount(m, off, size, 1, QCOW2_DISCARD_NEVER);
    if (r < 0)
        return r;
    m->free_byte_offset = off + size;
    if (!(m->free_byte_offset & (m->cs - 1)))
        m->free_byte_offset = 0;
    return (int64_t)off;
}

WEAK void qcow2_free_clusters(struct qcow2_image *m, uint64_t off, uint64_t size,
                              enum qcow2_discard_type type)
{
    int r = qcow2_update_refcount(m, off, size, -1, type);
    if (r < 0)
        fprintf(stderr, "qcow2_free_clusters failed: %s\n", strerror(-r));
}

WEAK void qcow2_free_any_cluster(struct qcow2_image *m, uint64_t e,
                                 enum qcow2_discard_type type)
{
    switch (qcow2_l2e_type(&m->geom, e)) {
    case QCOW2_CLUSTER_COMPRESSED: {
        struct qcow2_compressed c;
        qcow2_compressed_decode(m->h.cluster_bits, e, &c);
        qcow2_free_clusters(m, c.host_offset, c.csize, type);
        break;
    }
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        if (m->geom.data_file) {
            if (m->discard_passthrough[type] && m->data)
                (void)qio_fallocate(m->data, QIO_FALLOC_PUNCH_HOLE,
                                    e & QCOW2_L2E_OFFSET_MASK, m->cs);
        } else {
            qcow2_free_clusters(m, e & QCOW2_L2E_OFFSET_MASK, m->cs, type);
        }
        break;
    default:
        break;
    }
}

WEAK int qcow2_refcount_flush(struct qcow2_image *m)
{
    (void)m;
    return 0;
}
