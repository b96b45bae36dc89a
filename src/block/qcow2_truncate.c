/* qcow2 resize (qemu 7.2's qcow2_co_truncate, with the generic bdrv_co_truncate's rule that
 * the new area is zeroed when a longer backing file would show through), without
 * preallocation: growth grows the L1 table where qcow2_grow_l1_table puts it (exact size);
 * shrinking frees the cut clusters, the L1 tail's tables and unused refblocks and cuts the
 * file; an external data file follows; the header's size is written and flushed last.
 * Metadata preallocation maps the new clusters (a data-file-raw image always grows so).
 * Persistent bitmaps are resized in memory (stored at close). Not done yet, and refused
 * with a message rather than half done: falloc and full preallocation. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "format/be.h"
#include "qcow2/l2.h"
#include "qcow2/alloc.h"
#include "qcow2/bitmap_store.h"
#include "qcow2/port.h"
#include "qcow2/shrink.h"
#include "util/err.h"
#include "util/xalloc.h"

/* The header's size written and flushed, the new size taken. */
static int finish(image_t *img, uint64_t size, uint64_t old, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    uint8_t be[8];
    be64_put(be, size);
    /* qemu writes the header outside the overlap check */
    int r = qcow2_meta_pwrite(&s->m, QCOW2_OL_ALL, QCOW2_OFF_SIZE, be, sizeof(be));
    if (r == 0)
        r = qcow2_meta_flush(&s->m);
    if (r < 0) {
        img->size = old;
        *errmsg = xasprintf("Failed to update the image size: %s", strerror(-r));
        return r;
    }
    s->h.size = size;
    img->size = size;
    /* bdrv_co_write_req_finish: bdrv_dirty_bitmap_truncate */
    if ((r = qcow2_bitmaps_resize(&s->m, size)) < 0) {
        *errmsg = xasprintf("Could not resize the dirty bitmaps: %s", strerror(-r));
        return r;
    }
    return 0;
}

/* qemu 7.2's shrinking: the cut clusters discarded (entries cleared, clusters freed and
 * punched), the L1 tail cleared and its tables freed, unused refblocks dropped, the file
 * cut after its last used cluster (a failure there is a warning), the data file cut. */
static int shrink(image_t *img, uint64_t size, uint64_t new_l1, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    uint64_t old = img->size, cs = s->cs;
    uint64_t from = (size + cs - 1) & ~(cs - 1);
    int r = from < old ? qcow2_discard_full(img, from, old - from) : 0;
    if (r < 0) {
        *errmsg = xasprintf("Failed to discard cropped clusters: %s", strerror(-r));
        return r;
    }
    if ((r = qcow2_shrink_l1_table(&s->m, new_l1)) < 0) {
        *errmsg = xasprintf("Failed to reduce the number of L2 tables: %s", strerror(-r));
        return r;
    }
    if ((r = qcow2_l2_flush(&s->m)) < 0 || (r = qcow2_shrink_reftable(&s->m)) < 0) {
        *errmsg = xasprintf("Failed to discard unused refblocks: %s", strerror(-r));
        return r;
    }
    uint64_t file_size;
    if ((r = qio_size(img->file, &file_size)) < 0) {
        *errmsg = xasprintf("Failed to inquire current file length: %s", strerror(-r));
        return r;
    }
    int64_t last = qcow2_get_last_cluster(&s->m, file_size);
    if (last < 0) {
        if (last == -EIO)
            image_corrupt(img, "There are no references in the refcount table.");
        *errmsg = xasprintf("Failed to find the last cluster: %s", strerror((int)-last));
        return (int)last;
    }
    if ((uint64_t)(last + 1) * cs < file_size) {
        /* the refblocks reach the disk before the file is cut under them */
        if ((r = qcow2_refcount_cache_flush(&s->m)) == 0)
            r = qcow2_meta_truncate(&s->m, (uint64_t)(last + 1) * cs);
        if (r < 0)
            err_report("warning: Failed to truncate the tail of the image: %s",
                       strerror(-r));
    }
    if (s->geom.data_file && img->data_file && (r = qio_truncate(img->data_file, size)) < 0) {
        *errmsg = xasprintf("Could not resize file: %s", strerror(-r));
        return r;
    }
    return 0;
}

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
    /* qemu's qcow2_truncate_bitmaps_check; the bitmaps follow the size in finish() */
    int rb = qcow2_bitmaps_truncate_check(&s->m, errmsg);
    if (rb < 0)
        return rb;
    uint64_t old = img->size;
    if (size < old && prealloc != IMG_PREALLOC_OFF) {
        *errmsg = xstrdup("Preallocation can't be used for shrinking an image");
        return -EINVAL;
    }
    unsigned shift = s->h.cluster_bits + s->h.l2_bits;
    uint64_t new_l1 = shift >= 64 ? 1 : (size + (UINT64_C(1) << shift) - 1) >> shift;
    int r;
    if (size < old) {
        if ((r = shrink(img, size, new_l1, errmsg)) < 0)
            return r;
        return finish(img, size, old, errmsg);
    }
    if (prealloc != IMG_PREALLOC_OFF && prealloc != IMG_PREALLOC_METADATA) {
        *errmsg = xasprintf("qimg cannot preallocate (mode '%s') when growing qcow2 images "
                            "yet", modes[prealloc]);
        return -ENOTSUP;
    }
    r = qcow2_grow_l1_table(&s->m, new_l1, true);
    if (r < 0) {
        *errmsg = xasprintf("Failed to grow the L1 table: %s", strerror(-r));
        return r;
    }
    /* a data-file-raw image keeps its metadata preallocated (qemu enforces it at create) */
    if (prealloc == IMG_PREALLOC_OFF && (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW))
        prealloc = IMG_PREALLOC_METADATA;
    if (prealloc == IMG_PREALLOC_METADATA) {
        if ((r = qcow2_preallocate(img, old, size, errmsg)) < 0)
            return r;
    } else if (s->geom.data_file && img->data_file &&
               (r = qio_truncate(img->data_file, size)) < 0) {
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
    return finish(img, size, old, errmsg);
}
