/* §3.3 step 8: references of the bitmap directory the model loaded at open
 * (qcow2_image_load_bitmaps, qcow2/bitmaps.c, shared with info and map), counted as qemu's
 * qcow2_check_bitmaps_refcounts. */
#include <errno.h>
#include <stdlib.h>

#include "checker/qcow2_check.h"
#include "qcow2/bitmaps.h"

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
        rc = qcow2_bitmap_table_load(qio_pread_cb, s->q, s->h.cluster_bits, e, &t, &bad);
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
