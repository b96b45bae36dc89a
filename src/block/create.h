/* Image creation per format (qemu's bdrv_create -> drv->bdrv_co_create_opts), after
 * cmd/create.c has parsed and printed the options. */
#ifndef QIMG_BLOCK_CREATE_H
#define QIMG_BLOCK_CREATE_H

#include "block/create_opts.h"
#include "io/qio.h"

/* Creates filename as fmt from the options (size set). 0, or -errno with *errmsg (malloc'd,
 * qemu's message; NULL: strerror). -EFBIG: size too large for the format (the caller words
 * it as qemu-img does). */
int block_create(const char *fmt, const char *filename, const struct copts *o, char **errmsg);

/* block_create() on an NBD export named by filename (qemu's bdrv_co_create_opts_simple
 * fallback: the export opened, its first sector zeroed, the format written through it).
 * block_create_is_nbd() says whether filename names an export. */
bool block_create_is_nbd(const char *filename);
int block_create_nbd(const char *fmt, const char *filename, const struct copts *o,
                     char **errmsg);

int raw_create(const char *filename, const struct copts *o, char **errmsg);
int qcow2_create(const char *filename, const struct copts *o, char **errmsg);
int qed_create(const char *filename, const struct copts *o, char **errmsg);
int vdi_create(const char *filename, const struct copts *o, char **errmsg);
int luks_create_image(const char *filename, const struct copts *o, char **errmsg);

/* LUKS creation options (prefix "" for luks, "encrypt." for qcow2) with qemu's defaults:
 * aes-256 xts plain64, sha256, iter-time 2000 ms. 0 or -EINVAL with qemu's message. */
struct luks_create_opts;
int luks_options(const struct copts *o, const char *prefix, struct luks_create_opts *lo,
                 char **errmsg);

/* measure's LUKS header length (qcrypto_block_calculate_payload_offset): the options, the
 * key secret (required and known, as qemu's measure creates a header with it) and the
 * cipher checked. 0 or -errno with qemu's message. */
int luks_measure_payload(const struct copts *o, const char *prefix, uint64_t *len,
                         char **errmsg);

/* file-posix's raw_co_create: the file created (truncated to 0) then sized to size with
 * preallocation prealloc ("off", "falloc", "full"; NULL: off). Shared by the formats that
 * create their file first. 0 or -errno with *errmsg. */
int file_create(const char *filename, uint64_t size, const char *prealloc, char **errmsg);
/* file-posix's allocate_first_block on an open file that just grew from empty to size:
 * zeros over its first block (512 bytes, 4096 once the file is that long). Best effort,
 * failures ignored as qemu ignores them; the allocation it leaves is part of the result. */
void file_allocate_first_block(qio_t *q, uint64_t size);

#endif
