/* --dry-run / --journal for a command that changes an image in place (snapshot; the same
 * machinery as resize_port.c, made generic): the command's work runs on a writable overlay
 * of the image file whose writes land in a plan (repair/plan.h) instead of the file. A dry
 * run prints the plan; --journal replays it through the journaled write port (io/wport.h),
 * so `qimg undo JOURNAL IMAGE` restores every byte. Flushes are barriers: each flush after
 * writes starts a new plan class and the replay flushes between classes, keeping the
 * command's write order. Images with an external data file are refused (a second file). */
#ifndef QIMG_CMD_OVERLAY_RUN_H
#define QIMG_CMD_OVERLAY_RUN_H

#include <stdbool.h>

#include "block/image.h"

/* The command's work on img (opened read-write on the overlay, orig's backing chain lent
 * to it). 0, or nonzero after printing its messages: then nothing is printed or written. */
typedef int (*overlay_fn)(image_t *img, void *ctx);

/* orig: the image open read-only (with IMG_OPEN_SHARE for a journal: the journal's writer
 * takes the locks). what: the plan's title word ("Snapshot"). Returns fn's result, or
 * -errno with the message printed. */
int overlay_run(image_t *orig, const char *filename, const char *what, bool dry_run,
                const char *journal, overlay_fn fn, void *ctx);

#endif
