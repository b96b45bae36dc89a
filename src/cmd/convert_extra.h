/* qimg convert's side jobs: reading from an internal snapshot (-l) and copying persistent
 * bitmaps (--bitmaps), after qemu's bdrv_snapshot_load_tmp and img_convert's
 * convert_check_bitmaps / convert_copy_bitmaps. */
#ifndef QIMG_CMD_CONVERT_EXTRA_H
#define QIMG_CMD_CONVERT_EXTRA_H

#include <stdbool.h>

#include "block/image.h"

/* -l snapshot.id=ID,snapshot.name=NAME: 0, or -1 with *why (malloc'd) = qemu's message
 * for a bad parameter. */
int convert_snapshot_opts_check(const char *optstr, char **why);

/* Makes img read the internal snapshot named by sn_opts (snapshot.id/name) or by
 * id_or_name. 0, or -1 with *why = the text after "Failed to load snapshot: ". */
int convert_snapshot_load(image_t *img, const char *sn_opts, const char *id_or_name,
                          char **why);

/* convert_check_bitmaps: 0, or -1 after qemu's message. */
int convert_check_bitmaps(image_t *src, bool skip_broken);

/* convert_copy_bitmaps: 0, or -1 after qemu's message. */
int convert_copy_bitmaps(image_t *src, image_t *dst, bool skip_broken);

#endif
