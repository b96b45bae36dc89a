/* qemu's bdrv_change_backing_file: the backing file name and format an image stores,
 * rewritten in its header (rebase; commit leaves them). qcow2 (qcow2_change_backing_file:
 * the header cluster rebuilt by qcow2_update_header) and qed (bdrv_qed_change_backing_file:
 * header and name written at offset 0, synced); other formats -ENOTSUP. */
#ifndef QIMG_BLOCK_BACKING_CHANGE_H
#define QIMG_BLOCK_BACKING_CHANGE_H

#include <stdbool.h>

#include "block/image.h"

/* img open read-write. name NULL: no backing file (fmt must be NULL). require: a name
 * without a format is -EINVAL (qemu 7.2's require argument, as rebase passes it).
 * 0 or -errno: -EINVAL (format without name, name without format when required, name
 * longer than 1023 bytes or a qcow2 data_file_raw image given a backing file), -ENOSPC (no
 * room in the header), -ENOTSUP (format without backing files; qed with unknown compat
 * features). On success img->backing_file/backing_full/backing_format follow. */
int image_change_backing_file(image_t *img, const char *name, const char *fmt, bool require);

/* qemu's bdrv_find_backing_image for a plain file name: the layer below the first image of
 * top's chain whose stored backing name, resolved against it, is the same file (realpath)
 * as name resolved against that image; NULL when none. */
image_t *image_find_backing_image(image_t *top, const char *name);

#endif
