/* qemu's qcow2_make_empty. A v3 image without snapshots, bitmaps, LUKS or a data file,
 * whose L1 table and three more clusters fit one refblock, is reset completely as qemu's
 * make_completely_empty does: dirty bit set, L1 zeroed, clusters 1..2+l1_clusters zeroed,
 * the header pointed at a one-cluster reftable at cluster 1 (its refblock at cluster 2) and
 * an empty L1 at cluster 3, the refblock counting clusters 0..2+l1_clusters, the dirty bit
 * cleared and the file cut after the L1 table. Any other image has every cluster discarded
 * (qcow2_cluster_discard with full_discard). A crash in the middle leaves a dirty image,
 * which the next read-write open repairs (qemu's design). */
#include "block/make_empty.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "format/qcow2_refcount.h"
#include "qcow2/header_write.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "format/be.h"
#include "util/xalloc.h"

static int zero_range(struct qcow2_image *m, uint64_t off, uint64_t len)
{
    uint8_t *z = xcalloc(1, (size_t)len);
    int r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, off, z, (size_t)len);
    free(z);
    return r;
}

static int completely_empty(struct qcow2_state *s, uint64_t l1_clusters)
{
    struct qcow2_image *m = &s->m;
    uint64_t cs = m->cs, k = 3 + l1_clusters;
    int r;
    /* qemu's qcow2_cache_empty of both caches: dirty entries written first */
    if ((m->l2_flush && (r = m->l2_flush(m)) < 0) || (m->rb_flush && (r = m->rb_flush(m)) < 0))
        return r;
    if (m->port)
        wport_label(&m->port->w, PC_HEADER, "commit: make the image empty");
    if ((r = qcow2_image_mark_dirty(m)) < 0 ||
        (r = zero_range(m, m->h.l1_table_offset, l1_clusters * cs)) < 0 ||
        (r = zero_range(m, cs, (2 + l1_clusters) * cs)) < 0)
        return r;
    uint8_t f[20];
    be64_put(f, 3 * cs);
    be64_put(f + 8, cs);
    be32_put(f + 16, 1);
    if ((r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, QCOW2_OFF_L1_OFFSET, f, sizeof(f))) < 0 ||
        (r = qcow2_meta_flush(m)) < 0)
        return r;
    uint8_t e[8];
    be64_put(e, 2 * cs);
    if ((r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, cs, e, sizeof(e))) < 0 ||
        (r = qcow2_meta_flush(m)) < 0)
        return r;
    /* the model follows: empty L1 and reftable with the one refblock */
    m->h.l1_table_offset = 3 * cs;
    memset(m->l1, 0, (size_t)m->h.l1_size * 8);
    m->h.refcount_table_offset = cs;
    m->h.refcount_table_clusters = 1;
    m->h.reftable_entries = cs / 8;
    free(m->rt);
    m->rt = xcalloc((size_t)(cs / 8), 8);
    m->rt[0] = 2 * cs;
    m->rt_loaded = m->rt_entries = cs / 8;
    qcow2_rb_cache_drop(&m->rb);
    qcow2_overlap_invalidate(m);
    /* the refblock as qemu's qcow2_alloc_clusters(3 * cs + l1 bytes) leaves it */
    uint8_t *rb = xcalloc(1, (size_t)cs);
    for (uint64_t i = 0; i < k; i++)
        qcow2_refblock_put(rb, m->h.refcount_order, i, 1);
    r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, 2 * cs, rb, (size_t)cs);
    free(rb);
    if (r < 0)
        return r;
    m->free_cluster_index = k;
    if ((r = qcow2_image_mark_clean(m)) < 0)
        return r;
    r = qcow2_meta_truncate(m, k * cs);
    if (r == 0)
        m->file_size = k * cs;
    return r;
}

int image_make_empty(image_t *img)
{
    if (strcmp(img->format, "qcow2"))
        return -ENOTSUP;
    struct qcow2_state *s = img->priv;
    uint64_t cs = s->cs;
    uint64_t l1_clusters = ((uint64_t)s->h.l1_size + cs / 8 - 1) / (cs / 8);
    uint64_t rb_entries = (cs * 8) >> s->h.refcount_order;
    if (s->h.version >= 3 && s->h.nb_snapshots == 0 && s->nb_bm == 0 &&
        3 + l1_clusters <= rb_entries && s->h.crypt_method != QCOW2_CRYPT_LUKS &&
        !s->geom.data_file)
        return completely_empty(s, l1_clusters);
    /* qemu steps by INT_MAX rounded down to clusters */
    uint64_t step = (0x7fffffffu / cs) * cs, end = img->size;
    for (uint64_t off = 0; off < end; off += step) {
        int r = qcow2_discard_full(img, off, end - off < step ? end - off : step);
        if (r < 0)
            return r;
    }
    return 0;
}
