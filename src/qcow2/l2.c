/* L2 tables of the one model (see l2.h): cache, write-back, allocation, L1 updates. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "format/qcow2_l2.h"
#include "io/blkdebug.h"
#include "qcow2/alloc.h"
#include "qcow2/l2.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "util/xalloc.h"

/* The overlap guard (qcow2/overlap.h) keeps cached ranges: a new table is added, moved or
 * freed metadata makes it rebuild them. */
static void guard_invalidate(struct qcow2_image *m)
{
    qcow2_overlap_invalidate(m);
}

/* Bytes of tables cached by all read-only images, and the buffer a read-only image reads
 * into once that total is spent. */
static size_t l2_total;
static uint8_t *l2_scratch;
static size_t l2_scratch_len;

void qcow2_l2_cache_init(struct qcow2_image *m, bool writable)
{
    if (m->l2cache)
        return;
    struct qcow2_l2_cache *c = xcalloc(1, sizeof(*c));
    /* no more slots than the image can have L2 tables (its L1 entries), as qemu sizes its
     * cache: each layer of a deep chain of small images costs a table or two */
    size_t n = QCOW2_L2_CACHE_BYTES / m->cs;
    if (n > m->h.l1_size)
        n = (size_t)m->h.l1_size;
    c->n = n < 2 ? 2 : n;
    c->slot = xcalloc(c->n, sizeof(*c->slot));
    c->writable = writable;
    m->l2cache = c;
    if (writable) {
        /* the allocator's hooks: a freed cluster's table is forgotten, and refblocks
         * that must wait for the L2 tables (after a decrease) flush them first */
        m->rb.l2_flush = qcow2_l2_flush;
        m->rb.l2_forget = qcow2_l2_forget;
    }
}

void qcow2_l2_cache_free(struct qcow2_image *m)
{
    struct qcow2_l2_cache *c = m->l2cache;
    if (!c)
        return;
    for (size_t i = 0; i < c->filled; i++)
        free(c->slot[i].data);
    if (!c->writable)
        l2_total -= c->filled * m->cs;
    free(c->slot);
    free(c);
    m->l2cache = NULL;
}

/* Before any L2 table is written: the refblocks it waits for (qemu's dependency l2 ->
 * refcount, set when clusters were taken), then guest data, copy-on-write data included,
 * on disk (data file and image file flushed). */
static int write_dependencies(struct qcow2_image *m)
{
    int r = 0;
    if (m->rb.l2_waits_rb)
        r = qcow2_refcount_cache_flush(m);
    if (r == 0 && m->data && m->data != m->q)
        r = qio_flush(m->data);
    if (r == 0)
        r = qcow2_meta_flush(m);
    return r;
}

static int write_slot(struct qcow2_image *m, struct qcow2_l2_slot *e)
{
    int r = qcow2_meta_pwrite(m, QCOW2_OL_ACTIVE_L2, e->off, e->data, (size_t)m->cs);
    if (r == 0)
        e->dirty = false;
    return r;
}

static int evict(struct qcow2_image *m, struct qcow2_l2_slot *e)
{
    if (e->off && e->dirty) {
        int r = write_dependencies(m);
        if (r == 0 && e->dirty) /* the refblocks' own wait may have flushed it */
            r = write_slot(m, e);
        if (r < 0)
            return r;
    }
    e->off = 0;
    e->dirty = false;
    return 0;
}

/* The slot holding off, or a free/LRU victim (written back if dirty) with *hit false. */
static int find_slot(struct qcow2_image *m, uint64_t off, struct qcow2_l2_slot **out,
                     bool *hit, uint8_t **scratch)
{
    qcow2_l2_cache_init(m, false);
    struct qcow2_l2_cache *c = m->l2cache;
    size_t cs = (size_t)m->cs;
    *scratch = NULL;
    struct qcow2_l2_slot *victim = &c->slot[0];
    for (size_t i = 0; i < c->n; i++) {
        struct qcow2_l2_slot *e = &c->slot[i];
        if (e->data && e->off == off) {
            e->used = ++c->tick;
            *out = e;
            *hit = true;
            return 0;
        }
        if (!e->data || e->used < victim->used)
            victim = e;
        if (!e->data)
            break;
    }
    *hit = false;
    if (!victim->data) {
        if (!c->writable && l2_total + cs > QCOW2_L2_CACHE_TOTAL) {
            /* the total is spent: evict our own least recently used table, or, holding
             * none, use the shared scratch buffer without caching */
            if (c->filled == 0) {
                if (l2_scratch_len < cs) {
                    free(l2_scratch);
                    l2_scratch = xmalloc(cs);
                    l2_scratch_len = cs;
                }
                *scratch = l2_scratch;
                *out = NULL;
                return 0;
            }
            victim = &c->slot[0];
            for (size_t i = 1; i < c->filled; i++)
                if (c->slot[i].used < victim->used)
                    victim = &c->slot[i];
        } else {
            victim->data = xmalloc(cs); /* slots are allocated as they are filled */
            c->filled++;
            if (!c->writable)
                l2_total += cs;
        }
    }
    int r = evict(m, victim);
    if (r < 0)
        return r;
    *out = victim;
    return 0;
}

int qcow2_l2_load(struct qcow2_image *m, uint64_t off, uint8_t **t)
{
    struct qcow2_l2_slot *e;
    bool hit;
    uint8_t *scratch;
    int r = find_slot(m, off, &e, &hit, &scratch);
    if (r < 0)
        return r;
    if (scratch) {
        if ((r = qio_pread(m->q, scratch, (size_t)m->cs, off)) < 0)
            return r;
        *t = scratch;
        return 0;
    }
    if (!hit) {
        if ((r = qio_pread(m->q, e->data, (size_t)m->cs, off)) < 0)
            return r;
        e->off = off;
        e->used = ++m->l2cache->tick;
    }
    *t = e->data;
    return 0;
}

int qcow2_l2_load_empty(struct qcow2_image *m, uint64_t off, uint8_t **t)
{
    struct qcow2_l2_slot *e;
    bool hit;
    uint8_t *scratch;
    int r = find_slot(m, off, &e, &hit, &scratch);
    if (r < 0)
        return r;
    if (scratch)
        return -EIO; /* only writable images make tables, and they always cache */
    e->off = off;
    e->used = ++m->l2cache->tick;
    *t = e->data;
    return 0;
}

static struct qcow2_l2_slot *slot_of(struct qcow2_image *m, const uint8_t *t)
{
    struct qcow2_l2_cache *c = m->l2cache;
    for (size_t i = 0; c && i < c->filled; i++)
        if (c->slot[i].data == t && c->slot[i].off)
            return &c->slot[i];
    return NULL;
}

void qcow2_l2_mark_dirty(struct qcow2_image *m, const uint8_t *t)
{
    struct qcow2_l2_slot *e = slot_of(m, t);
    if (e)
        e->dirty = true;
}

void qcow2_l2_forget(struct qcow2_image *m, uint64_t off)
{
    struct qcow2_l2_cache *c = m->l2cache;
    for (size_t i = 0; c && i < c->filled; i++)
        if (c->slot[i].off == off) {
            c->slot[i].off = 0;
            c->slot[i].dirty = false;
            c->slot[i].used = 0;
        }
}

int qcow2_l2_flush(struct qcow2_image *m)
{
    struct qcow2_l2_cache *c = m->l2cache;
    bool any = false;
    for (size_t i = 0; c && i < c->filled; i++)
        any |= c->slot[i].off && c->slot[i].dirty;
    if (!any)
        return 0;
    int r = write_dependencies(m);
    if (r < 0)
        return r;
    /* in offset order: one pass over the file, as deterministic as qemu's slot order */
    for (;;) {
        struct qcow2_l2_slot *next = NULL;
        for (size_t i = 0; i < c->filled; i++) {
            struct qcow2_l2_slot *e = &c->slot[i];
            if (e->off && e->dirty && (!next || e->off < next->off))
                next = e;
        }
        if (!next)
            break;
        if ((r = write_slot(m, next)) < 0)
            return r;
    }
    return qcow2_meta_flush(m);
}

int qcow2_write_l1_entry(struct qcow2_image *m, uint64_t l1_index)
{
    /* qemu 7.2 writes the file's request alignment's worth of entries: one for a buffered
     * file (a group of 512 bytes would also grow a file that ends inside the table) */
    uint8_t buf[8];
    be64_put(buf, m->l1[l1_index]);
    qio_event(m->q, BLKDBG_L1_UPDATE);
    int r = qcow2_meta_pwrite(m, QCOW2_OL_ACTIVE_L1, m->h.l1_table_offset + 8 * l1_index, buf,
                              sizeof(buf));
    if (r == 0)
        r = qcow2_meta_flush(m);
    return r;
}

int qcow2_grow_l1_table(struct qcow2_image *m, uint64_t min_size, bool exact)
{
    if (min_size <= m->h.l1_size)
        return 0;
    if (min_size > INT_MAX / 8)
        return -EFBIG;
    uint64_t n = min_size;
    if (!exact) {
        n = m->h.l1_size ? m->h.l1_size : 1;
        while (min_size > n)
            n = (n * 3 + 1) / 2;
    }
    if (n > QCOW2_MAX_L1_SIZE / 8)
        return -EFBIG;
    size_t bytes = (size_t)n * 8;
    size_t padded = (bytes + 511) & ~(size_t)511;
    uint64_t *nl1 = xcalloc(1, padded > 0 ? padded : 1);
    memcpy(nl1, m->l1, (size_t)m->h.l1_size * 8);
    int64_t noff = qcow2_alloc_clusters(m, bytes);
    if (noff < 0) {
        free(nl1);
        return (int)noff;
    }
    int r = qcow2_refcount_cache_flush(m);
    uint8_t *be = NULL;
    if (r == 0) {
        be = xcalloc(1, bytes);
        for (uint64_t i = 0; i < m->h.l1_size; i++)
            be64_put(be + 8 * i, nl1[i]);
        /* the clusters are new: nothing may be there (ign none) */
        r = qcow2_meta_pwrite(m, QCOW2_OL_NONE, (uint64_t)noff, be, bytes);
    }
    if (r == 0)
        r = qcow2_meta_flush(m);
    if (r == 0) {
        uint8_t hdr[12];
        be32_put(hdr, (uint32_t)n);
        be64_put(hdr + 4, (uint64_t)noff);
        /* qemu writes the header outside the overlap check */
        r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, QCOW2_OFF_L1_SIZE, hdr, sizeof(hdr));
        if (r == 0)
            r = qcow2_meta_flush(m);
    }
    free(be);
    if (r < 0) {
        free(nl1);
        qcow2_free_clusters(m, (uint64_t)noff, bytes, QCOW2_DISCARD_OTHER);
        return r;
    }
    uint64_t old_off = m->h.l1_table_offset, old_size = m->h.l1_size;
    free(m->l1);
    m->l1 = nl1;
    m->l1_loaded = n;
    m->h.l1_table_offset = (uint64_t)noff;
    m->h.l1_size = (uint32_t)n;
    guard_invalidate(m);
    if (old_size)
        qcow2_free_clusters(m, old_off, old_size * 8, QCOW2_DISCARD_OTHER);
    return 0;
}

/* qemu's l2_allocate: a new table (a copy of the old one, or zeros), written with every
 * dirty table, then the L1 entry pointing at it with OFLAG_COPIED. */
static int l2_allocate(struct qcow2_image *m, uint64_t l1_index)
{
    uint64_t old = m->l1[l1_index];
    uint64_t old_off = old & QCOW2_L1E_OFFSET_MASK;
    qcow2_l2_cache_init(m, true);
    int64_t noff = qcow2_alloc_clusters(m, m->h.l2_entries * m->h.l2_entry_size);
    if (noff < 0)
        return (int)noff;
    int r = qcow2_refcount_cache_flush(m);
    uint8_t *t = NULL;
    if (r == 0)
        r = qcow2_l2_load_empty(m, (uint64_t)noff, &t);
    if (r == 0) {
        if (!old_off) {
            memset(t, 0, (size_t)m->cs);
        } else {
            /* read the old table into the new slot (a cached copy may be dirty) */
            struct qcow2_l2_cache *c = m->l2cache;
            bool copied = false;
            for (size_t i = 0; i < c->filled; i++)
                if (c->slot[i].off == old_off && c->slot[i].data != t) {
                    memcpy(t, c->slot[i].data, (size_t)m->cs);
                    copied = true;
                    break;
                }
            if (!copied)
                r = qio_pread(m->q, t, (size_t)m->cs, old_off);
        }
    }
    if (r == 0) {
        qcow2_l2_mark_dirty(m, t);
        qcow2_overlap_add(m, QCOW2_OL_ACTIVE_L2, (uint64_t)noff, m->cs);
        r = qcow2_l2_flush(m);
    }
    if (r == 0) {
        m->l1[l1_index] = (uint64_t)noff | QCOW2_OFLAG_COPIED;
        r = qcow2_write_l1_entry(m, l1_index);
    }
    if (r < 0) {
        if (t)
            qcow2_l2_forget(m, (uint64_t)noff);
        m->l1[l1_index] = old;
        qcow2_free_clusters(m, (uint64_t)noff, m->cs, QCOW2_DISCARD_ALWAYS);
        guard_invalidate(m);
    }
    return r;
}

int qcow2_l2_table_for_write(struct qcow2_image *m, uint64_t off, uint8_t **t,
                             uint64_t *l2_index)
{
    unsigned cb = m->h.cluster_bits;
    uint64_t l1_index = off >> (cb + m->h.l2_bits);
    int r;
    if (l1_index >= m->h.l1_size && (r = qcow2_grow_l1_table(m, l1_index + 1, false)) < 0)
        return r;
    uint64_t l2_off = m->l1[l1_index] & QCOW2_L1E_OFFSET_MASK;
    if (l2_off & (m->cs - 1))
        return -EIO; /* the caller signals the corruption (it knows the image) */
    if (!(m->l1[l1_index] & QCOW2_OFLAG_COPIED)) {
        if ((r = l2_allocate(m, l1_index)) < 0)
            return r;
        if (l2_off) {
            qcow2_free_clusters(m, l2_off, m->h.l2_entries * m->h.l2_entry_size,
                                QCOW2_DISCARD_OTHER);
            guard_invalidate(m); /* the old table is no longer active */
        }
        l2_off = m->l1[l1_index] & QCOW2_L1E_OFFSET_MASK;
    }
    if ((r = qcow2_l2_load(m, l2_off, t)) < 0)
        return r;
    *l2_index = (off >> cb) & (m->h.l2_entries - 1);
    return 0;
}

int qcow2_shrink_l1_table(struct qcow2_image *m, uint64_t exact)
{
    if (exact >= m->h.l1_size)
        return 0;
    /* the tail entries zeroed on disk (the header's l1_size stays), then the tables freed
     * from the last one down */
    size_t len = (size_t)(m->h.l1_size - exact) * 8;
    uint8_t *z = xcalloc(1, len);
    int r = qcow2_meta_pwrite(m, QCOW2_OL_ACTIVE_L1, m->h.l1_table_offset + exact * 8, z, len);
    free(z);
    if (r == 0)
        r = qcow2_meta_flush(m);
    if (r < 0) {
        /* a partly written tail: forget it in memory too rather than trust either */
        memset(m->l1 + exact, 0, len);
        return r;
    }
    for (uint64_t i = m->h.l1_size; i-- > exact;) {
        uint64_t off = m->l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!off)
            continue;
        qcow2_free_clusters(m, off, m->cs, QCOW2_DISCARD_ALWAYS);
        m->l1[i] = 0;
    }
    guard_invalidate(m);
    return 0;
}
