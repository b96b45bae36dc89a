/* measure's view of a qcow2 source (block/measure.h): qemu's qcow2_snapshot_load_tmp and
 * the bitmap directory as qcow2_get_persistent_dirty_bitmap_size reads it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/measure.h"
#include "block/qcow2_int.h"
#include "format/qcow2_bitmap.h"
#include "format/qcow2_snapshot.h"
#include "qcow2/table.h"
#include "util/xalloc.h"

/* qemu's find_snapshot_by_id_and_name */
static long find_snapshot(const struct qcow2_state *s, const char *id, const char *name)
{
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        const struct qcow2_snapshot *sn = &s->sn[i];
        if (id && strcmp(sn->id_str, id))
            continue;
        if (name && strcmp(sn->name, name))
            continue;
        return i;
    }
    return -1;
}

int image_snapshot_load_tmp(image_t *img, const char *id, const char *name, char **errmsg)
{
    if (img->drv != &qcow2_driver) {
        *errmsg = xasprintf("Block format '%s' used by device '' does not support temporarily "
                            "loading internal snapshots", img->format);
        return -ENOTSUP;
    }
    if (!id && !name) {
        *errmsg = xstrdup("snapshot_id and name are both NULL");
        return -EINVAL;
    }
    struct qcow2_state *s = img->priv;
    long i = find_snapshot(s, id, name);
    if (i < 0) {
        *errmsg = xstrdup("Can't find snapshot");
        return -ENOENT;
    }
    const struct qcow2_snapshot *sn = &s->sn[i];
    /* qcow2_validate_table: size first, then offset */
    if (sn->l1_size > QCOW2_MAX_L1_SIZE / 8) {
        *errmsg = xstrdup("Snapshot L1 table too large");
        return -EFBIG;
    }
    if ((uint64_t)INT64_MAX - (uint64_t)sn->l1_size * 8 < sn->l1_table_offset ||
        (sn->l1_table_offset & (s->cs - 1))) {
        *errmsg = xstrdup("Snapshot L1 table offset invalid");
        return -EINVAL;
    }
    uint64_t *l1 = NULL, loaded = 0;
    int r = qcow2_table_load(s->q, s->file_size, sn->l1_table_offset, sn->l1_size,
                             QCOW2_TABLE_PAD, &l1, &loaded);
    if (r < 0) {
        *errmsg = xasprintf("Failed to load snapshot L1 table: %s", strerror(-r));
        return r;
    }
    /* switch the L1: the reader indexes s->l1 below h.l1_size; the image is read-only, so
     * nothing writes the header back */
    free(s->l1);
    s->l1 = l1;
    s->l1_loaded = loaded;
    s->h.l1_size = sn->l1_size;
    s->h.l1_table_offset = sn->l1_table_offset;
    return 0;
}

bool image_supports_persistent_bitmaps(const image_t *img)
{
    if (img->drv != &qcow2_driver)
        return false;
    const struct qcow2_state *s = img->priv;
    return s->h.version >= 3;
}

void image_measure_bitmaps(const image_t *img, struct qcow2_measure_bitmap **list, size_t *n)
{
    *list = NULL;
    *n = 0;
    if (img->drv != &qcow2_driver)
        return;
    const struct qcow2_state *s = img->priv;
    if (!s->nb_bm)
        return;
    *list = xcalloc(s->nb_bm, sizeof(**list));
    for (uint32_t i = 0; i < s->nb_bm; i++) {
        (*list)[i].name_len = s->bm[i].name_size;
        (*list)[i].granularity_bits = s->bm[i].granularity_bits;
    }
    *n = s->nb_bm;
}
