/* qemu's qcow2_expand_zero_clusters / expand_zero_clusters_in_l1 (block/qcow2-cluster.c)
 * on the qcow2 driver's model (see qcow2_amend.h). Order for a crash at any write: a new
 * cluster's refcount and the zeros are on disk before the L2 entry naming it (the L2 cache
 * writes refblocks and flushes data first; a snapshot's table, written directly, waits
 * for the same flushes), so a cut leaves at most leaked clusters. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "block/qcow2_amend.h"
#include "block/qcow2_int.h"
#include "format/be.h"
#include "qcow2/alloc.h"
#include "qcow2/header_write.h"
#include "qcow2/l2.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "util/err.h"
#include "util/xalloc.h"

struct walk {
    image_t *img;
    amend_status_fn cb;
    void *opaque;
    int64_t visited, total;
};

static void step(struct walk *w)
{
    w->visited++;
    if (w->cb)
        w->cb(w->opaque, w->visited, w->total);
}

/* bdrv_pwrite_zeroes(s->data_file, off, cs, 0) */
static int zero_cluster(image_t *img, uint64_t off, uint64_t cs)
{
    int r = posix_write_zeroes(img->data_file, off, cs, false);
    if (r != -ENOTSUP)
        return r;
    uint8_t *z = xcalloc(1, (size_t)cs);
    r = qio_pwrite(img->data_file, z, (size_t)cs, off);
    free(z);
    return r;
}

/* One L2 table (active: t is the cache's; inactive: a private copy). Sets *dirty. */
static int expand_table(struct walk *w, uint8_t *t, uint64_t l2_offset, uint64_t l2_refcount,
                        bool *dirty)
{
    image_t *img = w->img;
    struct qcow2_state *s = img->priv;
    struct qcow2_image *m = &s->m;
    const uint64_t cs = m->cs;
    for (uint64_t j = 0; j < s->h.l2_entries; j++) {
        uint64_t e = qcow2_l2_get(m, t, j);
        enum qcow2_cluster_type type = qcow2_l2e_type(&s->geom, e);
        if (type != QCOW2_CLUSTER_ZERO_PLAIN && type != QCOW2_CLUSTER_ZERO_ALLOC)
            continue;
        uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
        bool fresh = false;
        int r;
        if (type == QCOW2_CLUSTER_ZERO_PLAIN) {
            if (!img->backing) {
                /* not backed: the cluster is simply deallocated */
                qcow2_l2_set(m, t, j, 0);
                *dirty = true;
                continue;
            }
            int64_t a = qcow2_alloc_clusters(m, cs);
            if (a < 0)
                return (int)a;
            off = (uint64_t)a;
            fresh = true;
            if (l2_refcount > 1 &&
                (r = qcow2_update_refcount(m, off, cs, (int64_t)l2_refcount - 1,
                                           QCOW2_DISCARD_OTHER)) < 0) {
                qcow2_free_clusters(m, off, cs, QCOW2_DISCARD_OTHER);
                return r;
            }
        }
        if (off & (cs - 1)) {
            image_corrupt(img, "Cluster allocation offset %#llx unaligned (L2 offset: %#llx, "
                          "L2 index: %#x)", (unsigned long long)off,
                          (unsigned long long)l2_offset, (unsigned)j);
            if (fresh)
                qcow2_free_clusters(m, off, cs, QCOW2_DISCARD_ALWAYS);
            return -EIO;
        }
        if ((r = qcow2_overlap_check(m, 0, off, cs)) < 0 ||
            (r = zero_cluster(img, off, cs)) < 0) {
            if (fresh)
                qcow2_free_clusters(m, off, cs, QCOW2_DISCARD_ALWAYS);
            return r;
        }
        /* the new cluster's refcount reaches the disk before the entry naming it */
        if (fresh && (r = qcow2_l2_depends_on_refblocks(m)) < 0)
            return r;
        /* qemu 7.2 sets COPIED whenever the table's refcount is 1, also on a preallocated
         * zero cluster a snapshot shares (refcount > 1): check then reports "OFLAG_COPIED
         * data cluster" corruption. qimg sets it only when the cluster's refcount is 1
         * too (README: Differences from qemu-img) */
        uint64_t rc = 1;
        if (!fresh && l2_refcount == 1 && (r = qcow2_image_refcount(m, off / cs, &rc)) < 0)
            return r;
        qcow2_l2_set(m, t, j, off | (l2_refcount == 1 && rc == 1 ? QCOW2_OFLAG_COPIED : 0));
        *dirty = true;
    }
    return 0;
}

static int expand_l1(struct walk *w, const uint64_t *l1, uint64_t l1_size, bool active)
{
    image_t *img = w->img;
    struct qcow2_state *s = img->priv;
    struct qcow2_image *m = &s->m;
    const uint64_t cs = m->cs;
    uint8_t *buf = active ? NULL : xmalloc((size_t)cs);
    int r = 0;
    for (uint64_t i = 0; i < l1_size; i++) {
        uint64_t l2_offset = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2_offset) {
            step(w);
            continue;
        }
        if (l2_offset & (cs - 1)) {
            image_corrupt(img, "L2 table offset %#llx unaligned (L1 index: %#x)",
                          (unsigned long long)l2_offset, (unsigned)i);
            r = -EIO;
            break;
        }
        uint64_t l2_refcount;
        if ((r = qcow2_image_refcount(m, l2_offset / cs, &l2_refcount)) < 0)
            break;
        bool dirty = false;
        uint8_t *t;
        if (active) {
            if ((r = qcow2_l2_load(m, l2_offset, &t)) < 0)
                break;
        } else {
            t = buf;
            if ((r = qio_pread(m->q, t, (size_t)cs, l2_offset)) < 0)
                break;
        }
        if ((r = expand_table(w, t, l2_offset, l2_refcount, &dirty)) < 0)
            break;
        if (dirty && active) {
            qcow2_l2_mark_dirty(m, t);
        } else if (dirty) {
            /* qemu writes it at once; qimg first puts the refcounts and zeros it names on
             * disk (the cache path's order) */
            if ((r = qcow2_image_flush_caches(m)) < 0 ||
                (r = qio_flush(img->data_file)) < 0 ||
                (r = qcow2_meta_pwrite(m, QCOW2_OL_INACTIVE_L2 | QCOW2_OL_ACTIVE_L2, l2_offset,
                                       t, (size_t)cs)) < 0)
                break;
        }
        step(w);
    }
    free(buf);
    return r;
}

int qcow2_expand_zero_clusters(image_t *img, amend_status_fn cb, void *opaque)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_image *m = &s->m;
    struct walk w = { .img = img, .cb = cb, .opaque = opaque };
    w.total = s->h.l1_size;
    for (uint32_t i = 0; i < s->nb_sn; i++)
        w.total += s->sn[i].l1_size;
    int r = expand_l1(&w, s->l1, s->h.l1_size, true);
    if (r < 0)
        return r;
    /* qcow2_cache_empty: the active tables written and forgotten, since a snapshot's L1
     * may name them and they are now changed on disk directly */
    if ((r = qcow2_l2_flush(m)) < 0)
        return r;
    qcow2_l2_cache_free(m);
    qcow2_l2_cache_init(m, true);
    uint64_t *l1 = NULL;
    for (uint32_t i = 0; i < s->nb_sn && r == 0; i++) {
        const struct qcow2_snapshot *sn = &s->sn[i];
        /* qcow2_validate_table(QCOW_MAX_L1_SIZE), reported as qemu does, on its own line */
        uint64_t n = sn->l1_size;
        if (n > QCOW2_MAX_L1_SIZE / 8) {
            err_report("Snapshot L1 table too large");
            r = -EFBIG;
            break;
        }
        if ((uint64_t)INT64_MAX - n * 8 < sn->l1_table_offset ||
            (sn->l1_table_offset & (m->cs - 1))) {
            err_report("Snapshot L1 table offset invalid");
            r = -EINVAL;
            break;
        }
        free(l1);
        l1 = xmalloc(n ? (size_t)n * 8 : 1);
        if (n && (r = qio_pread(m->q, l1, (size_t)n * 8, sn->l1_table_offset)) < 0)
            break;
        for (uint64_t k = 0; k < n; k++)
            l1[k] = be64_get((uint8_t *)&l1[k]);
        r = expand_l1(&w, l1, n, false);
    }
    free(l1);
    return r;
}
