/* qcow2 resize (qemu 7.2's qcow2_co_truncate, with the generic bdrv_co_truncate's rule that
 * the new area is zeroed when a longer backing file would show through). Growth only,
 * without preallocation: the L1 table grows where qcow2_grow_l1_table puts it (exact size),
 * an external data file is grown with the image, the header's size is written and flushed.
 * Not done yet, and refused with a message rather than half done: shrinking (qemu frees the
 * cropped clusters, shrinks the L1 and refcount tables and cuts the file), preallocation
 * modes, growing a data-file-raw image (qemu preallocates its metadata), images with
 * persistent bitmaps (qemu resizes the bitmaps). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "format/be.h"
#include "qcow2/l2.h"
#include "qcow2/port.h"
#include "util/xalloc.h"

int qcow2_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    static const char *const modes[] = { "off", "metadata", "falloc", "full" };
    if (size & 511) {
        *errmsg = xstrdup("The new size must be a multiple of 512");
        return -EINVAL;
    }
    if (s->h.nb_snapshots && s->h.version < 3) {
        *errmsg = xstrdup("Can't resize a v2 image which has snapshots");
        return -ENOTSUP;
    }
    uint64_t old = img->size;
    if (size < old && prealloc != IMG_PREALLOC_OFF) {
        *errmsg = xstrdup("Preallocation can't be used for shrinking an image");
        return -EINVAL;
    }
    if (size < old) {
        *errmsg = xstrdup("qimg cannot shrink qcow2 images yet");
        return -ENOTSUP;
    }
    if (prealloc != IMG_PREALLOC_OFF) {
        *errmsg = xasprintf("qimg cannot preallocate (mode '%s') when growing qcow2 images "
                            "yet", modes[prealloc]);
        return -ENOTSUP;
    }
    if (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) {
        *errmsg = xstrdup("qimg cannot grow data-file-raw images yet");
        return -ENOTSUP;
    }
    if (s->ext.has_bitmaps && s->ext.nb_bitmaps) {
        *errmsg = xstrdup("qimg cannot resize qcow2 images with persistent bitmaps yet");
        return -ENOTSUP;
    }
    unsigned shift = s->h.cluster_bits + s->h.l2_bits;
    uint64_t new_l1 = shift >= 64 ? 1 : (size + (UINT64_C(1) << shift) - 1) >> shift;
    int r = qcow2_grow_l1_table(&s->m, new_l1, true);
    if (r < 0) {
        *errmsg = xasprintf("Failed to grow the L1 table: %s", strerror(-r));
        return r;
    }
    if (s->geom.data_file && img->data_file && (r = qio_truncate(img->data_file, size)) < 0) {
        *errmsg = xasprintf("Could not resize file: %s", strerror(-r));
        return r;
    }
    /* bdrv_co_truncate: a backing file longer than the old size would show through the new
     * area, so it is zeroed (BDRV_REQ_ZERO_WRITE): zero subclusters from the first aligned
     * one, explicit zeros before it */
    if (size > old && img->backing && img->backing->size > old) {
        uint64_t scs = (uint64_t)1 << (s->h.cluster_bits - (s->geom.extended_l2 ? 5 : 0));
        uint64_t zero_start = (old + scs - 1) & ~(scs - 1);
        img->size = size; /* the zeroing works inside the new size */
        if (size > zero_start) {
            r = qcow2_zeroize(img, zero_start, size - zero_start);
            if (r < 0) {
                img->size = old;
                *errmsg = xasprintf("Failed to zero out new clusters: %s", strerror(-r));
                return r;
            }
        }
        if (zero_start > old) {
            uint64_t len = (zero_start < size ? zero_start : size) - old;
            uint8_t *z = xcalloc(1, (size_t)len);
            r = qcow2_write(img, old, z, (size_t)len);
            free(z);
            if (r < 0) {
                img->size = old;
                *errmsg = xasprintf("Failed to zero out the new area: %s", strerror(-r));
                return r;
            }
        }
    }
    uint8_t be[8];
    be64_put(be, size);
    /* qemu writes the header outside the overlap check */
    r = qcow2_meta_pwrite(&s->m, ~0u, QCOW2_OFF_SIZE, be, sizeof(be));
    if (r == 0)
        r = qcow2_meta_flush(&s->m);
    if (r < 0) {
        img->size = old;
        *errmsg = xasprintf("Failed to update the image size: %s", strerror(-r));
        return r;
    }
    s->h.size = size;
    img->size = size;
    return 0;
}
