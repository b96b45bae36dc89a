/* A check run as `qimg check` drives it, with or without -r (src/cmd/check.c,
 * src/cmd/check_repair.c): started with qemu-img's stderr lines, ended with qemu-img's report
 * and exit code. One copy, so a plain check and a repair cannot disagree on either. */
#ifndef QIMG_CMD_CHECK_RUN_H
#define QIMG_CMD_CHECK_RUN_H

#include <stdbool.h>

#include "checker/check.h"
#include "checker/render.h"
#include "util/json.h"

/* Adds to the JSON report before it is printed (the dry run adds its plan). */
typedef void (*check_json_amend_fn)(json_t *report, const void *ctx);

/* qemu-img's report of a finished run (rc from the check, < 0: it did not complete):
 * human or JSON on stdout unless quiet, "Check failed" on stderr, and the exit code
 * (1 failed, 2 corruptions, 3 leaks, 0 clean). amend may be NULL. Does not free run. */
int check_run_report(const struct check_run *run, int rc, const char *filename, bool json,
                     bool quiet, check_json_amend_fn amend, const void *ctx);

/* The name the JSON report gives as "filename": qemu-img prints the FILENAME operand as
 * given (a json:{...} text or an --image-opts list), while the checker works on the file it
 * names. NULL (the default): the filename passed to check_run_report. */
void check_run_set_report_name(const char *name);

#endif
