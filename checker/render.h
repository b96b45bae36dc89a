/* Renderings of a check run: qemu-img's diagnostic lines, its report, and JSON. */
#ifndef QIMG_CHECKER_RENDER_H
#define QIMG_CHECKER_RENDER_H

#include <stdio.h>

#include "checker/check.h"
#include "checker/findings.h"
#include "util/json.h"

/* The exact text qemu-img 7.2 prints on stderr for this finding (may be several lines,
 * each ending in '\n'; empty for conditions qemu detects silently). */
void finding_format(const struct finding *f, const struct finding_names *nm, char *buf,
                    size_t len);
/* The same text, whole, in a string of its own (malloc'd): snapshot IDs and names run to
 * 64 KiB each and qemu prints them whole. */
char *finding_text(const struct finding *f, const struct finding_names *nm);

/* qemu-img's human report on stdout (after the diagnostics). */
void check_print_human(FILE *out, const struct check_result *r);

/* qemu-img's ImageCheck object plus our "findings" array (pass NULL to leave it out). */
json_t *check_to_json(const char *filename, const char *format, const struct check_result *r,
                      const struct findings *fl, const struct finding_names *nm);

/* One finding as a JSON object. */
json_t *finding_to_json(const struct finding *f, const struct finding_names *nm);

/* Clears run and sets up its findings (cap from o, 0 = 100000); with print, each finding
 * is also written to stderr as qemu-img prints it, as soon as it is found (qemu's check
 * prints as it goes; so do `qimg check` and the repair of a dirty image at open). */
void check_run_start(struct check_run *run, const struct check_opts *o, bool print);

#endif
