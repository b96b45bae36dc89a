/* qio backend of qemu's null-co / null-aio protocol drivers (block/null.c): a device of a
 * given size that stores nothing. Used as a conversion source of zeros in qemu's iotests. */
#ifndef QIMG_IO_NULL_H
#define QIMG_IO_NULL_H

#include <stdbool.h>
#include <stdint.h>

#include "io/qio.h"

/* qemu's default size of a null node (1 GiB). */
#define QIO_NULL_DEFAULT_SIZE (UINT64_C(1) << 30)

/* A null device of size bytes. Reads return zeros (qemu leaves the buffer untouched
 * without read-zeroes; qimg never hands out uninitialised memory); writes succeed and are
 * dropped, as qemu's null_co_pwritev. read_zeroes decides block status: qemu reports
 * OFFSET_VALID|ZERO with it and OFFSET_VALID alone (unallocated) without. */
qio_t *qio_open_null(const char *name, uint64_t size, bool read_zeroes, int flags);

bool qio_is_null(const qio_t *q);

#endif
