/* Reference counting into the IMRT (qemu's qcow2_inc_refcounts_imrt), the on-disk
 * refcount reader (qcow2_get_refcount) and the finding -> counter bookkeeping. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "format/qcow2_refcount.h"
#include "util/xalloc.h"

void qc2_report(struct qc2 *s, struct finding *f)
{
    bool deep = finding_kind_is_deep((enum finding_kind)f->kind);
    if (deep && !s->opts->deep)
        return;
    findings_add(s->fl, f);
    switch ((enum finding_severity)f->severity) {
    case SEV_CORRUPTION: s->res->corruptions++; break;
    case SEV_LEAK: s->res->leaks++; break;
    case SEV_CHECK_ERROR: s->res->check_errors++; break;
    }
}

int qc2_inc_refs(struct qc2 *s, uint64_t offset, uint64_t size, int snapshot)
{
    if (size == 0 || (int64_t)size < 0)
        return 0;
    /* qemu: offset + size - file_len >= cluster_size, in (wrapping) int64 arithmetic */
    int64_t past = (int64_t)(offset + size - s->file_size);
    if (past >= (int64_t)s->cs) {
        struct finding f = finding_make(FK_REF_PAST_EOF);
        f.offset = offset;
        f.size = size;
        f.snapshot = snapshot;
        qc2_report(s, &f);
        if (s->fixer) {
            if (s->past_eof_n == s->past_eof_alloc) {
                s->past_eof_alloc = s->past_eof_alloc ? s->past_eof_alloc * 2 : 64;
                s->past_eof = xreallocarray(s->past_eof, s->past_eof_alloc,
                                            sizeof(*s->past_eof));
            }
            s->past_eof[s->past_eof_n++] = (struct qc2_ref){ offset, size };
        }
        return 0;
    }
    uint64_t first = offset >> s->h.cluster_bits;
    uint64_t last = (offset + size - 1) >> s->h.cluster_bits;
    /* Offsets of 2^63 and more are negative to qemu and can pass the test above. A range
     * that wraps past 2^64 then counts nothing (qemu's loop runs from a high cluster to
     * a low one); any other needs a refcount array of 2^42 entries or more, whose
     * allocation fails: the check stops with "Cannot allocate memory". */
    if (first > last)
        return 0;
    if ((int64_t)offset < 0) {
        struct finding f = finding_make(FK_IMRT_NOMEM);
        f.err = -ENOMEM;
        qc2_report(s, &f);
        return -ENOMEM;
    }
    for (uint64_t k = first; k <= last; k++) {
        if (k >= s->imrt.n && imrt_grow(&s->imrt, k) < 0) {
            struct finding f = finding_make(FK_IMRT_NOMEM);
            f.err = -ENOMEM;
            qc2_report(s, &f);
            return -ENOMEM;
        }
        uint64_t v = imrt_get(&s->imrt, k);
        if (v == s->imrt.max) {
            struct finding f = finding_make(FK_REFCOUNT_OVERFLOW);
            f.offset = k << s->h.cluster_bits;
            f.cluster = k;
            f.snapshot = snapshot;
            qc2_report(s, &f);
            continue;
        }
        imrt_set(&s->imrt, k, v + 1);
    }
    return 0;
}

int qc2_refblock_mut(struct qc2 *s, uint64_t ti, uint8_t **blk)
{
    /* entries past EOF are not loaded and read as 0; qemu's refcount_table_size is
     * rt_entries. An unaligned refblock is -EIO (qemu signals corruption: printed once,
     * see FF_SIGNAL). */
    uint64_t n = s->rt_entries < s->rt_loaded ? s->rt_entries : s->rt_loaded;
    return qcow2_rb_cache_get(&s->rb, s->q, s->cs, s->rt, n, ti, blk);
}

int qc2_refblock(struct qc2 *s, uint64_t ti, const uint8_t **blk)
{
    uint8_t *b;
    int rc = qc2_refblock_mut(s, ti, &b);
    *blk = b;
    return rc;
}

int qc2_ondisk_refcount(struct qc2 *s, uint64_t k, uint64_t *out)
{
    return qcow2_image_refcount(&s->m, k, out);
}
