/* --dry-run / --journal for commands that change images in place (resize, rebase,
 * commit): the command runs on a writable overlay of the image file whose writes land in
 * a plan (journal/plan.h) instead of the file. A dry run prints the plan; --journal then
 * replays it through the journaled write port (io/wport.h wport_apply), so `qimg undo
 * JOURNAL IMAGE` restores every byte.
 *
 * The driver's flushes are barriers in the plan: each flush after writes starts a new plan
 * class, and wport_apply flushes between classes, so the replay keeps the write order the
 * command relies on. A shrink of the file is not made (the journal holds no bytes of a
 * cut); images with an external data file are refused (a second file). */
#ifndef QIMG_CMD_PORTED_H
#define QIMG_CMD_PORTED_H

#include <stdbool.h>

#include "block/image.h"
#include "io/qio.h"
#include "journal/plan.h"

/* The two modes exclude each other: false after qemu-style error text, as every command
 * taking both says it. */
bool ported_modes_ok(bool dry_run, const char *journal);

/* The writable overlay on plan p: reads see the plan applied, writes and growth are
 * recorded (label: reason of every entry). The qio is closed by its image. */
qio_t *ported_overlay(struct plan *p, const char *path, const char *label);

struct ported {
    struct plan plan;
    image_t *img;       /* the image opened read-write on the overlay */
    image_t *orig;
};

/* Opens orig's file (orig open read-only, IMG_OPEN_SHARE) as *out, writable through the
 * overlay; it shares orig's backing chain. 0 or -errno with *errmsg (malloc'd). */
int ported_open(struct ported *pt, image_t *orig, const char *filename, image_t **out,
                char **errmsg);

/* Replays plan onto filename through a new journal at path journal (the file opened
 * read-write and locked as a writer). 0 or -errno with *errmsg (malloc'd) unless printed. */
int ported_apply_journal(struct plan *plan, const char *filename, const char *journal,
                         char **errmsg);

/* A dry run's plan: "TITLE plan for 'FILENAME' (dry run, nothing was written): N writes,
 * B bytes" (without the for-part when filename is NULL: resize's older header), then a
 * line per entry. */
void ported_print_plan(const struct plan *p, const char *title, const char *filename);

/* After ported_open: discards the command makes (holes punched in the file, as qemu's
 * freed clusters) are recorded as zeros written, so a journaled result reads as the
 * direct one (snapshot). Without it they are dropped, as the journal cannot hold holes. */
void ported_record_discards(struct ported *pt);

/* Closes the overlay image (its close-time writes belong to the plan), then if ok: dry run prints the plan under "TITLE plan (dry run, ...)";
 * journal applies it through a journal at path journal. 0 or -errno with *errmsg set
 * (malloc'd) unless the message was printed already. */
int ported_finish(struct ported *pt, const char *filename, bool ok, bool dry_run,
                  const char *journal, const char *title, char **errmsg);

#endif
