#include "cmd/check_run.h"

#include <stdio.h>
#include <string.h>

#include "checker/render.h"
#include "util/err.h"

static const char *report_name;

void check_run_set_report_name(const char *name)
{
    report_name = name;
}

int check_run_report(const struct check_run *run, int rc, const char *filename, bool json,
                     bool quiet, check_json_amend_fn amend, const void *ctx)
{
    if (report_name)
        filename = report_name;
    if (rc == 0 && !quiet) {
        if (json) {
            json_t *j = check_to_json(filename, run->format, &run->res, &run->findings,
                                      &run->names);
            if (amend)
                amend(j, ctx);
            json_print(stdout, j);
            fputc('\n', stdout);
            json_free(j);
        } else {
            check_print_human(stdout, &run->res);
        }
    }
    fflush(stdout);
    if (rc < 0 || run->res.check_errors) {
        if (rc < 0)
            err_report("Check failed: %s", strerror(-rc));
        else
            err_report("Check failed");
        return 1;
    }
    return run->res.corruptions ? 2 : run->res.leaks ? 3 : 0;
}
