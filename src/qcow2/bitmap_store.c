/* Persistent dirty bitmaps in memory, loaded at a read-write open and stored at close
 * (see bitmap_store.h). */
#include "qcow2/bitmap_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_bitmap.h"
#include "format/qcow2_ext.h"
#include "qcow2/alloc.h"
#include "qcow2/bitmaps.h"
#include "qcow2/header_write.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "util/xalloc.h"

/* qemu's bdrv_getlength for the bitmaps: the size in whole sectors */
static uint64_t disk_size(const struct qcow2_image *m)
{
    return m->h.size & ~(uint64_t)511;
}

static void dbitmap_geometry(struct qcow2_dbitmap *b, uint64_t size)
{
    b->nbits = size ? ((size - 1) >> b->gran_bits) + 1 : 0;
    b->nbytes = ((b->nbits + 63) / 64) * 8;
}

static struct qcow2_dbitmap *dbitmap_new(struct qcow2_image *m, const char *name,
                                         uint32_t gran_bits)
{
    if (!m->dbm)
        m->dbm = xcalloc(1, sizeof(*m->dbm));
    struct qcow2_dbitmaps *l = m->dbm;
    l->v = xreallocarray(l->v, (size_t)l->n + 1, sizeof(*l->v));
    struct qcow2_dbitmap *b = &l->v[l->n++];
    memset(b, 0, sizeof(*b));
    b->name = xstrdup(name);
    b->gran_bits = gran_bits;
    dbitmap_geometry(b, disk_size(m));
    return b;
}

struct qcow2_dbitmap *qcow2_dbitmap_find(struct qcow2_image *m, const char *name)
{
    for (uint32_t i = 0; m->dbm && i < m->dbm->n; i++)
        if (!strcmp(m->dbm->v[i].name, name))
            return &m->dbm->v[i];
    return NULL;
}

struct qcow2_dbitmap *qcow2_dbitmap_add(struct qcow2_image *m, const char *name,
                                        uint32_t gran_bits, bool enabled)
{
    struct qcow2_dbitmap *b = dbitmap_new(m, name, gran_bits);
    b->enabled = enabled;
    b->bits = calloc(1, (size_t)(b->nbytes ? b->nbytes : 1));
    if (!b->bits) {
        free(b->name);
        m->dbm->n--;
        return NULL;
    }
    return b;
}

int qcow2_bitmaps_truncate_check(struct qcow2_image *m, char **errmsg)
{
    for (uint32_t i = 0; i < m->nb_bm; i++) {
        const struct qcow2_dbitmap *b = qcow2_dbitmap_find(m, m->bm[i].name);
        if (!b) {
            *errmsg = xstrdup("Cannot resize qcow2 with persistent bitmaps that were not "
                              "loaded into memory");
            return -ENOTSUP;
        }
        if (b->inconsistent) {
            /* bdrv_dirty_bitmap_check's error and hint */
            *errmsg = xasprintf("Bitmap '%s' is inconsistent and cannot be used\n"
                                "Try block-dirty-bitmap-remove to delete this bitmap from disk",
                                b->name);
            return -ENOTSUP;
        }
    }
    return 0;
}

int qcow2_bitmaps_resize(struct qcow2_image *m, uint64_t size)
{
    for (uint32_t i = 0; m->dbm && i < m->dbm->n; i++) {
        struct qcow2_dbitmap *b = &m->dbm->v[i], nb = *b;
        dbitmap_geometry(&nb, size & ~(uint64_t)511);
        if (!b->bits) {
            *b = nb;
            continue;
        }
        uint8_t *p = realloc(b->bits, (size_t)(nb.nbytes ? nb.nbytes : 1));
        if (!p)
            return -ENOMEM;
        if (nb.nbytes > b->nbytes)
            memset(p + b->nbytes, 0, (size_t)(nb.nbytes - b->nbytes));
        uint64_t keep = nb.nbits < b->nbits ? nb.nbits : b->nbits;
        for (uint64_t k = keep; k < nb.nbytes * 8; k++)
            p[k / 8] &= (uint8_t)~(1u << (k % 8));
        nb.bits = p;
        *b = nb;
    }
    return 0;
}

void qcow2_bitmaps_free(struct qcow2_image *m)
{
    if (!m->dbm)
        return;
    for (uint32_t i = 0; i < m->dbm->n; i++) {
        free(m->dbm->v[i].name);
        free(m->dbm->v[i].bits);
    }
    free(m->dbm->v);
    free(m->dbm);
    m->dbm = NULL;
}

/* load_bitmap_data: the table's clusters into b->bits (entry 0: zeros, 1: ones) */
static int load_data(struct qcow2_image *m, const struct qcow2_bitmap_dirent *e,
                     struct qcow2_dbitmap *b)
{
    uint64_t *t, bad;
    int rc = qcow2_bitmap_table_load(qio_pread_cb, m->q, m->h.cluster_bits, e, &t, &bad);
    if (rc < 0)
        return rc;
    /* the open checked table_size against the disk: it covers nbytes exactly */
    b->bits = calloc(1, (size_t)(b->nbytes ? b->nbytes : 1));
    if (!b->bits) {
        free(t);
        return -ENOMEM;
    }
    for (uint64_t k = 0; rc == 0 && k < e->bitmap_table_size; k++) {
        uint64_t from = k * m->cs;
        if (from >= b->nbytes)
            break;
        uint64_t len = b->nbytes - from < m->cs ? b->nbytes - from : m->cs;
        uint64_t off = t[k] & QCOW2_BME_TABLE_OFFSET_MASK;
        if (off) {
            rc = qio_pread(m->q, b->bits + from, len, off);
        } else if (t[k] & QCOW2_BME_TABLE_ALL_ONES) {
            /* hbitmap_deserialize_ones: the granules of the disk only */
            uint64_t first = from * 8, last = (from + len) * 8;
            if (last > b->nbits)
                last = b->nbits;
            for (uint64_t i = first; i < last; i++)
                b->bits[i / 8] |= (uint8_t)(1u << (i % 8));
        }
    }
    free(t);
    return rc;
}

int qcow2_bitmap_read_bits(struct qcow2_image *m, const struct qcow2_bitmap_dirent *e,
                           uint8_t **bits, uint64_t *nbytes)
{
    struct qcow2_dbitmap b = { .gran_bits = e->granularity_bits };
    dbitmap_geometry(&b, disk_size(m));
    int r = load_data(m, e, &b);
    if (r < 0)
        return r;
    *bits = b.bits;
    *nbytes = b.nbytes;
    return 0;
}

/* The directory bytes for entries e[0..n) (bitmap_list_store's encoding); *size. */
static uint8_t *dir_encode(const struct qcow2_bitmap_dirent *e, uint32_t n, uint64_t *size)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += qcow2_bitmap_dirent_size((uint32_t)strlen(e[i].name), 0);
    *size = total;
    if (total == 0 || total > QCOW2_MAX_BITMAP_DIR_SIZE)
        return NULL;
    uint8_t *d = xcalloc(1, (size_t)total), *p = d;
    for (uint32_t i = 0; i < n; i++) {
        size_t nl = strlen(e[i].name);
        be64_put(p, e[i].bitmap_table_offset);
        be32_put(p + 8, e[i].bitmap_table_size);
        be32_put(p + 12, e[i].flags);
        p[16] = QCOW2_BME_TYPE_DIRTY;
        p[17] = e[i].granularity_bits;
        be16_put(p + 18, (uint16_t)nl);
        be32_put(p + 20, 0);
        memcpy(p + QCOW2_BME_HDR_SIZE, e[i].name, nl);
        p += qcow2_bitmap_dirent_size((uint32_t)nl, 0);
    }
    return d;
}

/* qemu's update_header_sync */
static int header_sync(struct qcow2_image *m)
{
    qcow2_overlap_invalidate(m); /* the bitmap directory class follows the autoclear bit */
    int rc = qcow2_image_update_header(m);
    return rc < 0 ? rc : qcow2_meta_flush(m);
}

/* update_ext_header_and_dir_in_place: the IN_USE flags reach the directory while the
 * autoclear bit is off, so a crash in between leaves the bitmaps dropped, never stale. */
static int dir_update_in_place(struct qcow2_image *m)
{
    if (!(m->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) || m->nb_bm == 0 ||
        m->nb_bm != m->ext.nb_bitmaps)
        return -EINVAL;
    uint64_t size;
    uint8_t *dir = dir_encode(m->bm, m->nb_bm, &size);
    if (!dir || size != m->ext.bitmap_directory_size || !m->ext.bitmap_directory_offset) {
        free(dir);
        return -EINVAL;
    }
    m->h.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    int rc = header_sync(m);
    if (rc == 0)
        rc = qcow2_meta_pwrite(m, QCOW2_OL_BITMAP_DIRECTORY, m->ext.bitmap_directory_offset, dir,
                               (size_t)size);
    free(dir);
    if (rc < 0)
        return rc;
    m->h.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    return header_sync(m);
}

int qcow2_bitmaps_load_rw(struct qcow2_image *m, bool *header_updated, char **errmsg)
{
    *header_updated = false;
    *errmsg = NULL;
    bool needs_update = false;
    for (uint32_t i = 0; i < m->nb_bm; i++) {
        struct qcow2_bitmap_dirent *e = &m->bm[i];
        bool in_use = (e->flags & QCOW2_BME_FLAG_IN_USE) != 0;
        if (in_use && qcow2_dbitmap_find(m, e->name))
            continue; /* qemu keeps the first of the name */
        struct qcow2_dbitmap *b = dbitmap_new(m, e->name, e->granularity_bits);
        b->enabled = (e->flags & QCOW2_BME_FLAG_AUTO) != 0;
        if (in_use) {
            b->inconsistent = true;
            continue;
        }
        int rc = load_data(m, e, b);
        if (rc < 0) {
            *errmsg = xasprintf("Could not read bitmap '%s' from image: %s", e->name,
                                strerror(-rc));
            return rc;
        }
        e->flags |= QCOW2_BME_FLAG_IN_USE;
        needs_update = true;
    }
    if (!needs_update)
        return 0;
    int rc = dir_update_in_place(m);
    if (rc < 0) {
        *errmsg = xasprintf("Can't update bitmap directory: %s", strerror(-rc));
        return rc;
    }
    *header_updated = true;
    return 0;
}

void qcow2_bitmaps_set_dirty(struct qcow2_image *m, uint64_t off, uint64_t len)
{
    if (!m->dbm || len == 0)
        return;
    for (uint32_t i = 0; i < m->dbm->n; i++) {
        struct qcow2_dbitmap *b = &m->dbm->v[i];
        if (!b->enabled || b->inconsistent || !b->bits)
            continue;
        uint64_t first = off >> b->gran_bits, last = (off + len - 1) >> b->gran_bits;
        if (last >= b->nbits)
            last = b->nbits - 1;
        for (uint64_t k = first; k <= last && k < b->nbits; k++) {
            if (!(k & 7) && k + 8 <= last + 1) {
                b->bits[k / 8] = 0xff;
                k += 7;
            } else {
                b->bits[k / 8] |= (uint8_t)(1u << (k & 7));
            }
        }
    }
}

/* Does the bitmap have a set bit among granules [from*8, to*8)? */
static bool any_dirty(const struct qcow2_dbitmap *b, uint64_t from, uint64_t to)
{
    for (uint64_t i = from; i < to; i++) {
        uint8_t v = b->bits[i];
        if (i * 8 + 8 > b->nbits) /* bits past the disk are not dirty (next_dirty) */
            v &= (uint8_t)((1u << (b->nbits > i * 8 ? b->nbits - i * 8 : 0)) - 1);
        if (v)
            return true;
    }
    return false;
}

/* store_bitmap_data then store_bitmap: a data cluster for each table cluster with a set
 * bit (in order), then the table; *toff, *tsize the new table. */
static int store_bitmap(struct qcow2_image *m, const struct qcow2_dbitmap *b, uint64_t *toff,
                        uint32_t *tsize)
{
    const uint64_t cs = m->cs;
    uint64_t n = (b->nbytes + cs - 1) / cs;
    if (n == 0 || n > QCOW2_BME_MAX_TABLE_SIZE || n * cs > QCOW2_BME_MAX_PHYS_SIZE)
        return -EINVAL;
    uint64_t *t = xcalloc((size_t)n, sizeof(*t));
    uint8_t *buf = xmalloc((size_t)cs);
    int rc = 0;
    for (uint64_t k = 0; k < n && rc == 0; k++) {
        uint64_t from = k * cs, to = from + cs < b->nbytes ? from + cs : b->nbytes;
        if (!any_dirty(b, from, to))
            continue;
        int64_t off = qcow2_alloc_clusters(m, cs);
        if (off < 0) {
            rc = (int)off;
            break;
        }
        t[k] = (uint64_t)off;
        memset(buf, 0, (size_t)cs);
        memcpy(buf, b->bits + from, (size_t)(to - from));
        rc = qcow2_meta_pwrite(m, QCOW2_OL_NONE, (uint64_t)off, buf, (size_t)cs);
    }
    int64_t tb = rc == 0 ? qcow2_alloc_clusters(m, n * 8) : 0;
    if (tb < 0)
        rc = (int)tb;
    if (rc == 0) {
        uint8_t *be = xmalloc((size_t)(n * 8));
        for (uint64_t k = 0; k < n; k++)
            be64_put(be + k * 8, t[k]);
        rc = qcow2_meta_pwrite(m, QCOW2_OL_NONE, (uint64_t)tb, be, (size_t)(n * 8));
        free(be);
        if (rc < 0)
            qcow2_free_clusters(m, (uint64_t)tb, n * 8, QCOW2_DISCARD_OTHER);
    }
    if (rc < 0) {
        /* clear_bitmap_table: the data clusters taken so far go back */
        for (uint64_t k = 0; k < n; k++)
            if (t[k])
                qcow2_free_clusters(m, t[k], cs, QCOW2_DISCARD_ALWAYS);
    } else {
        *toff = (uint64_t)tb;
        *tsize = (uint32_t)n;
    }
    free(t);
    free(buf);
    return rc;
}

/* update_ext_header_and_dir: the new directory (e[0..n)) in new clusters, caches flushed,
 * the header switched, the old directory freed. */
static int dir_update(struct qcow2_image *m, const struct qcow2_bitmap_dirent *e, uint32_t n)
{
    uint64_t old_off = m->ext.bitmap_directory_offset, old_size = m->ext.bitmap_directory_size;
    uint64_t new_off = 0, new_size = 0;
    int rc;
    if (n > QCOW2_MAX_BITMAPS)
        return -EINVAL;
    if (n > 0) {
        uint8_t *dir = dir_encode(e, n, &new_size);
        if (!dir)
            return -EINVAL;
        int64_t off = qcow2_alloc_clusters(m, new_size);
        rc = off < 0 ? (int)off
                     : qcow2_meta_pwrite(m, QCOW2_OL_NONE, (uint64_t)off, dir, (size_t)new_size);
        free(dir);
        if (rc == 0)
            rc = qcow2_image_flush_caches(m);
        if (rc < 0) {
            if (off > 0)
                qcow2_free_clusters(m, (uint64_t)off, new_size, QCOW2_DISCARD_OTHER);
            return rc;
        }
        new_off = (uint64_t)off;
        m->h.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        m->h.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    }
    m->ext.has_bitmaps = n > 0;
    m->ext.nb_bitmaps = n;
    m->ext.bitmap_directory_offset = new_off;
    m->ext.bitmap_directory_size = new_size;
    if ((rc = header_sync(m)) < 0)
        return rc;
    if (old_size > 0)
        qcow2_free_clusters(m, old_off, old_size, QCOW2_DISCARD_OTHER);
    return 0;
}

/* free_bitmap_clusters: a replaced table's data clusters, then the table */
static void free_table(struct qcow2_image *m, const struct qcow2_bitmap_dirent *old)
{
    uint64_t *t, bad;
    if (!old->bitmap_table_offset ||
        qcow2_bitmap_table_load(qio_pread_cb, m->q, m->h.cluster_bits, old, &t, &bad) < 0)
        return;
    for (uint64_t k = 0; k < old->bitmap_table_size; k++) {
        uint64_t addr = t[k] & QCOW2_BME_TABLE_OFFSET_MASK;
        if (addr)
            qcow2_free_clusters(m, addr, m->cs, QCOW2_DISCARD_ALWAYS);
    }
    free(t);
    qcow2_free_clusters(m, old->bitmap_table_offset, (uint64_t)old->bitmap_table_size * 8,
                        QCOW2_DISCARD_OTHER);
}

int qcow2_bitmaps_store(struct qcow2_image *m, char **errmsg)
{
    *errmsg = NULL;
    if (!m->dbm)
        return 0;
    /* the list: the directory as it is, then new bitmaps */
    uint32_t n = m->nb_bm, cap = m->nb_bm + m->dbm->n;
    struct qcow2_bitmap_dirent *list = xcalloc(cap ? cap : 1, sizeof(*list));
    struct qcow2_bitmap_dirent *drop = xcalloc(m->dbm->n ? m->dbm->n : 1, sizeof(*drop));
    const struct qcow2_dbitmap **src = xcalloc(cap ? cap : 1, sizeof(*src));
    uint32_t ndrop = 0;
    bool need_write = false;
    int rc = 0;
    if (n)
        memcpy(list, m->bm, n * sizeof(*list));
    /* qemu walks its bitmaps newest first (FOR_EACH_DIRTY_BITMAP): the drop order */
    for (uint32_t j = m->dbm->n; j-- > 0;) {
        const struct qcow2_dbitmap *b = &m->dbm->v[j];
        if (b->inconsistent)
            continue;
        need_write = true;
        uint32_t i = 0;
        while (i < n && strcmp(list[i].name, b->name))
            i++;
        if (i == n) {
            if (n >= QCOW2_MAX_BITMAPS) {
                *errmsg = xasprintf("Too many persistent bitmaps");
                rc = -EINVAL;
                goto out;
            }
            memset(&list[n], 0, sizeof(list[n]));
            snprintf(list[n].name, sizeof(list[n].name), "%s", b->name);
            n++;
        } else {
            if (!(list[i].flags & QCOW2_BME_FLAG_IN_USE)) {
                *errmsg = xasprintf("Bitmap '%s' already exists in the image", b->name);
                rc = -EINVAL;
                goto out;
            }
            drop[ndrop++] = list[i];
            list[i].bitmap_table_offset = 0;
            list[i].bitmap_table_size = 0;
        }
        list[i].flags = b->enabled ? QCOW2_BME_FLAG_AUTO : 0;
        list[i].granularity_bits = (uint8_t)b->gran_bits;
        list[i].type = QCOW2_BME_TYPE_DIRTY;
        list[i].name_size = (uint16_t)strlen(b->name);
        src[i] = b;
    }
    if (!need_write)
        goto out;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (!src[i])
            continue;
        rc = store_bitmap(m, src[i], &list[i].bitmap_table_offset, &list[i].bitmap_table_size);
        if (rc < 0)
            *errmsg = xasprintf("Failed to write bitmap '%s' to file: %s", src[i]->name,
                                strerror(-rc));
    }
    if (rc == 0 && (rc = dir_update(m, list, n)) < 0)
        *errmsg = xasprintf("Failed to update bitmap extension: %s", strerror(-rc));
    if (rc < 0)
        goto out;
    for (uint32_t k = 0; k < ndrop; k++)
        free_table(m, &drop[k]);
    /* the model follows the directory now on disk */
    free(m->bm);
    m->bm = list;
    m->nb_bm = n;
    list = NULL;
out:
    free(list);
    free(drop);
    free(src);
    return rc;
}

/* bdrv_release_dirty_bitmap: the in-memory bitmap dropped, the others keep their order */
static void dbitmap_release(struct qcow2_image *m, struct qcow2_dbitmap *b)
{
    struct qcow2_dbitmaps *l = m->dbm;
    size_t i = (size_t)(b - l->v);
    free(b->name);
    free(b->bits);
    memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof(*l->v));
    l->n--;
}

int qcow2_bitmap_remove(struct qcow2_image *m, const char *name, char **errmsg)
{
    *errmsg = NULL;
    struct qcow2_dbitmap *b = qcow2_dbitmap_find(m, name);
    /* qcow2_co_remove_persistent_dirty_bitmap: the directory as on disk minus the entry
     * (absent from the disk is no error: a bitmap added by this run) */
    uint32_t i = 0;
    while (i < m->nb_bm && strcmp(m->bm[i].name, name))
        i++;
    if (m->ext.nb_bitmaps > 0 && i < m->nb_bm) {
        struct qcow2_bitmap_dirent gone = m->bm[i];
        uint32_t n = m->nb_bm - 1;
        struct qcow2_bitmap_dirent *list = xcalloc(n ? n : 1, sizeof(*list));
        memcpy(list, m->bm, i * sizeof(*list));
        memcpy(list + i, m->bm + i + 1, (n - i) * sizeof(*list));
        int rc = dir_update(m, list, n);
        if (rc < 0) {
            free(list);
            *errmsg = xasprintf("Failed to update bitmap extension: %s", strerror(-rc));
            return rc;
        }
        free(m->bm);
        m->bm = list;
        m->nb_bm = n;
        free_table(m, &gone);
    }
    if (b)
        dbitmap_release(m, b);
    return 0;
}

int qcow2_bitmaps_load_ro(struct qcow2_image *m, char **errmsg)
{
    *errmsg = NULL;
    for (uint32_t i = 0; i < m->nb_bm; i++) {
        const struct qcow2_bitmap_dirent *e = &m->bm[i];
        bool in_use = (e->flags & QCOW2_BME_FLAG_IN_USE) != 0;
        if (in_use && qcow2_dbitmap_find(m, e->name))
            continue;
        struct qcow2_dbitmap *b = dbitmap_new(m, e->name, e->granularity_bits);
        b->enabled = (e->flags & QCOW2_BME_FLAG_AUTO) != 0;
        if (in_use) {
            b->inconsistent = true;
            continue;
        }
        int rc = load_data(m, e, b);
        if (rc < 0) {
            *errmsg = xasprintf("Could not read bitmap '%s' from image: %s", e->name,
                                strerror(-rc));
            return rc;
        }
    }
    return 0;
}
