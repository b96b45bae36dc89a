/* The bitmap directory and tables as qemu loads them at open (see bitmaps.h). */
#include "qcow2/bitmaps.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_ext.h"
#include "qcow2/image.h"
#include "util/xalloc.h"

int qcow2_bitmap_table_load(qcow2_bitmap_pread_fn rd, void *ctx, uint32_t cluster_bits,
                            const struct qcow2_bitmap_dirent *e, uint64_t **out,
                            uint64_t *bad_index)
{
    /* table_size * cs <= 512 MiB was validated: at most 1 Mi entries (8 MiB) */
    uint64_t n = e->bitmap_table_size;
    *out = NULL;
    *bad_index = 0;
    uint64_t *t = xmalloc((size_t)(n ? n * 8 : 8));
    int rc = rd(ctx, t, n * 8, e->bitmap_table_offset);
    for (uint64_t i = 0; rc == 0 && i < n; i++) {
        t[i] = be64_get((const uint8_t *)&t[i]);
        if (qcow2_bitmap_tentry_validate(t[i], cluster_bits, e->bitmap_table_offset + i * 8,
                                         NULL) < 0) {
            *bad_index = i;
            rc = -EINVAL;
        }
    }
    if (rc < 0) {
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* qemu's dir_entry_size(): 24 + name_size + extra_data_size kept in an int and rounded up
 * to 8. A huge extra_data_size wraps it negative (or small), so such an entry still "fits"
 * in the directory and qemu goes on to refuse its extra data. */
static int32_t qemu_entry_size(const uint8_t *hdr)
{
    uint32_t raw = QCOW2_BME_HDR_SIZE + (uint32_t)be16_get(hdr + 18) + be32_get(hdr + 20);
    return (int32_t)((raw + 7u) & ~7u);
}

/* bitmap_list_load: the directory, whole. */
static int list_load(qcow2_bitmap_pread_fn rd, void *ctx, uint32_t cluster_bits,
                     uint64_t virtual_size, uint64_t off, uint64_t size, uint32_t nb,
                     struct qcow2_bitmap_dirent *bm, char **errmsg)
{
    if (size == 0) {
        *errmsg = xstrdup("Requested bitmap directory size is zero");
        return -EINVAL;
    }
    if (size > QCOW2_MAX_BITMAP_DIR_SIZE) {
        *errmsg = xstrdup("Requested bitmap directory size is too big");
        return -EINVAL;
    }
    uint8_t *dir = xmalloc((size_t)size);
    int rc = rd(ctx, dir, size, off);
    if (rc < 0) {
        *errmsg = xasprintf("Failed to read bitmap directory: %s", strerror(-rc));
        free(dir);
        return rc;
    }
    uint64_t pos = 0;
    uint32_t n = 0;
    rc = -EINVAL;
    while (pos < size) {
        struct qcow2_bitmap_dirent e;
        uint64_t elen;
        if (size - pos < QCOW2_BME_HDR_SIZE)
            goto broken;
        if (++n > nb) {
            *errmsg = xstrdup("More bitmaps found than specified in header extension");
            goto out;
        }
        int32_t qsz = qemu_entry_size(dir + pos);
        if (qsz > 0 && (uint64_t)qsz > size - pos)
            goto broken;
        if (be32_get(dir + pos + 20) != 0) {
            *errmsg = xstrdup("Bitmap extra data is not supported");
            goto out;
        }
        if (qcow2_bitmap_dirent_decode(dir + pos, (size_t)(size - pos), off + pos, &e, &elen,
                                       NULL) < 0 || elen > size - pos)
            goto broken;
        if (qcow2_bitmap_dirent_validate(&e, cluster_bits, virtual_size, off + pos, NULL) < 0) {
            *errmsg = xasprintf("Bitmap '%.*s' doesn't satisfy the constraints",
                                (int)e.name_size, e.name);
            goto out;
        }
        bm[n - 1] = e;
        pos += elen;
    }
    if (n != nb) {
        *errmsg = xstrdup("Less bitmaps found than specified in header extension");
        goto out;
    }
    if (pos != size)
        goto broken;
    rc = 0;
    goto out;
broken:
    *errmsg = xstrdup("Broken bitmap directory");
out:
    free(dir);
    return rc;
}

/* by name, then by directory position */
static int by_name(const void *a, const void *b, void *arg)
{
    const struct qcow2_bitmap_dirent *bm = arg;
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    int c = strcmp(bm[i].name, bm[j].name);
    return c ? c : (i > j) - (i < j);
}

/* seen[i]: an earlier entry has bm[i]'s name (up to 65535 entries: sorted, not n^2) */
static bool *names_seen(const struct qcow2_bitmap_dirent *bm, uint32_t n)
{
    uint32_t *idx = xcalloc(n, sizeof(*idx));
    bool *seen = xcalloc(n, sizeof(*seen));
    for (uint32_t i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, n, sizeof(*idx), by_name, (void *)bm);
    for (uint32_t k = 1; k < n; k++)
        seen[idx[k]] = !strcmp(bm[idx[k - 1]].name, bm[idx[k]].name);
    free(idx);
    return seen;
}

int qcow2_bitmaps_open(qcow2_bitmap_pread_fn rd, void *ctx, uint32_t cluster_bits,
                       uint64_t virtual_size, uint64_t dir_offset, uint64_t dir_size,
                       uint32_t nb_bitmaps, struct qcow2_bitmap_dirent **out,
                       uint32_t *n_out, char **errmsg)
{
    *out = NULL;
    *n_out = 0;
    *errmsg = NULL;
    if (!nb_bitmaps)
        return 0;
    struct qcow2_bitmap_dirent *bm = xcalloc(nb_bitmaps, sizeof(*bm));
    int rc = list_load(rd, ctx, cluster_bits, virtual_size, dir_offset, dir_size, nb_bitmaps,
                       bm, errmsg);
    bool *seen = rc == 0 ? names_seen(bm, nb_bitmaps) : NULL;
    for (uint32_t i = 0; rc == 0 && i < nb_bitmaps; i++) {
        const struct qcow2_bitmap_dirent *e = &bm[i];
        bool exists = seen[i];
        if (exists && (e->flags & QCOW2_BME_FLAG_IN_USE))
            continue;   /* qemu: an in-use bitmap of a name already loaded is skipped */
        if (exists) {
            *errmsg = xasprintf("Bitmap already exists: %s", e->name);
            rc = -EINVAL;
            break;
        }
        if (e->flags & QCOW2_BME_FLAG_IN_USE)
            continue;   /* its data is unusable: not read */
        uint64_t *t, bad;
        rc = qcow2_bitmap_table_load(rd, ctx, cluster_bits, e, &t, &bad);
        if (rc < 0) {
            *errmsg = xasprintf("Could not read bitmap_table table from image for bitmap "
                                "'%s': %s", e->name, strerror(-rc));
            break;
        }
        free(t);
        if (qcow2_bitmap_table_clusters(virtual_size, e->granularity_bits, cluster_bits) !=
            e->bitmap_table_size) {
            *errmsg = xasprintf("Could not read bitmap '%s' from image: %s", e->name,
                                strerror(EINVAL));
            rc = -EINVAL;
        }
    }
    free(seen);
    if (rc < 0) {
        free(bm);
        return rc;
    }
    *out = bm;
    *n_out = nb_bitmaps;
    return 0;
}

int qcow2_image_load_bitmaps(struct qcow2_image *m, char **errmsg)
{
    *errmsg = NULL;
    if (!m->ext.has_bitmaps || m->ext.nb_bitmaps == 0)
        return 0;
    int rc = qcow2_bitmaps_open(qio_pread_cb, m->q, m->h.cluster_bits, m->h.size & ~(uint64_t)511,
                                m->ext.bitmap_directory_offset, m->ext.bitmap_directory_size,
                                m->ext.nb_bitmaps, &m->bm, &m->nb_bm, errmsg);
    if (rc < 0 && !*errmsg)
        *errmsg = xstrdup(strerror(-rc));
    return rc;
}
