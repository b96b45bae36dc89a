/* qemu's bdrv_make_empty, as `commit` empties the committed image: qcow2 only
 * (qcow2_make_empty); other formats -ENOTSUP, which commit ignores as qemu-img does. */
#ifndef QIMG_BLOCK_MAKE_EMPTY_H
#define QIMG_BLOCK_MAKE_EMPTY_H

#include "block/image.h"

/* img open read-write. Afterwards the image must only be closed (qcow2's fast path
 * rebuilds the refcount structures under the model). 0 or -errno. */
int image_make_empty(image_t *img);

#endif
