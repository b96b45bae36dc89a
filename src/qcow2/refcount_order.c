/* qemu's qcow2_change_refcount_order (see refcount_order.h). */
#include "qcow2/refcount_order.h"

#include <errno.h>

#include "util/xalloc.h"

int qcow2_change_refcount_order(struct qcow2_image *m, unsigned order, qcow2_status_fn cb,
                                void *opaque, char **errmsg)
{
    (void)m; (void)order; (void)cb; (void)opaque;
    *errmsg = xstrdup("Changing the refcount width is not supported yet");
    return -ENOTSUP;
}
