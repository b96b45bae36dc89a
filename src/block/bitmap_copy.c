/* See bitmap_copy.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bitmap_copy.h"
#include "block/qcow2_int.h"
#include "qcow2/bitmap_store.h"
#include "util/xalloc.h"

void image_bitmaps_list(image_t *img, struct image_bitmap **list, size_t *n)
{
    *list = NULL;
    *n = 0;
    if (img->drv != &qcow2_driver)
        return;
    struct qcow2_state *s = img->priv;
    if (!s->nb_bm)
        return;
    *list = xcalloc(s->nb_bm, sizeof(**list));
    for (uint32_t i = 0; i < s->nb_bm; i++) {
        const struct qcow2_bitmap_dirent *e = &s->bm[s->nb_bm - 1 - i];
        struct image_bitmap *b = &(*list)[i];
        b->name = e->name;
        b->gran_bits = e->granularity_bits;
        b->enabled = e->flags & QCOW2_BME_FLAG_AUTO;
        b->inconsistent = e->flags & QCOW2_BME_FLAG_IN_USE;
        b->index = s->nb_bm - 1 - i;
    }
    *n = s->nb_bm;
}

int image_bitmaps_copy(image_t *src, image_t *dst, const bool *want, size_t n,
                       char **errmsg)
{
    struct qcow2_state *ss = src->priv, *ds = dst->priv;
    /* qemu adds them in its list order (the reverse of the directory), each at the head
     * of dst's list; its store walks that list, so dst's directory gets the source's
     * order. qimg's store writes new bitmaps last-added first, as that list does: add them
     * in qemu's order */
    for (size_t j = n < ss->nb_bm ? n : ss->nb_bm; j-- > 0;) {
        size_t k = j;
        if (!want[k])
            continue;
        const struct qcow2_bitmap_dirent *e = &ss->bm[k];
        struct qcow2_dbitmap *b = qcow2_dbitmap_add(&ds->m, e->name, e->granularity_bits,
                                                    e->flags & QCOW2_BME_FLAG_AUTO);
        if (!b) {
            *errmsg = xasprintf("Failed to create bitmap %s: %s", e->name, strerror(ENOMEM));
            return -ENOMEM;
        }
        uint8_t *bits;
        uint64_t nbytes;
        int r = qcow2_bitmap_read_bits(&ss->m, e, &bits, &nbytes);
        if (r < 0) {
            *errmsg = xasprintf("Failed to populate bitmap %s: %s", e->name, strerror(-r));
            return r;
        }
        uint64_t k2 = nbytes < b->nbytes ? nbytes : b->nbytes;
        for (uint64_t i = 0; i < k2; i++)
            b->bits[i] |= bits[i];
        free(bits);
    }
    return 0;
}
