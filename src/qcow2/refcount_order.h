/* Changing the refcount width of the one qcow2 model (qemu's qcow2_change_refcount_order,
 * block/qcow2-refcount.c). */
#ifndef QIMG_QCOW2_REFCOUNT_ORDER_H
#define QIMG_QCOW2_REFCOUNT_ORDER_H

#include <stdint.h>

#include "qcow2/image.h"

typedef void (*qcow2_status_fn)(void *opaque, int64_t offset, int64_t total);

/* qemu's qcow2_change_refcount_order: new refcount blocks and table for refcount width
 * 2^order, allocated where qemu allocates them (walking the old structures until the new
 * ones describe themselves too), written, flushed, the header switched in one write, the
 * model switched, the old structures freed. 0 or -errno with *errmsg (qemu's words). */
int qcow2_change_refcount_order(struct qcow2_image *m, unsigned order, qcow2_status_fn cb,
                                void *opaque, char **errmsg);

#endif
