/* qemu's image locking (block/file-posix.c): open file description (OFD) locks on single
 * bytes. A process holding permission bit i locks byte 100 + i shared; one that does not
 * share permission i with others locks byte 200 + i shared. Bit 0 is consistent read,
 * bit 1 write, bit 3 resize. */
#ifndef QIMG_IO_LOCK_H
#define QIMG_IO_LOCK_H

#include "io/qio.h"

/* For a repair: refuse (-EBUSY, *perm names the permission) if another process writes
 * the image or does not share write/resize, then take qemu's locks for a writer that
 * shares neither. The locks go with the file description (closed with q). 0 or -errno. */
int qio_lock_for_repair(qio_t *q, const char **perm);

#endif
