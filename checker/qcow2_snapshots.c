/* §3.1: the snapshot table pass (qcow2_check_read_snapshot_table), read-only part.
 * Entries are read one at a time (qcow2_snapshot_read: at most 40 + 1024 + 2*65535 bytes),
 * so memory follows the number of entries, not the header's table size. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "format/be.h"
#include "util/xalloc.h"

static void abort_finding(struct qc2 *s, enum finding_kind k, int err, int idx,
                          uint64_t overhang)
{
    struct finding f = finding_make(k);
    f.err = err;
    f.snapshot = idx;
    f.offset = s->h.snapshots_offset;
    f.found = s->h.nb_snapshots;
    if (overhang != FIND_NONE)
        f.expected = overhang;
    qc2_report(s, &f);
}

int qc2_pass_snapshots(struct qc2 *s, struct check_result *r)
{
    (void)r;
    uint64_t nb = s->h.nb_snapshots, off = s->h.snapshots_offset;
    s->sn_offset = off;
    /* qemu_validate_table(entry 40, max 40*65536) */
    if (nb > QCOW2_MAX_SNAPSHOTS) {
        abort_finding(s, FK_SNAP_TABLE_TOO_LARGE, -EFBIG, -1, nb - QCOW2_MAX_SNAPSHOTS);
        return -EFBIG;
    }
    if ((uint64_t)INT64_MAX - nb * QCOW2_SN_HDR_SIZE < off || (off & (s->cs - 1))) {
        abort_finding(s, FK_SNAP_TABLE_OFFSET_INVALID, -EINVAL, -1, FIND_NONE);
        return -EINVAL;
    }
    struct qcow2_sn_error why;
    int rc = qcow2_image_read_snapshots(&s->m, &why);
    if (rc < 0) {
        if (why.kind == QCOW2_SN_TOO_BIG || why.kind == QCOW2_SN_OVERFLOW)
            abort_finding(s, FK_SNAP_TABLE_TOO_BIG, rc, (int)why.index, nb - why.index);
        else if (why.kind == QCOW2_SN_EXTRA_TOO_LARGE)
            abort_finding(s, FK_SNAP_EXTRA_TOO_LARGE, rc, (int)why.index, FIND_NONE);
        else
            abort_finding(s, FK_SNAP_TABLE_POINTER_READ, rc, -1, FIND_NONE);
        return rc;
    }
    qc2_report_incomplete_snapshots(s, 0);
    return 0;
}

void qc2_report_incomplete_snapshots(struct qc2 *s, unsigned flags)
{
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        if (!s->sn[i].incomplete)
            continue;
        struct finding f = finding_make(FK_SNAP_INCOMPLETE);
        f.snapshot = (int)i;
        f.found = s->sn[i].extra_data_size;
        f.expected = QCOW2_SN_EXTRA_V3_MIN;
        f.flags |= flags;
        qc2_report(s, &f);
    }
}
