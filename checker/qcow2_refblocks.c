/* §3.5: every refcount table entry; refblocks are counted as references. */
#include "checker/qcow2_check.h"
#include "format/qcow2_refcount.h"

int qc2_pass_refblocks(struct qc2 *s)
{
    for (uint64_t i = 0; i < s->rt_loaded; i++) {
        uint64_t raw = s->rt[i];
        uint64_t off = raw & QCOW2_REFT_OFFSET_MASK;
        uint64_t k = off >> s->h.cluster_bits;
        struct finding f = finding_make(FK_REFTABLE_RESERVED);
        f.rt_index = i;
        f.entry = raw;
        f.entry_offset = s->h.refcount_table_offset + i * 8;
        if (raw & QCOW2_REFT_RESERVED_MASK) {
            qc2_report(s, &f);
            s->rebuild = true;
            continue;
        }
        if (off & (s->cs - 1)) {
            f.kind = FK_REFBLOCK_UNALIGNED;
            f.offset = off;
            qc2_report(s, &f);
            s->rebuild = true;
            continue;
        }
        f.offset = off;
        f.cluster = k;
        if (k >= s->imrt.n) {
            f.kind = FK_REFBLOCK_OUTSIDE;
            if (!(s->fix & CHECK_FIX_ERRORS) || !s->fixer) {
                qc2_report(s, &f);
                continue;
            }
            /* -r all: grow the file so the block exists (qemu truncates; §3.5) */
            f.flags |= FF_REPAIRING;
            qc2_report(s, &f);
            /* an end past INT64_MAX is qemu's -EINVAL (qcow2's check_refblocks) */
            uint64_t end = off > (uint64_t)INT64_MAX - s->cs ? UINT64_MAX : off + s->cs;
            if (s->fixer->grow_file(s, end) < 0) {
                s->rebuild = true;
                continue;
            }
            uint64_t n = s->file_size / s->cs + (s->file_size % s->cs != 0);
            if (k >= n || imrt_grow(&s->imrt, n - 1) < 0) {
                s->rebuild = true;
                continue;
            }
            s->res->corruptions--;
            s->res->corruptions_fixed++;
            int rc = qc2_inc_refs(s, off, s->cs, -1);
            if (rc < 0)
                return rc;
            continue;
        }
        if (!off)
            continue;
        int rc = qc2_inc_refs(s, off, s->cs, -1);
        if (rc < 0)
            return rc;
        uint64_t v = imrt_get(&s->imrt, k);
        if (v != 1) {
            f.kind = FK_REFBLOCK_SHARED;
            f.expected = v;
            qc2_report(s, &f);
            s->rebuild = true;
        }
    }
    return 0;
}
