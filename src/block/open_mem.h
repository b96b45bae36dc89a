/* image_open() for an already open qio_t, one layer, no backing chain. */
#ifndef QIMG_BLOCK_OPEN_MEM_H
#define QIMG_BLOCK_OPEN_MEM_H

#include "block/image.h"
#include "io/qio.h"

/* Opens q (which the image then owns: image_close() closes it, and so does a failed open)
 * as format fmt (NULL: probe). IMG_OPEN_NO_BACKING is implied. filename is what messages
 * and relative data-file names use. On failure returns -errno and sets *errmsg (malloc'd)
 * to the text qemu prints after "Could not open 'F': ". */
int image_open_qio(qio_t *q, const char *filename, const char *fmt, int flags, image_t **out,
                   char **errmsg);

/* The same with the key options of an encrypted image (image_t.key_secret and
 * encrypt_format, NULL when not given). */
int image_open_qio_keyed(qio_t *q, const char *filename, const char *fmt, int flags,
                         const char *key_secret, const char *encrypt_format, image_t **out,
                         char **errmsg);

#endif
