/* The qcow2 check driver: qemu's qcow2_co_check_locked + qcow2_check_refcounts, read-only
 * (fix = 0). The repair engine runs the same passes with a fix mode and plans writes from
 * the findings. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "checker/qcow2_deep.h"
#include "util/xalloc.h"

void check_run_free(struct check_run *run)
{
    findings_free(&run->findings);
    for (uint32_t i = 0; i < run->names.nb; i++) {
        free(run->names.sn_id[i]);
        free(run->names.sn_name[i]);
    }
    free(run->names.sn_id);
    free(run->names.sn_name);
    memset(&run->names, 0, sizeof(run->names));
}

void qc2_keep_snapshot_names(struct qc2 *s, struct check_run *run)
{
    if (!s->nb_sn)
        return;
    run->names.sn_id = xcalloc(s->nb_sn, sizeof(char *));
    run->names.sn_name = xcalloc(s->nb_sn, sizeof(char *));
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        run->names.sn_id[i] = xstrdup(s->sn[i].id_str ? s->sn[i].id_str : "");
        run->names.sn_name[i] = xstrdup(s->sn[i].name ? s->sn[i].name : "");
    }
    run->names.nb = s->nb_sn;
}

int qc2_refcount_setup(struct qc2 *s)
{
    struct check_result *r = s->res;
    uint64_t nb_clusters = s->file_size / s->cs + (s->file_size % s->cs != 0);
    if (nb_clusters > INT_MAX) {
        r->check_errors++;
        return -EFBIG;
    }
    uint64_t vsize = s->h.size & ~(uint64_t)511;
    r->total_clusters = (int64_t)(vsize / s->cs + (vsize % s->cs != 0));
    r->has_stats = true;
    if (imrt_init(&s->imrt, nb_clusters, s->h.refcount_order) < 0) {
        r->check_errors++;
        return -ENOMEM;
    }
    return 0;
}

int qc2_calculate_refcounts(struct qc2 *s)
{
    int rc = qc2_pass_l1l2(s);
    if (rc == 0)
        rc = qc2_pass_bitmaps(s);
    if (rc == 0)
        rc = qc2_pass_refblocks(s);
    return rc;
}

/* §3.2-3.7 (qcow2_check_refcounts) without fixing. */
static int refcount_pass(struct qc2 *s)
{
    int rc = qc2_refcount_setup(s);
    if (rc == 0)
        rc = qc2_calculate_refcounts(s);
    if (rc < 0)
        return rc;
    qc2_pass_compare(s);
    rc = qc2_pass_copied(s);
    if (rc < 0)
        return rc;
    s->res->image_end_offset = (s->highest_cluster + 1) * (int64_t)s->cs;
    return 0;
}

int qc2_run_open(struct qc2 *s, qio_t *q, const char *filename, const struct check_opts *o,
                 struct check_run *run)
{
    memset(s, 0, sizeof(*s));
    run->format = "qcow2";
    int rc = qc2_open(s, q, filename, o);
    if (rc < 0) {
        run->ret = rc;
        run->opened = false;
        qc2_close(s);
        return rc;
    }
    run->opened = true;
    s->fl = &run->findings;
    return 0;
}

int qcow2_check_run(qio_t *q, const char *filename, const struct check_opts *o,
                    struct check_run *run)
{
    struct qc2 s;
    int rc = qc2_run_open(&s, q, filename, o, run);
    if (rc < 0)
        return rc;
    s.res = &run->res;
    s.fix = o->fix;
    s.copied_prescreen = o->fix == 0;

    rc = qc2_pass_snapshots(&s, &run->res);
    if (rc >= 0) {
        qc2_keep_snapshot_names(&s, run);
        rc = refcount_pass(&s);
        if (rc >= 0 && o->deep)
            qc2_pass_deep(&s);
    }
    run->ret = rc < 0 ? rc : 0;
    qc2_close(&s);
    return run->ret;
}
