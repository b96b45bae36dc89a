/* convert --salvage on qcow2 images qemu-img cannot open: the source comes from the salvage
 * reader (block/salvage.h) instead, and after the copy every lost range is reported and the
 * exit code says whether anything was lost. */
#ifndef QIMG_CMD_CONVERT_SALVAGE_H
#define QIMG_CMD_CONVERT_SALVAGE_H

#include <stdbool.h>

#include "block/image.h"

/* --salvage's optional argument (a qimg extension; qemu's --salvage takes none): NULL gives
 * false, "reader" true (every qcow2 source through the salvage reader, also those that
 * open); anything else is qemu's usage error for an unknown option (exits 1). */
bool convert_salvage_arg(const char *optarg);

/* image_open_or_report(name, fmt, flags), except that with salvage a qcow2 image that does
 * not open (qemu's message printed first) is opened by the salvage reader, and with reader
 * every qcow2 image is (a file that is not qcow2 opens as usual). NULL after reporting. */
image_t *convert_open_source(const char *name, const char *fmt, int flags, bool salvage,
                             bool reader);

/* After a successful copy, for each source: prints a salvaged source's lost and suspect
 * ranges and returns the exit code so far combined with its own (2 lost > 3 suspect > 0);
 * other sources leave ret as it is. */
int convert_salvage_finish(image_t *src, int ret);

#endif
