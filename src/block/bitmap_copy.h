/* Persistent bitmaps from one qcow2 image to another (qemu-img convert --bitmaps:
 * convert_check_bitmaps / convert_copy_bitmaps over the block layer's dirty bitmaps). */
#ifndef QIMG_BLOCK_BITMAP_COPY_H
#define QIMG_BLOCK_BITMAP_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/image.h"

struct image_bitmap {
    const char *name;     /* points into the image's directory */
    uint32_t gran_bits;
    bool enabled;
    bool inconsistent;    /* in use: its contents cannot be trusted */
    size_t index;         /* directory index */
};

/* The persistent bitmaps of a qcow2 image in qemu's FOR_EACH_DIRTY_BITMAP order (the
 * reverse of the directory: qemu's load inserts each at the head). *list malloc'd. */
void image_bitmaps_list(image_t *img, struct image_bitmap **list, size_t *n);

/* Copies the bitmaps of src to the writable qcow2 dst, qemu's way: each added with the
 * same granularity, disabled when the source's is, then its bits merged in; dst stores
 * them when it closes. Skipped (not in want[]) entries are left out. Bitmaps are added in
 * the order qemu's list ends up in, so the directory and data clusters are qemu's.
 * 0, or -errno with *errmsg = "Failed to create/populate bitmap NAME: ...". */
int image_bitmaps_copy(image_t *src, image_t *dst, const bool *want, size_t n,
                       char **errmsg);

#endif
