/* qemu's qcow2_change_refcount_order (block/qcow2-refcount.c) on the one qcow2 model.
 *
 * The old reftable is walked, refblock by refblock, with the refcounts read live from the
 * old structures (the allocations made on the way count in them): a first walk gives each
 * new refblock that will hold a non-zero refcount a cluster from the allocator and grows
 * the new reftable (in whole clusters); after a walk that allocated, the new reftable is
 * (re)allocated and the walk repeated, until one allocates nothing, so the new structures
 * count themselves. A second walk fills the new refblocks and writes them; then the new
 * reftable is written, the old refblock cache flushed, and the header switched in one
 * write (qcow2_update_header). Only then does the model use the new width; the old
 * refblocks and the old table are freed in the new structures.
 *
 * A crash before the header switch leaves the old structures in charge, with the new
 * clusters counted there but referenced by nothing: leaks only. After it, the new ones,
 * with the old clusters counted but unreferenced until freed: leaks only. */
#include "qcow2/refcount_order.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_refcount.h"
#include "qcow2/alloc.h"
#include "qcow2/header_write.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "util/xalloc.h"

/* qemu's QCOW_MAX_REFTABLE_SIZE (8 MiB), in entries */
#define MAX_REFTABLE_ENTRIES ((8u << 20) / 8)

struct walk {
    struct qcow2_image *m;
    unsigned order;             /* the new width */
    uint64_t new_rb_entries;    /* entries per new refblock */
    uint64_t *rt;               /* the new reftable (entries, host order) */
    uint64_t rt_size;           /* its entries (a multiple of cs / 8) */
    uint8_t *blk;               /* the new refblock being filled (write walk) */
    bool write;                 /* false: allocation walk */
    bool allocated;
    qcow2_status_fn cb;
    void *opaque;
    char **errmsg;
};

/* qemu's alloc_refblock / flush_refblock for new refblock ti */
static int finish_block(struct walk *w, uint64_t ti, bool empty)
{
    struct qcow2_image *m = w->m;
    const uint64_t cs = m->cs;
    if (!w->write) {
        if (!empty && ti >= w->rt_size) {
            uint64_t per = cs / 8, n = (ti + 1 + per - 1) / per * per;
            if (n > MAX_REFTABLE_ENTRIES) {
                *w->errmsg = xstrdup("This operation would make the refcount table grow "
                                     "beyond the maximum size supported by QEMU, aborting");
                return -ENOTSUP;
            }
            w->rt = xreallocarray(w->rt, (size_t)n, 8);
            memset(w->rt + w->rt_size, 0, (size_t)(n - w->rt_size) * 8);
            w->rt_size = n;
        }
        if (!empty && !w->rt[ti]) {
            int64_t off = qcow2_alloc_clusters(m, cs);
            if (off < 0) {
                *w->errmsg = xasprintf("Failed to allocate refblock: %s", strerror((int)-off));
                return (int)off;
            }
            w->rt[ti] = (uint64_t)off;
            w->allocated = true;
        }
        return 0;
    }
    if (ti < w->rt_size && w->rt[ti]) {
        int r = qcow2_overlap_check(m, 0, w->rt[ti], cs);
        if (r < 0) {
            *w->errmsg = xasprintf("Overlap check failed: %s", strerror(-r));
            return r;
        }
        r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, w->rt[ti], w->blk, (size_t)cs);
        if (r < 0) {
            *w->errmsg = xasprintf("Failed to write refblock: %s", strerror(-r));
            return r;
        }
    }
    return 0;
}

/* qemu's walk_over_reftable; index/total: this walk among the operation's walks */
static int walk(struct walk *w, int index, int total)
{
    struct qcow2_image *m = w->m;
    const uint64_t cs = m->cs;
    uint64_t new_ti = 0, new_i = 0;
    bool empty = true;
    int r;
    if (w->write)
        memset(w->blk, 0, (size_t)cs);
    /* the old structures may grow during the walk (allocations): re-read each step */
    for (uint64_t ti = 0; ti < m->rt_entries; ti++) {
        uint64_t n = m->rt_entries < m->rt_loaded ? m->rt_entries : m->rt_loaded;
        uint64_t rb_off = ti < n ? m->rt[ti] & QCOW2_REFT_OFFSET_MASK : 0;
        if (w->cb)
            w->cb(w->opaque, (int64_t)((uint64_t)index * m->rt_entries + ti),
                  (int64_t)((uint64_t)total * m->rt_entries));
        if (rb_off & (cs - 1)) {
            *w->errmsg = xstrdup("Image is corrupt (unaligned refblock offset)");
            return -EIO;
        }
        uint64_t per_old = UINT64_C(1) << m->h.refcount_block_bits;
        uint8_t *blk = NULL;
        bool stale = true;   /* refetch: an allocation may have changed or evicted it */
        for (uint64_t i = 0; i < per_old;) {
            if (new_i >= w->new_rb_entries) {
                if ((r = finish_block(w, new_ti, empty)) < 0)
                    return r;
                if (w->write && !empty)
                    memset(w->blk, 0, (size_t)cs);   /* entries not put stay 0 */
                new_ti++;
                new_i = 0;
                empty = true;
                stale = true;
            }
            if (!rb_off) {
                /* no refblock: zeros, a run at a time (qemu steps through them one by
                 * one, to the same effect) */
                uint64_t k = per_old - i, room = w->new_rb_entries - new_i;
                if (k > room)
                    k = room;
                new_i += k;
                i += k;
                continue;
            }
            if (stale) {
                n = m->rt_entries < m->rt_loaded ? m->rt_entries : m->rt_loaded;
                if ((r = qcow2_rb_cache_get(&m->rb, m->q, cs, m->rt, n, ti, &blk)) < 0) {
                    *w->errmsg = xasprintf("Failed to retrieve refblock: %s", strerror(-r));
                    return r;
                }
                stale = false;
            }
            uint64_t v = blk ? qcow2_refblock_entry(blk, m->h.refcount_order, i) : 0;
            unsigned bits = 1u << w->order;
            if (bits < 64 && (v >> bits)) {
                uint64_t off = ((ti << m->h.refcount_block_bits) + i) << m->h.cluster_bits;
                *w->errmsg = xasprintf("Cannot decrease refcount entry width to %u bits: "
                                       "Cluster at offset %#" PRIx64 " has a refcount of %"
                                       PRIu64, bits, off, v);
                return -EINVAL;
            }
            if (w->write && v)
                qcow2_refblock_put(w->blk, w->order, new_i, v);
            new_i++;
            i++;
            empty = empty && v == 0;
        }
    }
    if (new_i > 0) {
        if ((r = finish_block(w, new_ti, empty)) < 0)
            return r;
    }
    if (w->cb)
        w->cb(w->opaque, (int64_t)((uint64_t)(index + 1) * m->rt_entries),
              (int64_t)((uint64_t)total * m->rt_entries));
    return 0;
}

/* The model switched to the new structures (after the header says so). */
static void switch_model(struct qcow2_image *m, unsigned order, uint64_t *rt, uint64_t n,
                         uint64_t off)
{
    struct qcow2_header *h = &m->h;
    free(m->rt);
    m->rt = rt;
    m->rt_entries = m->rt_loaded = n;
    h->refcount_order = order;
    h->refcount_bits = 1u << order;
    h->refcount_max = order == 6 ? UINT64_MAX : (UINT64_C(1) << h->refcount_bits) - 1;
    h->refcount_block_bits = h->cluster_bits - (order - 3);
    h->refcount_block_entries = UINT64_C(1) << h->refcount_block_bits;
    h->refcount_table_offset = off;
    h->refcount_table_clusters = (uint32_t)(n * 8 / m->cs);
    h->reftable_entries = n;
    qcow2_rb_cache_drop(&m->rb);
    qcow2_overlap_invalidate(m);
}

int qcow2_change_refcount_order(struct qcow2_image *m, unsigned order, qcow2_status_fn cb,
                                void *opaque, char **errmsg)
{
    const uint64_t cs = m->cs;
    struct walk w = {
        .m = m, .order = order,
        .new_rb_entries = UINT64_C(1) << (m->h.cluster_bits - (order - 3)),
        .cb = cb, .opaque = opaque, .errmsg = errmsg,
    };
    int64_t rt_off = 0;
    uint64_t rt_alloc = 0;   /* entries the allocated table has room for */
    int walk_index = 0, r;
    do {
        int total = walk_index + 2 > 3 ? walk_index + 2 : 3;
        w.allocated = false;
        if ((r = walk(&w, walk_index++, total)) < 0)
            goto done;
        if (w.allocated) {
            if (rt_off)
                qcow2_free_clusters(m, (uint64_t)rt_off, rt_alloc * 8, QCOW2_DISCARD_NEVER);
            rt_off = qcow2_alloc_clusters(m, w.rt_size * 8);
            if (rt_off < 0) {
                r = (int)rt_off;
                rt_off = 0;
                *errmsg = xasprintf("Failed to allocate the new reftable: %s", strerror(-r));
                goto done;
            }
            rt_alloc = w.rt_size;
        }
    } while (w.allocated);

    w.write = true;
    w.blk = xmalloc((size_t)cs);
    r = walk(&w, walk_index, walk_index + 1);
    free(w.blk);
    if (r < 0)
        goto done;

    /* the new reftable (the refblocks it names were written above) */
    if ((r = qcow2_overlap_check(m, 0, (uint64_t)rt_off, w.rt_size * 8)) < 0) {
        *errmsg = xasprintf("Overlap check failed: %s", strerror(-r));
        goto done;
    }
    uint8_t *raw = xmalloc((size_t)w.rt_size * 8);
    for (uint64_t i = 0; i < w.rt_size; i++)
        be64_put(raw + i * 8, w.rt[i]);
    r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, (uint64_t)rt_off, raw, (size_t)w.rt_size * 8);
    free(raw);
    if (r < 0) {
        *errmsg = xasprintf("Failed to write the new reftable: %s", strerror(-r));
        goto done;
    }
    /* the old refblocks (their counts of the new clusters) and everything above on disk
     * before the header names the new table; qemu's qcow2_cache_flush of the refblocks */
    if ((r = qcow2_refcount_cache_flush(m)) < 0) {
        *errmsg = xasprintf("Failed to flush the refblock cache: %s", strerror(-r));
        goto done;
    }

    /* the header first, the model after it */
    struct qcow2_header old = m->h;
    m->h.refcount_order = order;
    m->h.refcount_table_offset = (uint64_t)rt_off;
    m->h.refcount_table_clusters = (uint32_t)(w.rt_size * 8 / cs);
    if ((r = qcow2_image_update_header(m)) < 0) {
        m->h = old;
        *errmsg = xasprintf("Failed to update the qcow2 header: %s", strerror(-r));
        goto done;
    }
    m->h = old;
    /* RDWR loads the whole table: rt_loaded == rt_entries */
    uint64_t *old_rt = m->rt;
    uint64_t old_off = m->h.refcount_table_offset, old_size = m->rt_entries;
    m->rt = NULL;
    switch_model(m, order, w.rt, w.rt_size, (uint64_t)rt_off);
    /* done: the old refblocks and the old table, freed in the new structures */
    w.rt = old_rt;
    w.rt_size = old_size;
    rt_off = (int64_t)old_off;
    r = 0;

done:
    if (w.rt) {
        for (uint64_t i = 0; i < w.rt_size; i++) {
            uint64_t off = w.rt[i] & QCOW2_REFT_OFFSET_MASK;
            if (off)
                qcow2_free_clusters(m, off, cs, QCOW2_DISCARD_OTHER);
        }
        free(w.rt);
        /* qemu frees the table by its current size in entries */
        if (rt_off > 0)
            qcow2_free_clusters(m, (uint64_t)rt_off, w.rt_size * 8, QCOW2_DISCARD_OTHER);
    }
    return r;
}
