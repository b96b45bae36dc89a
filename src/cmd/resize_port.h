/* resize --dry-run / --journal (resize_port.c): the resize made through the write port's
 * plan backend (printed, nothing written) or journal backend (undone by `qimg undo`). */
#ifndef QIMG_CMD_RESIZE_PORT_H
#define QIMG_CMD_RESIZE_PORT_H

#include <stdbool.h>
#include <stdint.h>

#include "block/image.h"

/* img is open read-only (with IMG_OPEN_SHARE for a journal: the journal's writer takes
 * the locks). 0, or -errno with *errmsg set
 * (malloc'd) unless the message was printed already. */
int resize_ported(image_t *img, const char *filename, uint64_t size, enum img_prealloc prealloc,
                  bool dry_run, const char *journal, char **errmsg);

#endif
