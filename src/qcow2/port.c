/* The metadata write port of the qcow2 model (see port.h): the overlap guard, then the
 * backend (io/wport.h), or the image file itself when no port is set. */
#include "qcow2/port.h"

#include "io/wport.h"
#include "qcow2/image.h"

int qcow2_meta_pwrite(struct qcow2_image *m, unsigned ign, uint64_t off, const void *buf,
                      size_t len)
{
    int rc = qcow2_overlap_check(m, ign, off, len);
    if (rc < 0)
        return rc;
    return m->port ? wport_pwrite(&m->port->w, off, buf, len)
                   : qio_pwrite(m->q, buf, len, off);
}

int qcow2_meta_flush(struct qcow2_image *m)
{
    return m->port ? wport_flush(&m->port->w) : qio_flush(m->q);
}

int qcow2_meta_truncate(struct qcow2_image *m, uint64_t size)
{
    return m->port ? wport_truncate(&m->port->w, size) : qio_truncate(m->q, size);
}
