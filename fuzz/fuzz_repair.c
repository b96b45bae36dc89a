/* The repair engine on an in-memory image: plan (first fixing pass on the overlay) with
 * -r all (or -r leaks, by the input's last byte), apply the plan to the memory image,
 * then the double check. Asserts: the repaired image still opens, and whatever the
 * double check still reports is only what qemu's rules never repair (FIX_NEVER kinds),
 * checker errors, or the first pass failed. Any other leftover means the repair did not
 * do what its plan said, which is a bug. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker/check.h"
#include "checker/qcow2_check.h"
#include "fuzz/fuzz_common.h"
#include "io/qio.h"
#include "repair/apply.h"
#include "repair/plan.h"
#include "repair/repair.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_enter_scratch_dir();
    return 0;
}

static void run_init(struct check_run *run)
{
    memset(run, 0, sizeof(*run));
    findings_init(&run->findings, 256);
}

static bool only_unfixable(const struct check_run *run)
{
    for (int k = 0; k < FK__COUNT; k++)
        if (run->findings.per_kind[k] && finding_kind_severity(k) != SEV_CHECK_ERROR &&
            finding_kind_fix(k) != FIX_NEVER)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20) || size < 1)
        return 0;
    unsigned fix = (data[size - 1] & 1) ? CHECK_FIX_LEAKS : CHECK_FIX_LEAKS | CHECK_FIX_ERRORS;
    qio_t *q = qio_open_mem(data, size, true, size + (64u << 20));
    struct check_opts o;
    memset(&o, 0, sizeof(o));
    o.quiet_diag = true;
    struct plan plan;
    plan_init(&plan, q);
    struct repair_ctx ctx = { &plan };
    qio_t *ov = plan_overlay_qio(&plan);
    struct check_run first, after;
    run_init(&first);
    int rc = repair_first_pass(ov, "fuzz.qcow2", &o, fix, &ctx, &first);
    qio_close(ov);
    if (first.opened && rc == 0 && !first.res.check_errors) {
        bool first_unfixable = only_unfixable(&first);
        rc = repair_apply(q, &plan, NULL, 1);
        FUZZ_ASSERT(rc == 0);
        run_init(&after);
        rc = qcow2_check_run(q, "fuzz.qcow2", &o, &after);
        FUZZ_ASSERT(after.opened);
        if (rc == 0 && !after.res.check_errors && (fix & CHECK_FIX_ERRORS) && !first_unfixable) {
            if (!only_unfixable(&after)) {
                for (int k = 0; k < FK__COUNT; k++)
                    if (after.findings.per_kind[k])
                        fprintf(stderr, "after repair: %s x%llu\n", finding_kind_name(k),
                                (unsigned long long)after.findings.per_kind[k]);
                FUZZ_ASSERT(!"repair left fixable findings");
            }
        }
        check_run_free(&after);
    }
    check_run_free(&first);
    plan_free(&plan);
    qio_close(q);
    return 0;
}
