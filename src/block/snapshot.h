/* Internal snapshots at the block layer (qemu's block/snapshot.c and bdrv_snapshot_dump):
 * what `qimg snapshot` and `qimg info` call. Only qcow2 has internal snapshots; for the
 * other formats these answer as qemu's fallback to the protocol layer does (-ENOTSUP and
 * qemu's messages). */
#ifndef QIMG_BLOCK_SNAPSHOT_H
#define QIMG_BLOCK_SNAPSHOT_H

#include <stdint.h>

#include "block/driver.h"

/* qemu's bdrv_snapshot_dump: the table header and one row, each with its newline. */
void snapshot_dump_header(void);
void snapshot_dump_row(const snapshot_info_t *sn);

/* qemu 7.2's bdrv_snapshot_find: by name (not id), over the list info shows;
 * 0 with *id and *name (malloc'd) or -ENOENT. */
int image_snapshot_find(image_t *img, const char *s, char **id, char **name);

/* bdrv_snapshot_create of a disk-only snapshot with the given date: 0 or -errno. */
int image_snapshot_create(image_t *img, const char *name, uint32_t date_sec, uint32_t date_nsec);

/* bdrv_snapshot_goto (by id or name): 0, or -errno with *errmsg (malloc'd) the text qemu
 * puts after "Could not apply snapshot 'NAME': ". Messages qemu reports on the way are
 * printed. */
int image_snapshot_goto(image_t *img, const char *s, char **errmsg);

/* bdrv_snapshot_delete of the entry with this id and name: 0, or -errno with *errmsg as
 * above (NULL when qemu sets none). */
int image_snapshot_delete(image_t *img, const char *id, const char *name, char **errmsg);

#endif
