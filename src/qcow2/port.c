/* The metadata write port (see port.h). Provisional direct backend: the overlap guard, the
 * journal and plan backends replace these bodies (issue 11, branch i11-port); callers do
 * not change. */
#include "qcow2/image.h"
#include "qcow2/port.h"

int qcow2_meta_pwrite(struct qcow2_image *m, unsigned ign, uint64_t off, const void *buf,
                      size_t len)
{
    int rc = qcow2_overlap_check(m, ign, off, len);
    if (rc < 0)
        return rc;
    return qio_pwrite(m->q, buf, len, off);
}

int qcow2_meta_flush(struct qcow2_image *m)
{
    return qio_flush(m->q);
}

int qcow2_meta_truncate(struct qcow2_image *m, uint64_t size)
{
    return qio_truncate(m->q, size);
}

int qcow2_overlap_check(struct qcow2_image *m, unsigned ign, uint64_t off, uint64_t len)
{
    (void)m, (void)ign, (void)off, (void)len;
    return 0;
}
