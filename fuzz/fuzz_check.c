/* The whole qcow2 check (every pass, --deep included) on an in-memory image, then both
 * renderings (human lines of every finding, JSON). Asserts the counters are sane. */
#include <stdlib.h>
#include <string.h>

#include "checker/check.h"
#include "checker/qcow2_check.h"
#include "checker/render.h"
#include "fuzz/fuzz_common.h"
#include "io/qio.h"
#include "util/json.h"

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_enter_scratch_dir();
    devnull = fopen("/dev/null", "w");
    return 0;
}

static void sink(void *opaque, const struct finding *f)
{
    const struct check_run *run = opaque;
    free(finding_text(f, &run->names));
}

static void run_one(const uint8_t *data, size_t size, bool deep)
{
    qio_t *q = qio_open_mem(data, size, false, size);
    struct check_opts o;
    memset(&o, 0, sizeof(o));
    o.deep = deep;
    o.quiet_diag = true;
    o.share = true;
    struct check_run run;
    memset(&run, 0, sizeof(run));
    findings_init(&run.findings, 64);
    run.findings.sink = sink;
    run.findings.sink_opaque = &run;
    int rc = qcow2_check_run(q, "fuzz.qcow2", &o, &run);
    qio_close(q);
    if (run.opened) {
        const struct check_result *r = &run.res;
        FUZZ_ASSERT(r->corruptions >= 0 && r->leaks >= 0 && r->check_errors >= 0);
        FUZZ_ASSERT(run.findings.n <= 64 && run.findings.n <= run.findings.total);
        if (rc == 0 && devnull) {
            check_print_human(devnull, r);
            json_t *j = check_to_json("fuzz.qcow2", run.format, r, &run.findings, &run.names);
            json_print(devnull, j);
            json_free(j);
        }
    }
    check_run_free(&run);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Keep inputs small enough that one run stays fast: the file size bounds the IMRT. */
    if (size > (4u << 20))
        return 0;
    run_one(data, size, true);
    return 0;
}
