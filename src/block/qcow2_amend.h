/* The block-level pieces of qcow2 amend (qcow2_amend.c, qcow2_expand.c). Not public. */
#ifndef QIMG_BLOCK_QCOW2_AMEND_H
#define QIMG_BLOCK_QCOW2_AMEND_H

#include "block/amend.h"
#include "block/image.h"

/* qemu's qcow2_expand_zero_clusters (for a downgrade to v2, no subclusters): in the active
 * L2 tables (through the L2 cache) and then in every snapshot's (read and written
 * directly), each zero cluster becomes a data cluster of zeros: a preallocated one is
 * zeroed in place; a plain one is dropped (entry 0) without a backing file, else a new
 * cluster is allocated and zeroed (its refcount that of the L2 table). cb gets one step
 * per L1 entry visited. 0 or -errno (-EIO after qemu's corruption event). */
int qcow2_expand_zero_clusters(image_t *img, amend_status_fn cb, void *opaque);

#endif
