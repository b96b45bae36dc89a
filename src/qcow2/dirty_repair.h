/* The repair of a dirty image at a read-write open (qemu's qcow2_do_open: an image whose
 * dirty bit is set - lazy refcounts and a writer that did not close it - is checked with
 * BDRV_FIX_ERRORS | BDRV_FIX_LEAKS before it is used). The block driver (src/block/qcow2.c)
 * calls it; repair/dirty_open.c implements it with `check -r all`'s engine (repair/inplace.h:
 * plan on an overlay, overlap guard, a double check judging the result). The model names
 * the repair it needs here, so nothing under src/ includes a repair/ header. */
#ifndef QIMG_QCOW2_DIRTY_REPAIR_H
#define QIMG_QCOW2_DIRTY_REPAIR_H

#include <stdbool.h>

#include "io/qio.h"

/* Repairs the qcow2 image on q (open read-write and locked by the caller; its data file
 * and backing chain are opened again, sharing, as the caller holds their locks). Prints
 * what qemu's check prints on that path (ERROR / Leaked / Repairing / Rebuilding lines on
 * stderr) and nothing else. *consistent: the double check found no corruption and no
 * check error, so the dirty bit (and the guard's corrupt bit) were cleared; otherwise the
 * incompatible features are as they were. 0, or -errno (the open then fails with qemu's
 * "Could not repair dirty image: <strerror>"). */
int repair_dirty_on_open(qio_t *q, const char *filename, bool *consistent);

#endif
