/* Writing the snapshot table of the one qcow2 model (qemu's qcow2_write_snapshots). */
#ifndef QIMG_QCOW2_SNAPSHOT_WRITE_H
#define QIMG_QCOW2_SNAPSHOT_WRITE_H

#include "qcow2/image.h"

/* qemu's qcow2_write_snapshots: the m->nb_sn entries of m->sn written, in v3 form (24
 * bytes of known extra data, the unknown extra data kept), to newly allocated clusters;
 * flushed; the header's nb_snapshots and snapshots_offset switched in one synced write;
 * the old table freed. The model (sn_offset, sn_size, h) follows. 0 or -errno (-EFBIG for
 * a table past 64 MiB). */
int qcow2_image_write_snapshots(struct qcow2_image *m);

#endif
