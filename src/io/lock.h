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

/* Permission bits (qemu's BLK_PERM_*), for qio_lock_perms(). */
enum {
    QIO_PERM_READ = 1u << 0,    /* consistent read */
    QIO_PERM_WRITE = 1u << 1,
    QIO_PERM_RESIZE = 1u << 3,
};

/* qemu's raw_check_lock_bytes() + raw_apply_lock_bytes(): refuse with -EBUSY if another
 * process does not share a permission in perm (then *perm_name names it and *shared is
 * false: qemu's 'Failed to get "P" lock'), or holds a permission in unshared (*shared true:
 * 'Failed to get shared "P" lock'); otherwise lock bytes 100 + perm and 200 + unshared.
 * Bits are tested in ascending order, as qemu does. Files without OFD locks are not locked.
 * 0 or -errno. */
int qio_lock_perms(qio_t *q, unsigned perm, unsigned unshared, const char **perm_name,
                   bool *shared);

/* The whole qemu message for a -EBUSY from qio_lock_perms(), malloc'd:
 * 'Failed to get shared "write" lock\nIs another process using the image [F]?' */
char *qio_lock_msg(const char *perm_name, bool shared, const char *filename);

/* qemu-img's permissions for an image opened read-only (rdwr false) or read-write, with
 * format metadata (qcow2, qed, vdi: others' write/resize not shared) or raw (all shared),
 * or force_share (-U, read-only: everything shared). Locks q; -EBUSY sets *errmsg to
 * qemu's message naming filename. 0 or -errno. */
/* The locks qemu takes on an external data file (a qcow2 data_file): as qio_lock_image, but
 * only resizing is kept from others. 0, or -EBUSY / -errno with *errmsg set. */
int qio_lock_data_file(qio_t *q, bool rdwr, bool force_share, const char *filename,
                       char **errmsg);
int qio_lock_image(qio_t *q, bool rdwr, bool metadata, bool force_share, const char *filename,
                   char **errmsg);

#endif
