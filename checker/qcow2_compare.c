/* §3.6: computed (IMRT) vs stored refcounts, one refblock read per block. */
#include <errno.h>

#include "checker/qcow2_check.h"
#include "format/qcow2_refcount.h"

void qc2_pass_compare(struct qc2 *s)
{
    s->highest_cluster = 0;
    for (uint64_t i = 0; i < s->imrt.n; i++) {
        uint64_t disk;
        bool was_signaled = s->signaled_corruption;
        int rc = qc2_ondisk_refcount(s, i, &disk);
        if (rc < 0) {
            struct finding f = finding_make(FK_REFCOUNT_READ_ERROR);
            f.err = rc;
            f.cluster = i;
            uint64_t ti = i >> s->h.refcount_block_bits;
            f.rt_index = ti;
            f.offset = s->rt[ti] & QCOW2_REFT_OFFSET_MASK;
            if (!was_signaled && rc == -EIO) {
                s->signaled_corruption = true;
                f.flags |= FF_SIGNAL;
            }
            qc2_report(s, &f);
            continue;
        }
        uint64_t ref = imrt_get(&s->imrt, i);
        if (disk > 0 || ref > 0)
            s->highest_cluster = (int64_t)i;
        if (disk == ref)
            continue;
        struct finding f = finding_make(disk < ref ? (disk == 0 ? FK_REFCOUNT_ZERO
                                                                : FK_REFCOUNT_LOW)
                                                   : FK_REFCOUNT_LEAK);
        if (disk == 0)
            s->rebuild = true;
        f.cluster = i;
        f.offset = i << s->h.cluster_bits;
        f.found = disk;
        f.expected = ref;
        f.rt_index = i >> s->h.refcount_block_bits;
        qc2_report(s, &f);
    }
}
