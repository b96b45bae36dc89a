/* qio backend on an NBD export, through libnbd (qemu's block/nbd.c client as qimg needs it:
 * read, write, zero, trim, flush and block status from one metadata context). */
#ifndef QIMG_IO_NBD_H
#define QIMG_IO_NBD_H

#include "io/qio.h"

/* Where the server is (qemu's SocketAddress of the nbd driver) and what to ask it for. */
struct qio_nbd_addr {
    char *type;   /* "unix" or "inet" */
    char *host;   /* inet */
    char *port;   /* inet, "10809" by default */
    char *path;   /* unix socket */
    char *export; /* NULL: the default export "" (and no "/export" in the printed name) */
    char *bitmap; /* x-dirty-bitmap: the metadata context read instead of base:allocation */
};

void qio_nbd_addr_free(struct qio_nbd_addr *a);

/* qemu's nbd_refresh_filename(): "nbd+unix:///EXP?socket=P", "nbd://HOST:PORT/EXP"... */
char *qio_nbd_name(const struct qio_nbd_addr *a);

/* Connects (bounded by QIMG_NBD_CONNECT_TIMEOUT seconds, 30 by default) and negotiates.
 * On failure returns -errno and sets *errmsg to qemu's text, e.g. "Failed to connect to
 * '/run/s': No such file or directory". */
int qio_open_nbd(const struct qio_nbd_addr *a, int flags, qio_t **out, char **errmsg);

/* Whether q is an NBD connection. */
bool qio_is_nbd(const qio_t *q);

/* Block status flags of qio_status (NBD_STATE_HOLE / NBD_STATE_ZERO turned around). */
enum { QIO_ST_DATA = 1, QIO_ST_ZERO = 2 };

#endif
