/* The metadata write port: every write of qcow2 metadata (header, L1/L2 tables, refcount
 * table and blocks, snapshot table, bitmap structures) passes through here, from repair and
 * from every writing command alike.
 *
 * Each write first passes the metadata overlap guard (qemu's
 * qcow2_pre_write_overlap_check): `ign` names the QCOW2_OL_* classes the write may overlap
 * (a refblock write may overlap refcount blocks, an L2 update active L2 tables...). A hit is
 * qemu's corruption event ("qcow2: Marking image as corrupt: Preventing invalid write on
 * metadata (overlaps with ...); further corruption events will be suppressed"), the corrupt
 * bit set on v3 images, and -EIO.
 *
 * The guard (qcow2/overlap.h) keeps its class ranges cached: a writer that allocates a new
 * L2 table or refblock calls qcow2_overlap_add(m, class, off, len) afterwards; one that
 * moves or frees metadata (L1 or refcount table growth, snapshots, a freed table) calls
 * qcow2_overlap_invalidate(m) (overlap.h says which and why).
 *
 * Backends (the generic write port, io/wport.h; one per open image, m->port):
 *   direct   writes the image file (flushes are real barriers)
 *   journal  records old and new bytes in the SQLite journal before each write (undo)
 *   plan     records the write instead of making it (dry runs); reads through the model
 *            see the planned bytes when the model reads m->q = plan_overlay_qio(plan)
 * With m->port NULL the model writes directly on m->q (the direct backend). The caller
 * labels writes for the plan and the journal with wport_label(&m->port->w, class, reason).
 *
 * Writes that qemu makes without the guard (qcow2_update_header and its header fields,
 * qcow2_mark_corrupt) pass ign = QCOW2_OL_ALL. */
#ifndef QIMG_QCOW2_PORT_H
#define QIMG_QCOW2_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "io/wport.h"

struct qcow2_image;

/* m->port: a write port (io/wport.h) serving a qcow2 model. */
struct qcow2_port {
    struct wport w;
};

/* qemu's QCow2MetadataOverlap classes (bit order; the guard tests them in qemu's order:
 * header, active L1, refcount table, snapshot table, inactive L1, active L2, refcount
 * blocks, inactive L2, bitmap directory). */
enum {
    QCOW2_OL_MAIN_HEADER = 1u << 0,
    QCOW2_OL_ACTIVE_L1 = 1u << 1,
    QCOW2_OL_ACTIVE_L2 = 1u << 2,
    QCOW2_OL_REFCOUNT_TABLE = 1u << 3,
    QCOW2_OL_REFCOUNT_BLOCK = 1u << 4,
    QCOW2_OL_SNAPSHOT_TABLE = 1u << 5,
    QCOW2_OL_INACTIVE_L1 = 1u << 6,
    QCOW2_OL_INACTIVE_L2 = 1u << 7,
    QCOW2_OL_BITMAP_DIRECTORY = 1u << 8,
};
#define QCOW2_OL_NONE 0u
#define QCOW2_OL_ALL (~0u)   /* no check at all (header writes, as qemu) */


/* Write len bytes of metadata at file offset off, guarded as above. 0 or -errno. */
int qcow2_meta_pwrite(struct qcow2_image *m, unsigned ign, uint64_t off, const void *buf,
                      size_t len);
/* A barrier: every earlier metadata write is on disk before any later one. */
int qcow2_meta_flush(struct qcow2_image *m);
/* Set the image file's length (growth for new clusters, shrinking in resize). */
int qcow2_meta_truncate(struct qcow2_image *m, uint64_t size);

/* The guard alone, for guest data writes into the image file (qemu checks those too):
 * 0, or -EIO after the corruption event. */
int qcow2_overlap_check(struct qcow2_image *m, unsigned ign, uint64_t off, uint64_t len);

#include "qcow2/image.h"

/* A discard (hole punched in the image or data file) is a hint that may be dropped, and one
 * that neither a journal nor a plan could record or undo: only the direct backend passes it
 * down (a journaled or planned run keeps the freed bytes; they stay free in the refcounts). */
static inline int qcow2_port_discard(struct qcow2_image *m, qio_t *q, uint64_t off,
                                     uint64_t len)
{
    if (m->port && m->port->w.kind != WPORT_DIRECT)
        return 0;
    return qio_fallocate(q, QIO_FALLOC_PUNCH_HOLE, off, len);
}

/* The backend m writes through from now on (NULL: direct on m->q); not owned. */
static inline void qcow2_port_set(struct qcow2_image *m, struct qcow2_port *p)
{
    m->port = p;
}

#endif
