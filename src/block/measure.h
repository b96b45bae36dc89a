/* What measure needs from a source image beyond block status: qemu's
 * bdrv_snapshot_load_tmp (-l) and the persistent bitmaps qcow2_measure counts. */
#ifndef QIMG_BLOCK_MEASURE_H
#define QIMG_BLOCK_MEASURE_H

#include <stddef.h>

#include "block/image.h"
#include "qcow2/measure.h"

/* qemu's bdrv_snapshot_load_tmp on a read-only image: guest reads and block status of img
 * itself then see internal snapshot (id, name) (either may be NULL, not both; given both,
 * both must match); the virtual size stays the image's, as qemu's does. On failure returns
 * -errno and sets *errmsg (malloc'd) to qemu's text, e.g. "Can't find snapshot". */
int image_snapshot_load_tmp(image_t *img, const char *id, const char *name, char **errmsg);

/* qemu's bdrv_supports_persistent_dirty_bitmap: qcow2 version 3. */
bool image_supports_persistent_bitmaps(const image_t *img);

/* The persistent bitmaps of img (qcow2: every entry of the bitmap directory, which qemu
 * loads at open). *list malloc'd (NULL when none), *n entries. */
void image_measure_bitmaps(const image_t *img, struct qcow2_measure_bitmap **list, size_t *n);

#endif
