/* --dry-run / --journal for a command that changes an image in place (resize, amend): the
 * whole change (open
 * read-write, the command's work, close) runs on a writable overlay of the image file
 * whose writes land in a plan (repair/plan.h). A dry run prints the plan; --journal
 * replays it through the journaled write port (io/wport.h wport_apply), so
 * `qimg undo JOURNAL IMAGE` restores every byte. */
#ifndef QIMG_CMD_PORTED_H
#define QIMG_CMD_PORTED_H

#include <stdbool.h>

#include "block/image.h"

/* The command's work on the overlay's image (open read-write); 0 or -errno with *errmsg
 * (malloc'd) unless it printed its message. */
typedef int (*ported_fn)(image_t *img, void *ctx, char **errmsg);

/* orig is open read-only (IMG_OPEN_SHARE for a journal: the journal's writer takes the
 * locks); its backing chain is lent to the overlay's image. title names the plan
 * ("Amend"). Images with an external data file are refused (a second file). 0, or -errno
 * with *errmsg set (malloc'd) unless the message was printed already. */
int ported_run(image_t *orig, const char *filename, const char *title, ported_fn fn,
               void *ctx, bool dry_run, const char *journal, char **errmsg);

#endif
