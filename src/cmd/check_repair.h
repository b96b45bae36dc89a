/* `qimg check -r leaks|all` of a qcow2 image (check_repair.c): the command side of a
 * repair, over the engine in repair/ (repair/repair.h). */
#ifndef QIMG_CMD_CHECK_REPAIR_H
#define QIMG_CMD_CHECK_REPAIR_H

#include <stdbool.h>

#include "checker/check.h"

struct repair_opts {
    unsigned fix;              /* CHECK_FIX_* */
    bool dry_run;
    const char *journal;       /* --journal FILE, or NULL */
    bool json, quiet;
    struct check_opts check;   /* -U is refused before we get here */
};

/* Opens and locks the image, creates the journal, plans the repair (repair_first_pass),
 * then prints the plan (dry run) or applies it with the crash guard and runs the double
 * check; prints qemu-img's lines and report and returns the exit code. */
int check_repair_qcow2(const char *filename, const struct repair_opts *o);

#endif
