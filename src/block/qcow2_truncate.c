/* qcow2 resize (qemu 7.2's qcow2_co_truncate, with the generic bdrv_co_truncate's rule that
 * the new area is zeroed when a longer backing file would show through), without
 * preallocation: growth grows the L1 table where qcow2_grow_l1_table puts it (exact size);
 * shrinking frees the cut clusters, the L1 tail's tables and unused refblocks and cuts the
 * file; an external data file follows; the header's size is written and flushed last.
 * Metadata preallocation maps the new clusters (a data-file-raw image always grows so).
 * Persistent bitmaps are resized in memory (stored at close). falloc and full
 * preallocation as qemu 7.2 (new refcount structures, then the data clusters after them). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "format/be.h"
#include "qcow2/l2.h"
#include "qcow2/alloc.h"
#include "qcow2/bitmap_store.h"
#include "qcow2/header_write.h"
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
    char why[256] = "";
    if ((r = qcow2_l2_flush(&s->m)) < 0 || (r = qcow2_shrink_reftable(&s->m, why, sizeof why)) < 0) {
        if (why[0]) { /* qcow2_signal_corruption: event, corrupt bit, image unusable */
            image_corrupt(img, "%s", why);
            if (s->h.version >= 3 && !(s->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT))
                (void)qcow2_image_mark_corrupt(&s->m);
        }
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

/* file-posix's truncate with preallocation of a growing file: falloc allocates
 * [cur, size), full writes zeros there and flushes. */
static int grow_prealloc(qio_t *q, uint64_t size, enum img_prealloc prealloc, char **errmsg)
{
    uint64_t cur;
    int r = qio_size(q, &cur);
    if (r < 0) {
        *errmsg = xasprintf("Could not stat file: %s", strerror(-r));
        return r;
    }
    if (size <= cur)
        return 0;
    if (prealloc == IMG_PREALLOC_FALLOC) {
        if ((r = qio_fallocate(q, QIO_FALLOC_ALLOCATE, cur, size - cur)) < 0)
            *errmsg = xasprintf("Could not preallocate new data: %s", strerror(-r));
        return r;
    }
    if ((r = qio_truncate(q, size)) < 0) {
        *errmsg = xasprintf("Could not resize file: %s", strerror(-r));
        return r;
    }
    static const uint8_t zeros[65536];
    for (uint64_t o = cur; o < size;) {
        size_t k = size - o < sizeof(zeros) ? (size_t)(size - o) : sizeof(zeros);
        if ((r = qio_pwrite(q, zeros, k, o)) < 0) {
            *errmsg = xasprintf("Could not write zeros for preallocation: %s", strerror(-r));
            return r;
        }
        o += k;
    }
    if ((r = qio_flush(q)) < 0)
        *errmsg = xasprintf("Could not flush file to disk: %s", strerror(-r));
    return r;
}

/* qemu's preallocate_co with falloc/full for an external data file: the metadata mapped,
 * the data file's new tail preallocated in that mode. */
static int data_file_prealloc(image_t *img, uint64_t old, uint64_t size,
                              enum img_prealloc prealloc, char **errmsg)
{
    uint64_t before, after;
    int r = qio_size(img->data_file, &before);
    if (r == 0 && (r = qcow2_preallocate(img, old, size, errmsg)) < 0)
        return r;
    if (r == 0)
        r = qio_size(img->data_file, &after);
    if (r < 0) {
        *errmsg = xasprintf("Could not get file size: %s", strerror(-r));
        return r;
    }
    if (after <= before)
        return 0;
    /* qcow2_preallocate grew it with ftruncate; the same length, now allocated */
    if ((r = qio_truncate(img->data_file, before)) < 0) {
        *errmsg = xasprintf("Could not resize file: %s", strerror(-r));
        return r;
    }
    return grow_prealloc(img->data_file, after, prealloc, errmsg);
}

/* qemu 7.2's qcow2_co_truncate for falloc/full without a data file: new refcount
 * structures at the end of the used file covering the new data clusters (and their L2
 * tables), the data clusters allocated right after them, the file grown over them in the
 * mode, then mapped. */
static int file_prealloc(image_t *img, uint64_t old, uint64_t size, enum img_prealloc prealloc,
                         bool mark_prealloc, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    uint64_t cs = s->cs, fsize;
    int r = qio_size(img->file, &fsize);
    if (r < 0) {
        *errmsg = xasprintf("Failed to inquire current file length: %s", strerror(-r));
        return r;
    }
    int64_t last = qcow2_get_last_cluster(&s->m, fsize);
    uint64_t old_file = last >= 0 ? ((uint64_t)last + 1) * cs : (fsize + cs - 1) & ~(cs - 1);
    uint64_t nb_data = (((size + cs - 1) & ~(cs - 1)) - (old & ~(cs - 1))) / cs;
    /* an overestimate: the L2 tables for the new clusters, plus one for a head/tail */
    uint64_t nb_l2 = (nb_data + s->h.l2_entries - 1) / s->h.l2_entries + 1;
    int64_t start = qcow2_refcount_area(&s->m, old_file, nb_data + nb_l2, true, 0, 0);
    if (start < 0) {
        *errmsg = xasprintf("Failed to resize refcount structures: %s", strerror((int)-start));
        return (int)start;
    }
    int64_t got = qcow2_alloc_clusters_at(&s->m, (uint64_t)start, nb_data);
    if (got < 0) {
        *errmsg = xasprintf("Failed to allocate data clusters: %s", strerror((int)-got));
        return (int)got;
    }
    if ((uint64_t)got != nb_data) {   /* qemu asserts: the area was just made free */
        *errmsg = xstrdup("Failed to allocate data clusters: Input/output error");
        return -EIO;
    }
    char *m = NULL;
    if ((r = grow_prealloc(img->file, (uint64_t)start + nb_data * cs, prealloc, &m)) < 0) {
        *errmsg = xasprintf("Failed to resize underlying file: %s", m);
        free(m);
        qcow2_free_clusters(&s->m, (uint64_t)start, nb_data * cs, QCOW2_DISCARD_OTHER);
        return r;
    }
    return qcow2_link_preallocated(img, old, (uint64_t)start, nb_data, mark_prealloc, errmsg);
}

int qcow2_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc, char **errmsg)
{
    struct qcow2_state *s = img->priv;
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
    bool falloc = prealloc == IMG_PREALLOC_FALLOC || prealloc == IMG_PREALLOC_FULL;
    /* bdrv_co_truncate asks for a zeroed new area when a longer backing file would show
     * through (BDRV_REQ_ZERO_WRITE); a growing regular file gives zeros, so with falloc/full
     * and no data file the file takes that request and nothing is zeroed afterwards */
    bool zero_write = size > old && img->backing && img->backing->size > old;
    bool file_zeroes = falloc && !s->geom.data_file && zero_write;
    r = qcow2_grow_l1_table(&s->m, new_l1, true);
    if (r < 0) {
        *errmsg = xasprintf("Failed to grow the L1 table: %s", strerror(-r));
        return r;
    }
    /* a data-file-raw image keeps its metadata preallocated (qemu enforces it at create) */
    if (prealloc == IMG_PREALLOC_OFF && (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW))
        prealloc = IMG_PREALLOC_METADATA;
    if (falloc && s->geom.data_file) {
        if ((r = data_file_prealloc(img, old, size, prealloc, errmsg)) < 0)
            return r;
    } else if (falloc) {
        if ((r = file_prealloc(img, old, size, prealloc, !file_zeroes, errmsg)) < 0)
            return r;
    } else if (prealloc == IMG_PREALLOC_METADATA) {
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
    if (zero_write && !file_zeroes) {
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
