/* qcow2 checker: state shared by the passes (digest §3). Each pass is a function in
 * its own file, in the order qemu runs them:
 *   qcow2_open.c          open in CHECK mode (qemu's validation and messages)
 *   qcow2_snapshots.c     §3.1 snapshot table pass
 *   qcow2_refs.c          §3.3 reference counting into the IMRT (inc_refcounts)
 *   qcow2_l1l2.c          §3.4 L1/L2 walk of the active image and each snapshot
 *   qcow2_bitmaps.c       §3.3 step 8 bitmap directory (the model's) and tables
 *   qcow2_refblocks.c     §3.5 refcount table / refblocks
 *   qcow2_compare.c       §3.6 computed vs stored refcounts
 *   qcow2_copied.c        §3.9 OFLAG_COPIED
 *   qcow2_deep.c          qimg-only deep checks (--deep)
 *   qcow2_check.c         the driver (§3 top level, §3.7) */
#ifndef QIMG_CHECKER_QCOW2_CHECK_H
#define QIMG_CHECKER_QCOW2_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "checker/check.h"
#include "checker/findings.h"
#include "checker/imrt.h"
#include "format/be.h"
#include "format/qcow2_bitmap.h"
#include "format/qcow2_ext.h"
#include "format/qcow2_header.h"
#include "format/qcow2_l2.h"
#include "format/qcow2_refcount.h"
#include "format/qcow2_snapshot.h"
#include "io/qio.h"
#include "qcow2/image.h"
#include "qcow2/refcount.h"
#include "qcow2/table.h"

struct qc2;
struct finding;

/* Repair actions a fixing run (fix != 0) asks for, implemented by repair/ (which records
 * them in its plan). The passes keep qemu's bookkeeping: messages, counters, and what to
 * skip after a successful fix. Each returns 0 or -errno (and prints qemu's message for
 * its failure). */
struct qc2_fixer {
    /* §3.10: entry f->entry_offset becomes a zero entry (bmp: its extended-L2 bitmap) */
    int (*zero_l2_entry)(struct qc2 *s, const struct finding *f, uint64_t bmp);
    /* §3.5: grow the file to new_size (a refblock past EOF); updates s->file_size */
    int (*grow_file)(struct qc2 *s, uint64_t new_size);
    /* §3.6: set the stored refcount of cluster k to value */
    int (*set_refcount)(struct qc2 *s, uint64_t k, uint64_t value);
    /* §3.9: active L1 entry i becomes entry (also updates s->l1) */
    int (*write_l1_entry)(struct qc2 *s, uint64_t i, uint64_t entry);
    /* §3.9: entries [first, first+n) of the L2 table at l2_off, from table */
    int (*write_l2_entries)(struct qc2 *s, uint64_t l2_off, const uint8_t *table,
                            uint64_t first, uint64_t n);
};

struct qc2 {
    /* the image model (qcow2/image.h), opened in CHECK mode: s->m, and its fields as s->h,
     * s->ext, s->l1, s->rt, s->rb ... */
    QCOW2_IMAGE_EMBED;
    const struct check_opts *opts;
    unsigned fix;                /* fix mode of the current pass run (0 for check) */
    const struct qc2_fixer *fixer;   /* set by the repair engine when fix != 0 */
    void *fixer_ctx;

    struct imrt imrt;
    struct findings *fl;
    struct check_result *res;

    bool signaled_corruption;

    /* read-only check (qcow2_check_run with fix 0, not deep: no refcount changes between
     * the L1/L2 walk and pass_copied): the walk judges OFLAG_COPIED too, and per active L1
     * index copied_suspect says whether pass_copied must read that L2 table again. NULL:
     * read every table (any fixing run, whose refcounts change in between). */
    bool copied_prescreen;
    uint8_t *copied_suspect;

    /* repair runs (fixer set): every reference found past EOF, however many findings the
     * list keeps (its cap must not hide one from the rebuild's allocator, repair/metamap) */
    struct qc2_ref { uint64_t offset, size; } *past_eof;
    size_t past_eof_n, past_eof_alloc;

    /* compare result needed by the driver */
    bool rebuild;
    int64_t highest_cluster;
};

/* A run's start: s opened on q (run->opened says whether it was), findings into run.
 * 0, or the open's -errno (s is then closed). */
int qc2_run_open(struct qc2 *s, qio_t *q, const char *filename, const struct check_opts *o,
                 struct check_run *run);

/* qcow2_open.c: 0, or prints "Could not open 'F': msg" and returns -errno. */
int qc2_open(struct qc2 *s, qio_t *q, const char *filename, const struct check_opts *o);
void qc2_close(struct qc2 *s);

/* qcow2_check_refcounts' start: statistics totals and the IMRT sized from the file. */
int qc2_refcount_setup(struct qc2 *s);
/* calculate_refcounts(): every reference into the IMRT (L1/L2, bitmaps, refblocks). */
int qc2_calculate_refcounts(struct qc2 *s);

/* Passes; each returns 0 or a negative errno that aborts the check. */
int qc2_pass_snapshots(struct qc2 *s, struct check_result *r);
/* One finding for each v3 snapshot entry lacking the 16 bytes of extra data (the entry's
 * `incomplete`), with flags (FF_REPAIRING under -r all, which rewrites the table). */
void qc2_report_incomplete_snapshots(struct qc2 *s, unsigned flags);
int qc2_inc_refs(struct qc2 *s, uint64_t offset, uint64_t size, int snapshot);
int qc2_pass_l1l2(struct qc2 *s);
int qc2_pass_bitmaps(struct qc2 *s);
int qc2_pass_refblocks(struct qc2 *s);
void qc2_pass_compare(struct qc2 *s);
int qc2_pass_copied(struct qc2 *s);
void qc2_pass_deep(struct qc2 *s);

/* On-disk refcount of cluster k (qemu's qcow2_get_refcount): 0 or -errno. */
int qc2_ondisk_refcount(struct qc2 *s, uint64_t k, uint64_t *out);
/* The cached refblock for reftable index ti (*blk NULL: all zero); 0 or -errno. The
 * mutable form is repair's: it patches the cached block to mirror its planned writes. */
int qc2_refblock_mut(struct qc2 *s, uint64_t ti, uint8_t **blk);
int qc2_refblock(struct qc2 *s, uint64_t ti, const uint8_t **blk);

/* On-disk refcount lookups in cluster order, with the last refblock remembered. Invalidate
 * (valid = false) after anything else may have used the refblock cache. */
struct rc_lookup {
    uint64_t ti;
    const uint8_t *blk;
    int rc;
    bool valid;
};

static inline int qc2_lookup_refcount(struct qc2 *s, struct rc_lookup *l, uint64_t k,
                                      uint64_t *out)
{
    uint64_t ti = k >> s->h.refcount_block_bits;
    if (!l->valid || l->ti != ti) {
        l->rc = qc2_refblock(s, ti, &l->blk);
        l->ti = ti;
        l->valid = true;
    }
    if (l->rc < 0)
        return l->rc;
    *out = l->blk ? qcow2_refblock_entry(l->blk, s->h.refcount_order,
                                            k & (s->h.refcount_block_entries - 1)) : 0;
    return 0;
}

/* §3.9's rule for one L2 entry of type NORMAL or ZERO_ALLOC: true if OFLAG_COPIED does not
 * say "refcount == 1" (an external data file counts as refcount 1), or the refcount cannot
 * be read (*unreadable: pass_copied skips such entries). */
static inline bool qc2_copied_wrong(struct qc2 *s, struct rc_lookup *l, uint64_t e,
                                    uint64_t *refcount, bool *unreadable)
{
    uint64_t rc2 = 1;
    *unreadable = false;
    if (!s->has_data_file &&
        qc2_lookup_refcount(s, l, (e & QCOW2_L2E_OFFSET_MASK) >> s->h.cluster_bits, &rc2) < 0) {
        *unreadable = true;
        return false;
    }
    *refcount = rc2;
    return (rc2 == 1) != !!(e & QCOW2_OFLAG_COPIED);
}

/* Fast path of qc2_inc_refs for one whole cluster k well inside the file. */
static inline int qc2_inc_cluster(struct qc2 *s, uint64_t k, int snapshot)
{
    if (k + 1 < s->imrt.n) {
        uint64_t v = imrt_get(&s->imrt, k);
        if (v != s->imrt.max) {
            imrt_set(&s->imrt, k, v + 1);
            return 0;
        }
    }
    return qc2_inc_refs(s, k << s->h.cluster_bits, s->cs, snapshot);
}

/* Add a finding and bump the counter its severity selects. */
void qc2_report(struct qc2 *s, struct finding *f);

/* A table at off through the one loader (qcow2/table.h; entries past EOF not loaded). */
int qc2_load_table(struct qc2 *s, uint64_t off, uint64_t entries, uint64_t **out,
                   uint64_t *loaded);

/* Read a whole range of the image file (zeros past EOF); 0 or -errno. */
static inline int qc2_read(struct qc2 *s, void *buf, uint64_t len, uint64_t off)
{
    return qio_pread_cb(s->q, buf, len, off);
}

/* The whole qcow2 check. */
/* Copies the snapshot ids and names into run->names so the report can name snapshots after
 * the check state is gone (used by the check and by repair's fixing pass). */
void qc2_keep_snapshot_names(struct qc2 *s, struct check_run *run);

int qcow2_check_run(qio_t *q, const char *filename, const struct check_opts *o,
                    struct check_run *run);

#endif
