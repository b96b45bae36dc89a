/* NBD names and options for the name parser (blockspec.c). */
#ifndef QIMG_BLOCK_BLOCKSPEC_NBD_H
#define QIMG_BLOCK_BLOCKSPEC_NBD_H

#include <stdbool.h>

#include "block/blockspec.h"

/* "nbd:...", "nbd+tcp:..." or "nbd+unix:..." (qemu's protocols of the nbd driver). */
bool blockspec_is_nbd_name(const char *name);
/* The nbd driver's options (server.type, server.path|host+port, export) of such a name,
 * unprefixed, into o; -EINVAL with qemu's message ("No valid URL specified", ...). */
int blockspec_nbd_parse_name(const char *name, struct bspec *o, char **errmsg);
/* Takes the nbd driver's options out of o (unprefixed) into a; what is left is unknown to
 * the nbd protocol. -EINVAL with qemu's message when the address is incomplete. */
int blockspec_nbd_take(struct bspec *o, struct qio_nbd_addr *a, char **errmsg);

#endif
