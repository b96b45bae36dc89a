/* Internal snapshot create / delete / goto on the qcow2 model (see snapshot_write.h). */
#include "qcow2/snapshot_write.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_l2.h"
#include "qcow2/alloc.h"
#include "qcow2/header_write.h"
#include "qcow2/l2.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "util/xalloc.h"

/* qemu's bdrv_flush(bs) inside the driver: the caches written, the file flushed */
static int flush(struct qcow2_image *m)
{
    return qcow2_image_flush_caches(m);
}

/* a write followed by a barrier (qemu's bdrv_pwrite_sync) */
static int pwrite_sync(struct qcow2_image *m, unsigned ign, uint64_t off, const void *buf,
                       size_t len)
{
    int r = qcow2_meta_pwrite(m, ign, off, buf, len);
    return r < 0 ? r : qcow2_meta_flush(m);
}

static int corruption(char **corrupt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int corruption(char **corrupt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    char *msg = xstrdup(tmp);
    if (corrupt && !*corrupt)
        *corrupt = msg;
    else
        free(msg);
    return -EIO;
}

/* One L2 table's entries for qcow2_update_snapshot_refcount. */
static int update_l2(struct qcow2_image *m, uint64_t l2_off, int addend, char **corrupt)
{
    uint64_t n = m->cs / m->h.l2_entry_size;
    uint8_t *t;
    int r = qcow2_l2_load(m, l2_off, &t);
    if (r < 0)
        return r;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t old = qcow2_l2_get(m, t, j), e = old & ~QCOW2_OFLAG_COPIED;
        uint64_t off = qcow2_l2e_offset(e), refcount = 0;
        switch (qcow2_l2e_type(&m->geom, e)) {
        case QCOW2_CLUSTER_COMPRESSED:
            if (addend) {
                struct qcow2_compressed c;
                qcow2_compressed_decode(m->h.cluster_bits, e, &c);
                r = qcow2_update_refcount(m, c.host_offset, c.csize, addend,
                                          QCOW2_DISCARD_SNAPSHOT);
                if (r < 0)
                    return r;
            }
            refcount = 2;   /* compressed clusters are never rewritten in place */
            break;
        case QCOW2_CLUSTER_NORMAL:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            if (off & (m->cs - 1))
                return corruption(corrupt, "Cluster allocation offset %#" PRIx64 " unaligned "
                                  "(L2 offset: %#" PRIx64 ", L2 index: %#" PRIx64 ")", off,
                                  l2_off, j);
            if (addend && (r = qcow2_update_refcount(m, off, 1, addend,
                                                     QCOW2_DISCARD_SNAPSHOT)) < 0)
                return r;
            if ((r = qcow2_image_refcount(m, off >> m->h.cluster_bits, &refcount)) < 0)
                return r;
            break;
        default:
            break;
        }
        if (refcount == 1)
            e |= QCOW2_OFLAG_COPIED;
        if (e == old)
            continue;
        /* the refcount updates may have moved the cache under us */
        if ((r = qcow2_l2_load(m, l2_off, &t)) < 0)
            return r;
        if (addend > 0 && (r = qcow2_l2_depends_on_refblocks(m)) < 0)
            return r;
        qcow2_l2_set(m, t, j, e);
        qcow2_l2_mark_dirty(m, t);
    }
    return 0;
}

int qcow2_update_snapshot_refcount(struct qcow2_image *m, uint64_t l1_off, uint64_t l1_size,
                                   int addend, char **corrupt)
{
    bool active = l1_off == m->h.l1_table_offset;
    uint64_t *l1;
    int r;
    if (active) {
        if (l1_size != m->h.l1_size)
            return -EINVAL;
        l1 = m->l1;
    } else {
        /* bounded by the caller's validation (QCOW2_MAX_L1_SIZE) */
        l1 = xcalloc(l1_size ? l1_size : 1, 8);
        if ((r = qio_pread(m->q, l1, l1_size * 8, l1_off)) < 0) {
            free(l1);
            return r;
        }
        for (uint64_t i = 0; i < l1_size; i++)
            l1[i] = be64_get((uint8_t *)&l1[i]);
    }
    bool modified = false;
    r = 0;
    for (uint64_t i = 0; i < l1_size && r >= 0; i++) {
        uint64_t old = l1[i], l2 = old & QCOW2_L1E_OFFSET_MASK, refcount;
        if (!old)
            continue;
        if (!l2)
            continue;   /* flags alone: qemu would take cluster 0 for a table; qimg skips it */
        if (l2 & (m->cs - 1)) {
            r = corruption(corrupt, "L2 table offset %#" PRIx64 " unaligned (L1 index: %#"
                           PRIx64 ")", l2, i);
            break;
        }
        if ((r = update_l2(m, l2, addend, corrupt)) < 0)
            break;
        if (addend && (r = qcow2_update_refcount(m, l2, 1, addend,
                                                 QCOW2_DISCARD_SNAPSHOT)) < 0)
            break;
        if ((r = qcow2_image_refcount(m, l2 >> m->h.cluster_bits, &refcount)) < 0)
            break;
        if (refcount == 1)
            l2 |= QCOW2_OFLAG_COPIED;
        if (l2 != old) {
            l1[i] = l2;
            modified = true;
        }
    }
    if (r >= 0)
        r = flush(m);
    /* the L1 table is written unless it is being deleted (addend -1) */
    if (r >= 0 && addend >= 0 && modified) {
        uint8_t *buf = xcalloc(l1_size ? l1_size : 1, 8);
        for (uint64_t i = 0; i < l1_size; i++)
            be64_put(buf + i * 8, l1[i]);
        /* qemu writes it without the overlap check */
        r = pwrite_sync(m, QCOW2_OL_ALL, l1_off, buf, l1_size * 8);
        free(buf);
    }
    if (!active)
        free(l1);
    if (active)
        qcow2_overlap_invalidate(m);   /* the active L1 entries changed */
    return r;
}

/* One entry written as qemu writes it: header, extra data, id and name each on its own,
 * so that the padding between entries keeps what the file held there. */
static int write_entry(struct qcow2_image *m, const struct qcow2_snapshot *sn, uint64_t at)
{
    uint64_t len = qcow2_snapshot_encoded_size(sn);
    uint8_t *buf = xcalloc(1, (size_t)len);
    int64_t w = qcow2_snapshot_encode(sn, buf, (size_t)len);
    int r = w < 0 ? (int)w : 0;
    uint64_t extra = QCOW2_SN_EXTRA_KNOWN + (uint64_t)sn->unknown_extra_len;
    uint64_t parts[5][2] = {
        { 0, QCOW2_SN_HDR_SIZE },
        { QCOW2_SN_HDR_SIZE, QCOW2_SN_EXTRA_KNOWN },
        { QCOW2_SN_HDR_SIZE + QCOW2_SN_EXTRA_KNOWN, sn->unknown_extra_len },
        { QCOW2_SN_HDR_SIZE + extra, sn->id_str_size },
        { QCOW2_SN_HDR_SIZE + extra + sn->id_str_size, sn->name_size },
    };
    /* guarded once for the whole table by the caller, as qemu */
    for (unsigned i = 0; i < 5 && r >= 0; i++)
        if (parts[i][1])
            r = qcow2_meta_pwrite(m, QCOW2_OL_ALL, at + parts[i][0], buf + parts[i][0],
                                  (size_t)parts[i][1]);
    free(buf);
    return r;
}

int qcow2_write_snapshots(struct qcow2_image *m)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < m->nb_sn; i++) {
        struct qcow2_snapshot *sn = &m->sn[i];
        /* qemu writes strlen() of what it read: bytes from the first NUL on are dropped */
        sn->id_str_size = (uint16_t)strnlen(sn->id_str ? sn->id_str : "", sn->id_str_size);
        sn->name_size = (uint16_t)strnlen(sn->name ? sn->name : "", sn->name_size);
        size = (size + 7) & ~7ull;
        size += qcow2_snapshot_encoded_size(sn);
        if (size > QCOW2_MAX_SNAPSHOTS_SIZE)
            return -EFBIG;
    }
    int64_t off = qcow2_alloc_clusters(m, size);
    if (off < 0)
        return (int)off;
    int r = flush(m);
    /* every class: these clusters must be free */
    if (r >= 0)
        r = qcow2_overlap_check(m, QCOW2_OL_NONE, (uint64_t)off, size);
    uint64_t pos = 0;
    for (uint32_t i = 0; i < m->nb_sn && r >= 0; i++) {
        pos = (pos + 7) & ~7ull;
        r = write_entry(m, &m->sn[i], (uint64_t)off + pos);
        pos += qcow2_snapshot_encoded_size(&m->sn[i]);
    }
    /* the new table and its refcounts on disk before the header points at them */
    if (r >= 0)
        r = flush(m);
    uint8_t hd[12];
    be32_put(hd, m->nb_sn);
    be64_put(hd + 4, (uint64_t)off);
    if (r >= 0)
        r = pwrite_sync(m, QCOW2_OL_ALL, 60, hd, sizeof(hd));
    if (r < 0) {
        if (off > 0)
            qcow2_free_clusters(m, (uint64_t)off, size, QCOW2_DISCARD_ALWAYS);
        return r;
    }
    uint64_t old_off = m->sn_offset, old_size = m->sn_size;
    m->h.nb_snapshots = m->nb_sn;
    m->h.snapshots_offset = (uint64_t)off;
    m->sn_offset = (uint64_t)off;
    m->sn_size = size;
    qcow2_overlap_invalidate(m);
    qcow2_free_clusters(m, old_off, old_size, QCOW2_DISCARD_SNAPSHOT);
    return 0;
}

long qcow2_snapshot_find(const struct qcow2_image *m, const char *id, const char *name)
{
    if (!id && !name)
        return -1;
    for (uint32_t i = 0; i < m->nb_sn; i++) {
        const struct qcow2_snapshot *sn = &m->sn[i];
        if ((!id || !strcmp(sn->id_str ? sn->id_str : "", id)) &&
            (!name || !strcmp(sn->name ? sn->name : "", name)))
            return (long)i;
    }
    return -1;
}

long qcow2_snapshot_find_id_or_name(const struct qcow2_image *m, const char *s)
{
    long i = qcow2_snapshot_find(m, s, NULL);
    return i >= 0 ? i : qcow2_snapshot_find(m, NULL, s);
}

int qcow2_snapshot_validate_l1(const struct qcow2_image *m, uint32_t index, const char **msg)
{
    const struct qcow2_snapshot *sn = &m->sn[index];
    if (sn->l1_size > QCOW2_MAX_L1_SIZE / 8) {
        *msg = "Snapshot L1 table too large";
        return -EFBIG;
    }
    if ((uint64_t)INT64_MAX - (uint64_t)sn->l1_size * 8 < sn->l1_table_offset ||
        (sn->l1_table_offset & (m->cs - 1))) {
        *msg = "Snapshot L1 table offset invalid";
        return -EINVAL;
    }
    return 0;
}

/* qemu's find_new_snapshot_id: one more than the largest numeric id */
static char *new_id(const struct qcow2_image *m)
{
    unsigned long max = 0;
    for (uint32_t i = 0; i < m->nb_sn; i++) {
        unsigned long id = strtoul(m->sn[i].id_str ? m->sn[i].id_str : "", NULL, 10);
        if (id > max)
            max = id;
    }
    return xasprintf("%lu", max + 1);
}

int qcow2_snapshot_create(struct qcow2_image *m, const char *name, uint32_t date_sec,
                          uint32_t date_nsec, char **corrupt)
{
    if (m->nb_sn >= QCOW2_MAX_SNAPSHOTS)
        return -EFBIG;
    if (m->geom.data_file)
        return -ENOTSUP;
    struct qcow2_snapshot sn;
    memset(&sn, 0, sizeof(sn));
    /* qemu keeps at most 255 bytes of the name (QEMUSnapshotInfo.name) */
    sn.name = xasprintf("%.*s", (int)strnlen(name, 255), name);
    sn.id_str = new_id(m);
    sn.id_str_size = (uint16_t)strlen(sn.id_str);
    sn.name_size = (uint16_t)strlen(sn.name);
    sn.disk_size = m->h.size & ~(uint64_t)511;
    sn.date_sec = date_sec;
    sn.date_nsec = date_nsec;
    sn.icount = 0;
    sn.extra_data_size = QCOW2_SN_EXTRA_KNOWN;
    sn.has_disk_size = sn.has_icount = true;

    uint64_t l1_bytes = (uint64_t)m->h.l1_size * 8;
    int64_t l1_off = qcow2_alloc_clusters(m, l1_bytes);
    int r;
    if (l1_off < 0) {
        r = (int)l1_off;
        goto fail;
    }
    sn.l1_table_offset = (uint64_t)l1_off;
    sn.l1_size = m->h.l1_size;
    if (l1_bytes) {
        uint8_t *buf = xcalloc(1, (size_t)l1_bytes);
        for (uint64_t i = 0; i < m->h.l1_size; i++)
            be64_put(buf + i * 8, m->l1[i]);
        r = qcow2_meta_pwrite(m, QCOW2_OL_NONE, sn.l1_table_offset, buf, (size_t)l1_bytes);
        free(buf);
        if (r < 0)
            goto fail;
    }
    /* every cluster's refcount raised and on disk before the table names the new L1 */
    if ((r = qcow2_update_snapshot_refcount(m, m->h.l1_table_offset, m->h.l1_size, 1,
                                            corrupt)) < 0)
        goto fail;
    m->sn = xreallocarray(m->sn, (size_t)m->nb_sn + 1, sizeof(*m->sn));
    m->sn[m->nb_sn++] = sn;
    if ((r = qcow2_write_snapshots(m)) < 0) {
        m->nb_sn--;
        goto fail;
    }
    /* qemu then discards the VM state area in the active L1: none here (vm_state_size 0) */
    return 0;
fail:
    qcow2_snapshot_free(&sn);
    return r;
}

int qcow2_snapshot_delete_at(struct qcow2_image *m, uint32_t index, const char **what,
                             char **corrupt)
{
    *what = NULL;
    if (m->geom.data_file)
        return -ENOTSUP;
    struct qcow2_snapshot sn = m->sn[index];
    memmove(m->sn + index, m->sn + index + 1, (m->nb_sn - index - 1) * sizeof(*m->sn));
    m->nb_sn--;
    int r = qcow2_write_snapshots(m);
    if (r < 0) {
        /* as qemu, the entry stays out of the in-memory list */
        qcow2_snapshot_free(&sn);
        *what = "Failed to remove snapshot from snapshot list";
        return r;
    }
    /* from here on a failure only leaks clusters */
    uint64_t l1_off = sn.l1_table_offset, l1_size = sn.l1_size;
    qcow2_snapshot_free(&sn);
    if ((r = qcow2_update_snapshot_refcount(m, l1_off, l1_size, -1, corrupt)) < 0) {
        *what = "Failed to free the cluster and L1 table";
        return r;
    }
    qcow2_free_clusters(m, l1_off, l1_size * 8, QCOW2_DISCARD_SNAPSHOT);
    /* OFLAG_COPIED where the active tables' refcounts dropped to 1 */
    if ((r = qcow2_update_snapshot_refcount(m, m->h.l1_table_offset, m->h.l1_size, 0,
                                            corrupt)) < 0) {
        *what = "Failed to update snapshot status in disk";
        return r;
    }
    return 0;
}

int qcow2_snapshot_goto_at(struct qcow2_image *m, uint32_t index, char **corrupt)
{
    if (m->geom.data_file)
        return -ENOTSUP;
    uint64_t sn_off = m->sn[index].l1_table_offset, sn_size = m->sn[index].l1_size;
    /* the active table at least as long as the snapshot's (the rest reads as zeros) */
    int r = qcow2_grow_l1_table(m, sn_size, true);
    if (r < 0)
        return r;
    qcow2_overlap_invalidate(m);
    uint64_t cur = m->h.l1_size;
    uint8_t *buf = xcalloc(cur ? cur : 1, 8);
    if ((r = qio_pread(m->q, buf, sn_size * 8, sn_off)) < 0)
        goto out;
    /* the new tables' references first, then the L1 switch, then the old ones dropped */
    if ((r = qcow2_update_snapshot_refcount(m, sn_off, sn_size, 1, corrupt)) < 0)
        goto out;
    if ((r = pwrite_sync(m, QCOW2_OL_ACTIVE_L1, m->h.l1_table_offset, buf, cur * 8)) < 0)
        goto out;
    r = qcow2_update_snapshot_refcount(m, m->h.l1_table_offset, cur, -1, corrupt);
    /* the model follows the disk even if that failed */
    for (uint64_t i = 0; i < cur; i++)
        m->l1[i] = be64_get(buf + i * 8);
    qcow2_overlap_invalidate(m);
    if (r < 0)
        goto out;
    r = qcow2_update_snapshot_refcount(m, m->h.l1_table_offset, cur, 0, corrupt);
out:
    free(buf);
    return r;
}
