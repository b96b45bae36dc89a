#include "checker/qcow2_bitmaps.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "format/be.h"
#include "util/xalloc.h"

/* Bitmap table: table_size <= 512 MiB / cs entries, so at most 8 MiB (validated). */
static int load_table(struct qc2 *s, const struct qcow2_bitmap_dirent *e, uint64_t **out,
                      uint64_t *bad_index)
{
    uint64_t n = e->bitmap_table_size;
    uint8_t *raw = xmalloc((size_t)(n * 8));
    int rc = qc2_read(s, raw, n * 8, e->bitmap_table_offset);
    if (rc < 0) {
        free(raw);
        return rc;
    }
    uint64_t *t = xmalloc((size_t)(n * 8));
    for (uint64_t i = 0; i < n; i++) {
        t[i] = be64_get(raw + i * 8);
        if (qcow2_bitmap_tentry_validate(t[i], s->h.cluster_bits,
                                         e->bitmap_table_offset + i * 8, NULL) < 0) {
            *bad_index = i;
            free(raw);
            free(t);
            return -EINVAL;
        }
    }
    free(raw);
    *out = t;
    return 0;
}

int qc2_bitmaps_load(struct qc2 *s, char *msg, size_t msg_len)
{
    if (!s->ext.has_bitmaps || s->ext.nb_bitmaps == 0)
        return 0;
    uint64_t size = s->ext.bitmap_directory_size, off = s->ext.bitmap_directory_offset;
    if (size == 0) {
        snprintf(msg, msg_len, "Requested bitmap directory size is zero");
        return -EINVAL;
    }
    if (size > QCOW2_MAX_BITMAP_DIR_SIZE) {
        snprintf(msg, msg_len, "Requested bitmap directory size is too big");
        return -EINVAL;
    }
    uint8_t *dir = xmalloc((size_t)size);
    int rc = qc2_read(s, dir, size, off);
    if (rc < 0) {
        snprintf(msg, msg_len, "Failed to read bitmap directory: %s", strerror(-rc));
        free(dir);
        return rc;
    }
    s->bm = xcalloc(s->ext.nb_bitmaps, sizeof(*s->bm));
    uint64_t pos = 0;
    uint32_t n = 0;
    rc = 0;
    while (pos < size) {
        struct qcow2_bitmap_dirent e;
        uint64_t elen;
        if (size - pos < QCOW2_BME_HDR_SIZE)
            goto broken;
        if (++n > s->ext.nb_bitmaps) {
            snprintf(msg, msg_len, "More bitmaps found than specified in header extension");
            rc = -EINVAL;
            goto out;
        }
        if (qcow2_bitmap_dirent_decode(dir + pos, (size_t)(size - pos), off + pos, &e, &elen,
                                       NULL) < 0)
            goto broken;
        if (e.extra_data_size != 0) {
            snprintf(msg, msg_len, "Bitmap extra data is not supported");
            rc = -EINVAL;
            goto out;
        }
        if (qcow2_bitmap_dirent_validate(&e, s->h.cluster_bits, s->h.size, off + pos, NULL) < 0) {
            snprintf(msg, msg_len, "Bitmap '%.*s' doesn't satisfy the constraints",
                     (int)e.name_size, e.name);
            rc = -EINVAL;
            goto out;
        }
        s->bm[n - 1] = e;
        pos += elen;
    }
    if (n != s->ext.nb_bitmaps) {
        snprintf(msg, msg_len, "Less bitmaps found than specified in header extension");
        rc = -EINVAL;
        goto out;
    }
    if (pos != size)
        goto broken;
    s->nb_bm = n;
    /* load_bitmap(): tables of consistent (not in_use) bitmaps are read and checked */
    for (uint32_t i = 0; i < n; i++) {
        uint64_t *t = NULL, bad;
        if (s->bm[i].flags & QCOW2_BME_FLAG_IN_USE)
            continue;
        rc = load_table(s, &s->bm[i], &t, &bad);
        if (rc < 0) {
            snprintf(msg, msg_len, "Could not read bitmap_table table from image for bitmap "
                     "'%s': %s", s->bm[i].name, strerror(-rc));
            goto out;
        }
        free(t);
    }
    free(dir);
    return 0;
broken:
    snprintf(msg, msg_len, "Broken bitmap directory");
    rc = -EINVAL;
out:
    free(dir);
    return rc;
}

void qc2_bitmaps_free(struct qc2 *s)
{
    free(s->bm);
    s->bm = NULL;
    s->nb_bm = 0;
}

/* qcow2_check_bitmaps_refcounts(): the directory, each table and each data cluster. */
int qc2_pass_bitmaps(struct qc2 *s)
{
    if (!s->nb_bm)
        return 0;
    int rc = qc2_inc_refs(s, s->ext.bitmap_directory_offset, s->ext.bitmap_directory_size, -1);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < s->nb_bm; i++) {
        const struct qcow2_bitmap_dirent *e = &s->bm[i];
        uint64_t *t = NULL, bad = 0;
        rc = qc2_inc_refs(s, e->bitmap_table_offset, (uint64_t)e->bitmap_table_size * 8, -1);
        if (rc < 0)
            return rc;
        rc = load_table(s, e, &t, &bad);
        if (rc < 0) {
            struct finding f = finding_make(FK_BITMAP_TABLE_BROKEN);
            f.offset = e->bitmap_table_offset;
            f.entry_offset = e->bitmap_table_offset + bad * 8;
            qc2_report(s, &f);
            return -EINVAL;
        }
        for (uint64_t j = 0; j < e->bitmap_table_size; j++) {
            uint64_t off = t[j] & QCOW2_BME_TABLE_OFFSET_MASK;
            if (!off)
                continue;
            rc = qc2_inc_refs(s, off, s->cs, -1);
            if (rc < 0) {
                free(t);
                return rc;
            }
        }
        free(t);
    }
    return 0;
}
