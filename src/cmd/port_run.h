/* --dry-run / --journal for a command that changes one image in place (resize, bitmap):
 * the command's whole work on the image
 * (open, its operations, close) runs on a writable overlay of the image file whose writes
 * land in a plan (repair/plan.h) instead of the file; a dry run prints the plan, --journal
 * replays it through the journaled write port so `qimg undo JOURNAL IMAGE` restores every
 * byte. A flush of the driver is a barrier: the replay keeps the order of the writes across
 * it (wport_apply flushes between plan classes). */
#ifndef QIMG_CMD_PORT_RUN_H
#define QIMG_CMD_PORT_RUN_H

#include <stdbool.h>

#include "block/image.h"

/* The command's work on img (writable, on the overlay). Returns the command's exit status
 * (0 or 1), having printed its own messages; the close after it belongs to the plan too. */
typedef int (*port_fn)(image_t *img, void *ctx);

/* orig: the image opened read-only (IMG_OPEN_SHARE for a journal: the journal's writer
 * takes the locks). The overlay is opened as orig's format with IMG_OPEN_RDWR | flags.
 * what names the command in the dry run's header ("Bitmap plan ..."). Returns fn's status,
 * or 1 after printing why the plan could not be made or applied. */
int port_run(image_t *orig, const char *filename, int flags, const char *what, port_fn fn,
             void *ctx, bool dry_run, const char *journal);

#endif
