#include "cmd/check_run.h"

#include <stdio.h>
#include <string.h>

#include "checker/render.h"
#include "util/err.h"

static void sink_stderr(void *opaque, const struct finding *f)
{
    const struct check_run *run = opaque;
    char buf[1024];
    finding_format(f, &run->names, buf, sizeof(buf));
    if (buf[0])
        fputs(buf, stderr);
}

void check_run_start(struct check_run *run, const struct check_opts *o, bool print)
{
    memset(run, 0, sizeof(*run));
    findings_init(&run->findings, o->findings_cap ? o->findings_cap : 100000);
    if (print) {
        run->findings.sink = sink_stderr;
        run->findings.sink_opaque = run;
    }
}

int check_run_report(const struct check_run *run, int rc, const char *filename, bool json,
                     bool quiet, check_json_amend_fn amend, const void *ctx)
{
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
