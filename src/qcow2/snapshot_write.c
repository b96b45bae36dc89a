/* qemu's qcow2_write_snapshots on the one qcow2 model (see snapshot_write.h). */
#include "qcow2/snapshot_write.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_header.h"
#include "format/qcow2_snapshot.h"
#include "qcow2/alloc.h"
#include "qcow2/header_write.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "util/xalloc.h"

int qcow2_image_write_snapshots(struct qcow2_image *m)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < m->nb_sn; i++) {
        struct qcow2_snapshot *sn = &m->sn[i];
        /* qemu keeps id and name as C strings and writes strlen() of each */
        sn->id_str_size = (uint16_t)strlen(sn->id_str ? sn->id_str : "");
        sn->name_size = (uint16_t)strlen(sn->name ? sn->name : "");
        size = (size + 7) & ~7ull;
        size += qcow2_snapshot_encoded_size(sn);
        if (qcow2_snapshot_table_too_big(size))
            return -EFBIG;
    }
    int64_t off = 0;
    uint8_t *t = NULL;
    int r = 0;
    if (size) {
        t = xcalloc(1, (size_t)size);
        uint64_t pos = 0;
        for (uint32_t i = 0; i < m->nb_sn; i++) {
            pos = (pos + 7) & ~7ull;
            int64_t w = qcow2_snapshot_encode(&m->sn[i], t + pos, (size_t)(size - pos));
            if (w < 0) {
                free(t);
                return (int)w;
            }
            pos += (uint64_t)w;
        }
        off = qcow2_alloc_clusters(m, size);
        if (off < 0) {
            free(t);
            return (int)off;
        }
        /* bdrv_flush: the refcounts of the new table before the table */
        if ((r = qcow2_image_flush_caches(m)) < 0 ||
            (r = qcow2_meta_pwrite(m, QCOW2_OL_NONE, (uint64_t)off, t, (size_t)size)) < 0 ||
            (r = qcow2_image_flush_caches(m)) < 0)
            goto fail;
    }
    uint8_t hd[12];
    be32_put(hd, m->nb_sn);
    be64_put(hd + 4, (uint64_t)off);
    if ((r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, QCOW2_OFF_NB_SNAPSHOTS, hd, sizeof(hd))) < 0 ||
        (r = qcow2_meta_flush(m)) < 0)
        goto fail;
    free(t);
    uint64_t old_off = m->sn_offset, old_size = m->sn_size;
    m->h.nb_snapshots = m->nb_sn;
    m->h.snapshots_offset = (uint64_t)off;
    m->sn_offset = (uint64_t)off;
    m->sn_size = size;
    qcow2_overlap_invalidate(m);
    if (old_size)
        qcow2_free_clusters(m, old_off, old_size, QCOW2_DISCARD_SNAPSHOT);
    /* the header kept in memory for later rewrites */
    if (m->c0 && m->c0_len >= QCOW2_OFF_NB_SNAPSHOTS + sizeof(hd))
        memcpy(m->c0 + QCOW2_OFF_NB_SNAPSHOTS, hd, sizeof(hd));
    return 0;
fail:
    free(t);
    if (off > 0)
        qcow2_free_clusters(m, (uint64_t)off, size, QCOW2_DISCARD_ALWAYS);
    return r;
}
