/* Refcount updates and cluster allocation (see alloc.h), in qemu's order
 * (block/qcow2-refcount.c): the placement of every cluster, refblock and reftable follows
 * from the same search and the same fixed points, so images come out laid out as qemu's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "io/blkdebug.h"
#include "qcow2/alloc.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "util/xalloc.h"

/* qemu's QCOW_MAX_CLUSTER_OFFSET: host offsets fit 56 bits */
#define MAX_CLUSTER_OFFSET ((UINT64_C(1) << 56) - 1)

/* Writes qemu makes with bdrv_pwrite_sync on the file, outside the overlap guard (the
 * reftable entry of a new refblock, a new reftable, the header switch): no class checked. */
#define UNGUARDED QCOW2_OL_ALL

/* The overlap guard caches where metadata lies and must hear when a refblock or the
 * reftable moves. */
static void guard_invalidate(struct qcow2_image *m)
{
    qcow2_overlap_invalidate(m);
}

static inline uint64_t rb_entries(const struct qcow2_image *m)
{
    return UINT64_C(1) << m->h.refcount_block_bits;
}

/* The reftable entries the model holds (RDWR loads all of them). */
static inline uint64_t rt_n(const struct qcow2_image *m)
{
    return m->rt_entries < m->rt_loaded ? m->rt_entries : m->rt_loaded;
}

static void rb_dirty(struct qcow2_image *m, uint64_t ti)
{
    m->rb.dirty[qcow2_rb_cache_slot(m->cs, ti)] = true;
    m->rb.owner = m;
}

/* qemu's qcow2_cache_flush of the L2 cache (the hook). The wait is cleared while the hook
 * runs, so that the L2 side's own ordering cannot come back here, and stays if it fails:
 * no refblock is written before the tables are (qemu's qcow2_cache_flush_dependency). */
static int flush_l2(struct qcow2_image *m)
{
    bool waited = m->rb.rb_waits_l2;
    m->rb.rb_waits_l2 = false;
    int rc = m->rb.l2_flush ? m->rb.l2_flush(m) : 0;
    if (rc < 0)
        m->rb.rb_waits_l2 = waited;
    return rc;
}

int qcow2_refcount_write_slot(struct qcow2_image *m, unsigned slot)
{
    struct qcow2_rb_cache *c = &m->rb;
    if (!c->dirty[slot] || !c->off[slot])
        return 0;
    if (c->rb_waits_l2) {
        int rc = flush_l2(m);
        if (rc < 0)
            return rc;
    }
    int rc = qcow2_meta_pwrite(m, QCOW2_OL_REFCOUNT_BLOCK, c->off[slot], c->buf[slot],
                               (size_t)m->cs);
    if (rc < 0)
        return rc;
    c->dirty[slot] = false;
    return 0;
}

int qcow2_refcount_flush(struct qcow2_image *m)
{
    int result = 0;
    /* qemu's qcow2_cache_write: every entry is tried, the first error kept */
    for (unsigned i = 0; i < QCOW2_RB_CACHE_SLOTS; i++) {
        int rc = qcow2_refcount_write_slot(m, i);
        if (rc < 0 && result == 0)
            result = rc;
    }
    return result;
}

int qcow2_refcount_cache_flush(struct qcow2_image *m)
{
    int rc = qcow2_refcount_flush(m);
    if (rc == 0)
        rc = qcow2_meta_flush(m);
    if (rc == 0)
        m->rb.l2_waits_rb = false;
    return rc;
}

int qcow2_l2_depends_on_refblocks(struct qcow2_image *m)
{
    /* the two waits never stand together: a failure leaves the old one alone */
    if (m->rb.rb_waits_l2) {
        int rc = flush_l2(m);
        if (rc < 0)
            return rc;
    }
    m->rb.l2_waits_rb = true;
    return 0;
}

/* qemu's qcow2_cache_set_dependency(refcount_block_cache, l2_table_cache), before a
 * decrease: refblocks that L2 tables wait for are flushed first. qemu ignores a failure
 * there and decreases anyway, which could put a freed refcount on disk before the table
 * that dropped the reference; here the decrease fails instead (the clusters leak). */
static int refblocks_depend_on_l2(struct qcow2_image *m)
{
    if (m->rb.l2_waits_rb) {
        int rc = qcow2_refcount_cache_flush(m);
        if (rc < 0)
            return rc;
    }
    m->rb.rb_waits_l2 = true;
    return 0;
}

/* Forget cached blocks at [lo, hi) unwritten: new refblocks of a failed step, which no
 * table names (written later they would land on clusters that may be reused). */
static void rb_forget_range(struct qcow2_image *m, uint64_t lo, uint64_t hi)
{
    for (unsigned s = 0; s < QCOW2_RB_CACHE_SLOTS; s++) {
        if (m->rb.buf[s] && m->rb.off[s] >= lo && m->rb.off[s] < hi) {
            m->rb.off[s] = 0;
            m->rb.dirty[s] = false;
        }
    }
}

/* A metadata write followed by a barrier (qemu's bdrv_pwrite_sync). */
static int pwrite_sync(struct qcow2_image *m, unsigned ign, uint64_t off, const void *buf,
                       size_t len)
{
    int rc = qcow2_meta_pwrite(m, ign, off, buf, len);
    return rc < 0 ? rc : qcow2_meta_flush(m);
}

/* ---- discards of freed clusters (qemu's update_refcount_discard / process_discards) ---- */

/* update_refcount_discard: grown into an adjacent region, else a new one at the end; a
 * region that now touches another absorbs it (the list keeps its order: the discards are
 * passed down in it) */
static void discard_add(struct qcow2_discards *d, uint64_t off, uint64_t len)
{
    size_t i;
    for (i = 0; i < d->n; i++)
        if (off + len == d->off[i] || d->off[i] + d->len[i] == off)
            break;
    if (i == d->n) {
        if (d->n == d->cap) {
            d->cap = d->cap ? d->cap * 2 : 8;
            d->off = xreallocarray(d->off, d->cap, sizeof(*d->off));
            d->len = xreallocarray(d->len, d->cap, sizeof(*d->len));
        }
        d->off[d->n] = off;
        d->len[d->n++] = len;
        return;
    }
    if (off < d->off[i])
        d->off[i] = off;
    d->len[i] += len;
    for (size_t j = 0; j < d->n;) {
        if (j == i || (d->off[j] != d->off[i] + d->len[i] && d->off[j] + d->len[j] != d->off[i])) {
            j++;
            continue;
        }
        if (d->off[j] < d->off[i])
            d->off[i] = d->off[j];
        d->len[i] += d->len[j];
        memmove(d->off + j, d->off + j + 1, (d->n - j - 1) * sizeof(*d->off));
        memmove(d->len + j, d->len + j + 1, (d->n - j - 1) * sizeof(*d->len));
        d->n--;
        if (j < i)
            i--;
    }
}

/* Discards are optional: failures (and a backend that cannot punch holes) are ignored, as
 * qemu's qcow2_process_discards ignores them; after a failed operation none is passed. */
static void discard_run(struct qcow2_image *m, struct qcow2_discards *d, int ret)
{
    if (ret >= 0)
        for (size_t i = 0; i < d->n; i++)
            (void)qcow2_port_discard(m, m->q, d->off[i], d->len[i]);
    free(d->off);
    free(d->len);
    memset(d, 0, sizeof(*d));
}

void qcow2_discards_cache(struct qcow2_image *m)
{
    m->cache_discards = true;
}

void qcow2_discards_process(struct qcow2_image *m, int ret)
{
    m->cache_discards = false;
    discard_run(m, &m->discards, ret);
}

/* ---- allocation without references ---- */

/* qemu's alloc_clusters_noref: the first run of size bytes (in clusters) of free clusters
 * from free_cluster_index on; the index is left after the run. */
static int64_t alloc_clusters_noref(struct qcow2_image *m, uint64_t size, uint64_t max)
{
    uint64_t nb = size / m->cs + (size % m->cs != 0);
    uint64_t limit = max >> m->h.cluster_bits;
retry:
    for (uint64_t i = 0; i < nb; i++) {
        uint64_t k = m->free_cluster_index++;
        /* qemu checks the limit after the search; checking on the way gives the same
         * -EFBIG without walking 2^56 clusters of a hostile refcount structure */
        if (k > limit)
            return -EFBIG;
        uint64_t refcount;
        int rc = qcow2_image_refcount(m, k, &refcount);
        if (rc < 0)
            return rc;
        if (refcount != 0)
            goto retry;
    }
    if (m->free_cluster_index > 0 && m->free_cluster_index - 1 > limit)
        return -EFBIG;
    return (int64_t)((m->free_cluster_index - nb) << m->h.cluster_bits);
}

static int update_refcount(struct qcow2_image *m, uint64_t off, uint64_t len, uint64_t addend,
                           bool decrease, enum qcow2_discard_type type);

/* ---- new refcount blocks and tables ---- */

int64_t qcow2_refcount_metadata_size(int64_t clusters, uint64_t cluster_size,
                                     unsigned refcount_order, bool generous_increase,
                                     uint64_t *refblock_count)
{
    /* the fixed point where the refcount structures also count themselves */
    int64_t per_table_cluster = (int64_t)(cluster_size / 8);
    int64_t per_block = (int64_t)(cluster_size * 8 >> refcount_order);
    int64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = (clusters + table + blocks + per_block - 1) / per_block;
        table = (blocks + per_table_cluster - 1) / per_table_cluster;
        n = clusters + blocks + table;
        if (n == last && generous_increase) {
            clusters += (table + 1) / 2;
            n = 0;
            generous_increase = false;
        }
    } while (n != last);
    if (refblock_count)
        *refblock_count = (uint64_t)blocks;
    return (blocks + table) * (int64_t)cluster_size;
}

/* The index of the last reftable entry in use (qemu's max_refcount_table_index). */
static uint64_t max_rt_index(const struct qcow2_image *m)
{
    uint64_t n = rt_n(m);
    uint64_t i = n ? n - 1 : 0;
    while (i > 0 && !(m->rt[i] & QCOW2_REFT_OFFSET_MASK))
        i--;
    return i;
}

int64_t qcow2_refcount_area(struct qcow2_image *m, uint64_t start_offset,
                            uint64_t additional_clusters, bool exact_size,
                            uint64_t new_rb_index, uint64_t new_rb_offset)
{
    uint64_t cs = m->cs, per_block = rb_entries(m), total;
    if (start_offset % cs || start_offset > MAX_CLUSTER_OFFSET ||
        additional_clusters > (MAX_CLUSTER_OFFSET >> m->h.cluster_bits))
        return -EINVAL;
    qcow2_refcount_metadata_size((int64_t)(start_offset / cs + additional_clusters), cs,
                                 m->h.refcount_order, !exact_size, &total);
    /* qemu compares the count with the byte limit; so do we, for the same -EFBIG */
    if (total > QCOW2_MAX_REFTABLE_SIZE)
        return -EFBIG;
    uint64_t area_index = start_offset / cs / per_block;
    uint64_t table_size = exact_size ? total : total + (total + 1) / 2;
    uint64_t per_cluster = cs / 8;
    table_size = (table_size + per_cluster - 1) / per_cluster * per_cluster;
    uint64_t table_clusters = table_size * 8 / cs;
    if (table_size > QCOW2_MAX_REFTABLE_SIZE)
        return -EFBIG;

    uint64_t *new_table = xcalloc((size_t)table_size, sizeof(uint64_t));
    uint64_t keep = max_rt_index(m) + 1;
    if (keep > rt_n(m))
        keep = rt_n(m);
    if (keep > table_size)
        keep = table_size; /* shrinking: only free space lies past start_offset */
    if (keep)
        memcpy(new_table, m->rt, (size_t)keep * sizeof(uint64_t));
    if (new_rb_offset) {
        if (new_rb_index >= total) {
            free(new_table);
            return -EIO;
        }
        new_table[new_rb_index] = new_rb_offset;
    }
    uint64_t new_blocks = 0;
    for (uint64_t i = area_index; i < total; i++)
        new_blocks += !new_table[i];
    uint64_t table_offset = start_offset + new_blocks * cs;
    uint64_t end_offset = table_offset + table_clusters * cs;

    /* refblocks: existing ones reused, the missing ones created at start_offset on; every
     * cluster of the new structures gets refcount 1 */
    uint64_t block_offset = start_offset;
    int ret = 0;
    for (uint64_t i = area_index; i < total; i++) {
        uint8_t *blk;
        if (new_table[i]) {
            uint64_t off = new_table[i] & QCOW2_REFT_OFFSET_MASK;
            if (off & (cs - 1)) {
                ret = -EIO;
                goto fail;
            }
            ret = qcow2_rb_cache_take(&m->rb, m->q, cs, i, off, false, &blk);
        } else {
            ret = qcow2_rb_cache_take(&m->rb, m->q, cs, i, block_offset, true, &blk);
            if (ret == 0) {
                rb_dirty(m, i);
                new_table[i] = block_offset;
                block_offset += cs;
            }
        }
        if (ret < 0)
            goto fail;
        uint64_t first = i * per_block * cs;
        if (first < end_offset) {
            uint64_t j = first < start_offset ? (start_offset - first) / cs : 0;
            uint64_t end = (end_offset - first) / cs;
            if (end > per_block)
                end = per_block;
            for (; j < end; j++) {
                /* the caller promised free space here; a block saying otherwise is corrupt */
                if (qcow2_refblock_entry(blk, m->h.refcount_order, j) != 0) {
                    ret = -EIO;
                    goto fail;
                }
                qcow2_refblock_put(blk, m->h.refcount_order, j, 1);
            }
            rb_dirty(m, i);
        }
    }

    /* blocks, then the table, then the header switch, each on disk before the next */
    if ((ret = qcow2_refcount_cache_flush(m)) < 0)
        goto fail;
    uint8_t *raw = xmalloc((size_t)table_size * 8);
    for (uint64_t i = 0; i < table_size; i++)
        be64_put(raw + i * 8, new_table[i]);
    ret = pwrite_sync(m, UNGUARDED, table_offset, raw, (size_t)table_size * 8);
    free(raw);
    if (ret < 0)
        goto fail;
    uint8_t hdr[12];
    be64_put(hdr, table_offset);
    be32_put(hdr + 8, (uint32_t)table_clusters);
    if ((ret = pwrite_sync(m, UNGUARDED, QCOW2_OFF_REFTABLE_OFFSET, hdr, 12)) < 0)
        goto fail;

    uint64_t old_offset = m->h.refcount_table_offset;
    uint64_t old_size = m->rt_entries;
    free(m->rt);
    m->rt = new_table;
    m->rt_entries = m->rt_loaded = table_size;
    m->h.refcount_table_offset = table_offset;
    m->h.refcount_table_clusters = (uint32_t)table_clusters;
    m->h.reftable_entries = table_size;
    guard_invalidate(m);
    qcow2_free_clusters(m, old_offset, old_size * 8, QCOW2_DISCARD_OTHER);
    return (int64_t)end_offset;

fail:
    rb_forget_range(m, start_offset, table_offset);
    free(new_table);
    return ret;
}

/* qemu's alloc_refcount_block: the refblock for cluster k, allocated if missing. A new
 * block is placed by the allocator; if it falls in the range it describes, it counts
 * itself, else its own refcount is taken first (recursing at most twice). It is written
 * before the reftable names it; a table too small is replaced by qcow2_refcount_area at
 * the end of the image. Returns 0 with *blk, or -EAGAIN (with *blk when the block was
 * loaded) when clusters were placed, so that a caller in the middle of an allocation
 * searches again, or -errno. */
static int alloc_refcount_block(struct qcow2_image *m, uint64_t k, uint8_t **blk)
{
    uint64_t cs = m->cs, ti = k >> m->h.refcount_block_bits;
    *blk = NULL;
    if (ti < rt_n(m)) {
        uint64_t off = m->rt[ti] & QCOW2_REFT_OFFSET_MASK;
        if (off) {
            if (off & (cs - 1))
                return -EIO; /* qemu: corruption, "Refblock offset ... unaligned" */
            return qcow2_rb_cache_take(&m->rb, m->q, cs, ti, off, false, blk);
        }
    }

    /* the reftable is written below, and L2 tables may name clusters counted so far */
    int ret = flush_l2(m);
    if (ret < 0)
        return ret;
    int64_t nb = alloc_clusters_noref(m, cs, INT64_MAX);
    if (nb < 0)
        return (int)nb;
    uint64_t new_block = (uint64_t)nb;
    if (new_block == 0)
        return -EIO; /* qemu: corruption, "Preventing invalid allocation of refcount block" */

    uint64_t nk = new_block >> m->h.cluster_bits;
    if ((nk >> m->h.refcount_block_bits) == ti) {
        /* the block describes itself */
        if ((ret = qcow2_rb_cache_take(&m->rb, m->q, cs, ti, new_block, true, blk)) < 0)
            return ret;
        qcow2_refblock_put(*blk, m->h.refcount_order, nk & (rb_entries(m) - 1), 1);
    } else {
        ret = update_refcount(m, new_block, cs, 1, false, QCOW2_DISCARD_NEVER);
        if (ret < 0)
            return ret;
        if ((ret = qcow2_refcount_cache_flush(m)) < 0)
            return ret;
        if ((ret = qcow2_rb_cache_take(&m->rb, m->q, cs, ti, new_block, true, blk)) < 0)
            return ret;
    }
    rb_dirty(m, ti);
    if ((ret = qcow2_refcount_cache_flush(m)) < 0)
        goto fail;

    if (ti < rt_n(m)) {
        /* hook the block up in the table */
        uint8_t e[8];
        be64_put(e, new_block);
        ret = pwrite_sync(m, UNGUARDED, m->h.refcount_table_offset + ti * 8, e, 8);
        if (ret < 0)
            goto fail;
        m->rt[ti] = new_block;
        guard_invalidate(m);
        /* the block may sit where the caller meant to put its clusters */
        return -EAGAIN;
    }
    *blk = NULL;

    /* the table must grow: new structures at the end, past every refblock's range used so
     * far (k's, which new_block will describe, and new_block's own) */
    uint64_t last = k > nk ? k : nk;
    uint64_t blocks_used = last / rb_entries(m) + 1;
    if (blocks_used > (MAX_CLUSTER_OFFSET >> m->h.cluster_bits) / rb_entries(m))
        return -EFBIG;
    uint64_t meta_offset = blocks_used * rb_entries(m) * cs;
    int64_t end = qcow2_refcount_area(m, meta_offset, 0, false, ti, new_block);
    if (end < 0) {
        ret = (int)end;
        goto fail;
    }
    if ((ret = qcow2_rb_cache_take(&m->rb, m->q, cs, ti, new_block, false, blk)) < 0)
        return ret;
    /* the caller's clusters may now hold the new structures */
    return -EAGAIN;

fail:
    /* no table names the block: its cached copy must never be written */
    *blk = NULL;
    rb_forget_range(m, new_block, new_block + cs);
    return ret;
}

/* ---- refcount updates ---- */

/* qemu's update_refcount; addend is the magnitude. */
static int update_refcount(struct qcow2_image *m, uint64_t off, uint64_t len, uint64_t addend,
                           bool decrease, enum qcow2_discard_type type)
{
    if (len == 0)
        return 0;
    if (off > MAX_CLUSTER_OFFSET || len > MAX_CLUSTER_OFFSET + 1 - off)
        return -EINVAL;
    if (decrease) {
        int rc = refblocks_depend_on_l2(m);
        if (rc < 0)
            return rc;
    }
    m->rb.owner = m;

    uint64_t cs = m->cs, cb = m->h.cluster_bits;
    uint64_t start = off & ~(cs - 1), last = (off + len - 1) & ~(cs - 1);
    uint64_t max = qcow2_refcount_max(m->h.refcount_order);
    struct qcow2_discards local = {0};
    struct qcow2_discards *d = m->cache_discards ? &m->discards : &local;
    uint8_t *blk = NULL;
    uint64_t old_ti = UINT64_MAX, co;
    int ret = 0;
    for (co = start; co <= last; co += cs) {
        uint64_t k = co >> cb, ti = k >> m->h.refcount_block_bits;
        if (ti != old_ti) {
            ret = alloc_refcount_block(m, k, &blk);
            /* let the caller search again from its first cluster: those may still be
             * free */
            if (ret == -EAGAIN && m->free_cluster_index > (start >> cb))
                m->free_cluster_index = start >> cb;
            if (ret < 0)
                goto fail;
        }
        old_ti = ti;
        rb_dirty(m, ti);
        uint64_t idx = k & (rb_entries(m) - 1);
        uint64_t rc = qcow2_refblock_entry(blk, m->h.refcount_order, idx);
        if (decrease ? rc < addend : addend > max - rc) {
            ret = -EINVAL;
            goto fail;
        }
        rc = decrease ? rc - addend : rc + addend;
        if (rc == 0 && k < m->free_cluster_index)
            m->free_cluster_index = k;
        qcow2_refblock_put(blk, m->h.refcount_order, idx, rc);
        if (rc == 0) {
            /* a freed refblock or L2 table leaves its cache unwritten (qemu's
             * qcow2_cache_discard; qemu looks up the range's first offset) */
            for (unsigned s = 0; s < QCOW2_RB_CACHE_SLOTS; s++) {
                if (m->rb.buf[s] && m->rb.off[s] == off) {
                    m->rb.off[s] = 0;
                    m->rb.dirty[s] = false;
                    if (m->rb.buf[s] == blk) {
                        blk = NULL;
                        old_ti = UINT64_MAX;
                    }
                }
            }
            if (m->rb.l2_forget)
                m->rb.l2_forget(m, off);
            if (m->discard_passthrough[type])
                discard_add(d, co, cs);
        }
    }
    ret = 0;
fail:
    if (!m->cache_discards)
        discard_run(m, &local, ret);
    /* undo what was done (this may work, e.g. after ENOSPC on a new refblock) */
    if (ret < 0 && co > off)
        (void)update_refcount(m, off, co - off, addend, !decrease, QCOW2_DISCARD_NEVER);
    return ret;
}

int qcow2_update_refcount(struct qcow2_image *m, uint64_t off, uint64_t len, int64_t addend,
                          enum qcow2_discard_type type)
{
    if (addend == 0)
        return update_refcount(m, off, len, 0, false, type);
    uint64_t mag = addend < 0 ? (uint64_t)0 - (uint64_t)addend : (uint64_t)addend;
    return update_refcount(m, off, len, mag, addend < 0, type);
}

/* ---- the allocator ---- */

int64_t qcow2_alloc_clusters(struct qcow2_image *m, uint64_t size)
{
    int64_t off;
    int ret;
    do {
        off = alloc_clusters_noref(m, size, MAX_CLUSTER_OFFSET);
        if (off < 0)
            return off;
        ret = update_refcount(m, (uint64_t)off, size, 1, false, QCOW2_DISCARD_NEVER);
    } while (ret == -EAGAIN);
    return ret < 0 ? ret : off;
}

int64_t qcow2_alloc_clusters_at(struct qcow2_image *m, uint64_t off, uint64_t n)
{
    if (n == 0)
        return 0;
    if (off & (m->cs - 1) || off > MAX_CLUSTER_OFFSET ||
        n > ((MAX_CLUSTER_OFFSET - off) >> m->h.cluster_bits) + 1)
        return -EINVAL;
    uint64_t i;
    int ret;
    do {
        uint64_t k = off >> m->h.cluster_bits;
        for (i = 0; i < n; i++) {
            uint64_t refcount;
            if ((ret = qcow2_image_refcount(m, k + i, &refcount)) < 0)
                return ret;
            if (refcount != 0)
                break;
        }
        ret = update_refcount(m, off, i << m->h.cluster_bits, 1, false, QCOW2_DISCARD_NEVER);
    } while (ret == -EAGAIN);
    return ret < 0 ? ret : (int64_t)i;
}

int64_t qcow2_alloc_bytes(struct qcow2_image *m, uint64_t size)
{
    uint64_t cs = m->cs;
    if (size == 0 || size > cs)
        return -EINVAL;
    uint64_t off = m->free_byte_offset;
    if (off) {
        /* a cluster whose refcount cannot take one more compressed cluster is left */
        uint64_t refcount;
        int rc = qcow2_image_refcount(m, off >> m->h.cluster_bits, &refcount);
        if (rc < 0)
            return rc;
        if (refcount == qcow2_refcount_max(m->h.refcount_order))
            off = 0;
    }
    uint64_t free_in_cluster = cs - (off & (cs - 1));
    uint64_t max = m->h.cluster_offset_mask < MAX_CLUSTER_OFFSET ? m->h.cluster_offset_mask
                                                                 : MAX_CLUSTER_OFFSET;
    int ret;
    do {
        if (!off || free_in_cluster < size) {
            int64_t nc = alloc_clusters_noref(m, cs, max);
            if (nc < 0)
                return nc;
            if (nc == 0)
                return -EIO; /* qemu: corruption, compressed cluster at offset 0 */
            /* the packing goes on into the next cluster only if that is the one found */
            if (!off || ((off + cs - 1) & ~(cs - 1)) != (uint64_t)nc) {
                off = (uint64_t)nc;
                free_in_cluster = cs;
            } else {
                free_in_cluster += cs;
            }
        }
        ret = update_refcount(m, off, size, 1, false, QCOW2_DISCARD_NEVER);
        if (ret < 0)
            off = 0;
    } while (ret == -EAGAIN);
    if (ret < 0)
        return ret;
    /* the new references reach the disk before the caller's L2 entry */
    if ((ret = qcow2_l2_depends_on_refblocks(m)) < 0)
        return ret;
    m->free_byte_offset = off + size;
    if (!(m->free_byte_offset & (cs - 1)))
        m->free_byte_offset = 0;
    return (int64_t)off;
}

void qcow2_free_clusters(struct qcow2_image *m, uint64_t off, uint64_t size,
                         enum qcow2_discard_type type)
{
    qio_event(m->q, BLKDBG_CLUSTER_FREE);
    int ret = update_refcount(m, off, size, 1, true, type);
    if (ret < 0)
        /* qemu's line; the clusters leak */
        fprintf(stderr, "qcow2_free_clusters failed: %s\n", strerror(-ret));
}

void qcow2_free_any_cluster(struct qcow2_image *m, uint64_t l2_entry,
                            enum qcow2_discard_type type)
{
    enum qcow2_cluster_type t = qcow2_l2e_type(&m->geom, l2_entry);
    uint64_t off = qcow2_l2e_offset(l2_entry);
    if (m->geom.data_file) {
        /* data clusters of an external file carry no refcount: only the discard */
        if (m->discard_passthrough[type] && m->data &&
            (t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC))
            (void)qcow2_port_discard(m, m->data, off, m->cs);
        return;
    }
    switch (t) {
    case QCOW2_CLUSTER_COMPRESSED: {
        struct qcow2_compressed c;
        qcow2_compressed_decode(m->h.cluster_bits, l2_entry, &c);
        qcow2_free_clusters(m, c.host_offset, c.csize, type);
        break;
    }
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        /* qemu: a non-fatal corruption event, "Cannot free unaligned cluster", nothing
         * freed */
        if (!(off & (m->cs - 1)))
            qcow2_free_clusters(m, off, m->cs, type);
        break;
    default:
        break;
    }
}
