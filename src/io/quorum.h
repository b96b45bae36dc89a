/* qio backend of qemu's quorum driver (block/quorum.c), read-only: every read goes to all
 * children and the version most of them return wins if at least vote-threshold agree (or,
 * with read-pattern fifo, the first child that reads). */
#ifndef QIMG_IO_QUORUM_H
#define QIMG_IO_QUORUM_H

#include <stdbool.h>
#include <stddef.h>

#include "io/qio.h"

/* Takes over children[0..n) (n >= 1, 1 <= threshold <= n) and the array itself; name is
 * the node's name. Opened read-only: writes through a quorum are not supported by qimg. */
qio_t *qio_open_quorum(const char *name, qio_t **children, size_t n, int threshold,
                       bool fifo);

bool qio_is_quorum(const qio_t *q);

#endif
