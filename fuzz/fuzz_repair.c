/* The repair engine on an in-memory image: plan (first fixing pass on the overlay) with
 * -r all (or -r leaks, by the input's last byte), apply the plan to the memory image,
 * then the double check. Asserts:
 *   - a consistent image (no findings at all) gets an empty plan: repair writes nothing;
 *   - applying the plan succeeds and the repaired image still opens;
 *   - under -r all, the double check reports no fixable kind of problem that the first
 *     pass did not report too: whatever is left is either what qemu's rules never repair
 *     (FIX_NEVER), or a problem the engine already named and could not fix (qemu's
 *     "rebuilt refcount structure is still broken": a truncated image whose metadata lay
 *     past EOF comes back inside the file once the rebuild grows it). A new kind means the
 *     repair made things worse, which is a bug;
 *   - no planned write outside the header cluster touches a cluster that an L2 entry of
 *     the active image or of a snapshot the repaired table still lists maps as guest data,
 *     judged on the input by the small independent walker below (the overlap guard,
 *     repair/overlap.c, must have refused or avoided every such write). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker/check.h"
#include "checker/qcow2_check.h"
#include "fuzz/fuzz_common.h"
#include "io/qio.h"
#include "journal/plan.h"
#include "repair/apply.h"
#include "repair/repair.h"
#include "util/xalloc.h"

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

/* Fixable kinds in after that first did not have. */
static int new_fixable_kinds(const struct check_run *first, const struct check_run *after)
{
    int n = 0;
    for (int k = 0; k < FK__COUNT; k++)
        if (after->findings.per_kind[k] && !first->findings.per_kind[k] &&
            finding_kind_severity(k) != SEV_CHECK_ERROR && finding_kind_fix(k) != FIX_NEVER) {
            fprintf(stderr, "after repair, new: %s x%llu\n", finding_kind_name(k),
                    (unsigned long long)after->findings.per_kind[k]);
            n++;
        }
    return n;
}

/* --- the guest-data oracle: raw bytes of the input, no decoder shared with the repair --- */

struct oracle {
    const uint8_t *d;
    size_t n;
    unsigned cb;
    uint64_t cs, esz, l2n;
    uint8_t *data, *seen;      /* bit per cluster of the input */
    uint64_t clusters;
};

static void o_set(uint8_t *m, uint64_t k)
{
    m[k / 8] |= (uint8_t)(1u << (k % 8));
}

static int o_get(const uint8_t *m, uint64_t k)
{
    return (m[k / 8] >> (k % 8)) & 1;
}

/* Mark what the L2 tables reached from the L1 table at l1 (n entries) map. */
static void o_walk(struct oracle *o, uint64_t l1, uint64_t n)
{
    if (l1 & (o->cs - 1))
        return;
    for (uint64_t i = 0; i < n && l1 + i * 8 + 8 <= o->n; i++) {
        uint64_t l2 = fz_be64(o->d, o->n, l1 + i * 8) & 0x00fffffffffffe00ull;
        if (!l2 || (l2 & (o->cs - 1)) || l2 >= o->n || o_get(o->seen, l2 >> o->cb))
            continue;
        o_set(o->seen, l2 >> o->cb);
        for (uint64_t j = 0; j < o->l2n; j++) {
            uint64_t e = fz_be64(o->d, o->n, l2 + j * o->esz);
            if (e & (1ull << 62)) {   /* compressed: its host byte range */
                unsigned x = 62 - (o->cb - 8);
                uint64_t host = e & ((1ull << x) - 1);
                uint64_t nsec = ((e >> x) & ((1ull << (o->cb - 8)) - 1)) + 1;
                uint64_t end = (host & ~511ull) + nsec * 512;
                for (uint64_t k = host >> o->cb; k <= (end - 1) >> o->cb && k < o->clusters; k++)
                    o_set(o->data, k);
                continue;
            }
            uint64_t off = e & 0x00fffffffffffe00ull;
            if (off && !(off & (o->cs - 1)) && (off >> o->cb) < o->clusters)
                o_set(o->data, off >> o->cb);
        }
    }
}

/* Every planned write outside cluster 0 misses the clusters mapped as guest data by the
 * active L1 of the input and by the L1 tables the repaired snapshot table q lists. */
static void assert_no_guest_data_written(const uint8_t *d, size_t n, qio_t *q,
                                         const struct plan *p)
{
    unsigned cb = fz_be32(d, n, 20);
    uint32_t version = fz_be32(d, n, 4);
    if (cb < 9 || cb > 21)
        return;
    uint64_t incompat = version >= 3 ? fz_be64(d, n, 72) : 0;
    if (incompat & 4)
        return;   /* external data file: no guest data in this file */
    struct oracle o = { d, n, cb, 1ull << cb, (incompat & 16) ? 16 : 8, 0, NULL, NULL, 0 };
    o.l2n = o.cs / o.esz;
    o.clusters = (n + o.cs - 1) >> cb;
    o.data = xcalloc(1, (size_t)(o.clusters / 8 + 1));
    o.seen = xcalloc(1, (size_t)(o.clusters / 8 + 1));
    uint64_t vsize = fz_be64(d, n, 24), span = o.cs * o.l2n;
    o_walk(&o, fz_be64(d, n, 40), fz_be32(d, n, 36));
    memset(o.seen, 0, (size_t)(o.clusters / 8 + 1));
    uint8_t h[72], e[56];
    if (qio_pread(q, h, sizeof(h), 0) == 0) {
        uint64_t nb = be32_get(h + 60), off = be64_get(h + 64);
        for (uint64_t i = 0; i < nb && i < 1000 && off < (1ull << 56); i++) {
            off = (off + 7) & ~7ull;
            memset(e, 0, sizeof(e));
            if (qio_pread(q, e, sizeof(e), off) < 0)
                break;
            uint64_t l1 = be64_get(e), l1n = be32_get(e + 8), extra = be32_get(e + 36);
            if (l1n > (1u << 22))   /* too large: the check skips it; what its disk needs */
            {
                uint64_t ds = extra >= 16 ? be64_get(e + 48) : vsize;
                l1n = ds / span + (ds % span != 0);
            }
            o_walk(&o, l1, l1n);
            off += 40 + extra + be16_get(e + 12) + be16_get(e + 14);
        }
    }
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *w = &p->v[i];
        if (w->op != PLAN_WRITE || !w->len || w->offset + w->len <= o.cs)
            continue;
        uint64_t a = w->offset < o.cs ? o.cs : w->offset;
        for (uint64_t k = a >> cb; k <= (w->offset + w->len - 1) >> cb && k < o.clusters; k++)
            if (o_get(o.data, k)) {
                fprintf(stderr, "repair writes guest data cluster %llu: %s\n",
                        (unsigned long long)k, w->reason);
                FUZZ_ASSERT(!"a repair write lands in a guest data cluster");
            }
    }
    free(o.data);
    free(o.seen);
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
    struct repair_ctx ctx = { .plan = &plan };
    qio_t *ov = plan_overlay_qio(&plan);
    struct check_run first, after;
    run_init(&first);
    int rc = repair_first_pass(ov, "fuzz.qcow2", &o, fix, &ctx, &first);
    qio_close(ov);
    if (first.opened && rc == 0 && !first.res.check_errors) {
        /* consistent: no finding and nothing fixed (the snapshot pass's discards are
         * counted as fixed corruptions without a finding of their own) */
        if (first.findings.total == 0 && !first.res.corruptions_fixed &&
            !first.res.leaks_fixed && plan.n != 0) {
            fprintf(stderr, "clean image, but the plan has %zu entries; first: c=%lld l=%lld\n",
                    (size_t)plan.n, (long long)first.res.corruptions, (long long)first.res.leaks);
            FUZZ_ASSERT(!"repair of a consistent image writes");
        }
        const struct plan_entry *failed;
        rc = repair_apply(q, &plan, NULL, &failed);
        /* -EFBIG: the plan grows the file past this harness's memory cap (qemu's fix for a
         * refblock outside the image grows the file up to it, possibly by gigabytes) */
        FUZZ_ASSERT(rc == 0 || rc == -EFBIG);
        if (rc == -EFBIG)
            goto out;
        assert_no_guest_data_written(data, size, q, &plan);
        run_init(&after);
        rc = qcow2_check_run(q, "fuzz.qcow2", &o, &after);
        FUZZ_ASSERT(after.opened);
        /* FUZZ_REPAIR_STRICT=0 only reports this one: a knob for while a known repair
         * bug is open in corpus/open/ (none at the moment; make fuzz-smoke is strict). */
        if (rc == 0 && !after.res.check_errors && (fix & CHECK_FIX_ERRORS) &&
            new_fixable_kinds(&first, &after) != 0) {
            const char *strict = getenv("FUZZ_REPAIR_STRICT");
            FUZZ_ASSERT(strict && strict[0] == '0');
        }
        check_run_free(&after);
    }
out:
    check_run_free(&first);
    overlap_guard_free(&ctx.guard);
    plan_free(&plan);
    qio_close(q);
    return 0;
}
