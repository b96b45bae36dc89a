/* One loader for qcow2's tables of big-endian 64-bit entries (active and snapshot L1,
 * refcount table, bitmap tables), shared by the checker, repair and the block driver.
 *
 * One rule for a table cut by EOF (qemu reads past EOF as zeros): the entries that lie at
 * least partly inside the file are read (the bytes past EOF of a straddling entry are zero),
 * the rest read as 0 and are not loaded, so memory follows the file and not the header. */
#ifndef QIMG_QCOW2_TABLE_H
#define QIMG_QCOW2_TABLE_H

#include <stdint.h>

#include "io/qio.h"

/* Entries of a table of `entries` at off that lie at least partly inside a file of
 * file_size bytes. */
static inline uint64_t qcow2_table_in_file(uint64_t off, uint64_t entries, uint64_t file_size)
{
    if (off >= file_size)
        return 0;
    uint64_t avail = (file_size - off + 7) / 8;
    return avail < entries ? avail : entries;
}

/* qemu's request check: reading the table ends past BDRV_MAX_LENGTH, which fails with
 * -EIO (while a read merely past EOF gives zeros). */
static inline int qcow2_table_past_max(uint64_t off, uint64_t entries)
{
    return entries && (off > QIO_MAX_LENGTH || entries > (QIO_MAX_LENGTH - off) / 8);
}

/* qcow2_table_load flags */
enum {
    /* allocate all `entries` (zeros past EOF) so callers may index the whole table;
     * without it *out holds only the *loaded entries (NULL when none) */
    QCOW2_TABLE_PAD = 1u << 0,
};

/* The table at off in host order. A table whose end passes qemu's BDRV_MAX_LENGTH is an
 * I/O error (-EIO, qemu's request check; merely past EOF reads zeros). 0 or -errno (*out is
 * then NULL). The caller bounds `entries` (the header and snapshot decoders do). */
int qcow2_table_load(qio_t *q, uint64_t file_size, uint64_t off, uint64_t entries,
                     unsigned flags, uint64_t **out, uint64_t *loaded);

#endif
