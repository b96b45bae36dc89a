/* `qimg check [-r leaks|all [--dry-run] [--journal FILE]]` of the formats checked through
 * the block layer (QED, VDI). */
#ifndef QIMG_CMD_CHECK_BLK_H
#define QIMG_CMD_CHECK_BLK_H

#include <stdbool.h>

#include "checker/check.h"

/* Opens filename as fmt and checks it as qemu-img does; returns the exit code. dry_run and
 * journal: QED only (the caller refuses them for VDI). */
int check_blk(const char *filename, const char *fmt, int fix, bool json, bool quiet,
              const struct check_opts *o, bool dry_run, const char *journal);

#endif
