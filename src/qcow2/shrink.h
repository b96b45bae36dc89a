/* Shrinking the refcount structures after an image was cut (resize --shrink). */
#ifndef QIMG_QCOW2_SHRINK_H
#define QIMG_QCOW2_SHRINK_H

#include <stddef.h>
#include <stdint.h>

#include "qcow2/image.h"

/* qemu's qcow2_shrink_reftable: refblocks that count nothing but themselves are dropped
 * from the refcount table (written and flushed), their clusters then freed. 0 or -errno;
 * where qemu signals corruption (unaligned or uncovered refblock, refcount not 1) why holds
 * its message (else ""), for the caller's corruption event. */
int qcow2_shrink_reftable(struct qcow2_image *m, char *why, size_t whylen);

/* qemu's qcow2_get_last_cluster: the last cluster of a file of file_size bytes with a
 * refcount above 0, or -errno (-EIO: none at all). */
int64_t qcow2_get_last_cluster(struct qcow2_image *m, uint64_t file_size);

#endif
