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
    s->sn_size = 0;
    /* qemu_validate_table(entry 40, max 40*65536) */
    if (nb > QCOW2_MAX_SNAPSHOTS) {
        abort_finding(s, FK_SNAP_TABLE_TOO_LARGE, -EFBIG, -1, nb - QCOW2_MAX_SNAPSHOTS);
        return -EFBIG;
    }
    if ((uint64_t)INT64_MAX - nb * QCOW2_SN_HDR_SIZE < off || (off & (s->cs - 1))) {
        abort_finding(s, FK_SNAP_TABLE_OFFSET_INVALID, -EINVAL, -1, FIND_NONE);
        return -EINVAL;
    }
    if (!nb)
        return 0;
    s->sn = xcalloc((size_t)nb, sizeof(*s->sn));
    struct qcow2_sn_source src = { qc2_pread_cb, s, s->h.version, s->h.size & ~(uint64_t)511,
                                   0, 0 };
    uint64_t pos = off;   /* file offset of the running end of the table */
    int rc = 0;
    for (uint64_t i = 0; i < nb; i++) {
        uint64_t at;
        if (!u64_align8(pos, &at)) {
            rc = -EFBIG;
            abort_finding(s, FK_SNAP_TABLE_TOO_BIG, rc, (int)i, nb - i);
            goto out;
        }
        struct fmt_error e;
        struct qcow2_sn_extent x;
        rc = qcow2_snapshot_read(&src, at, (unsigned)i, &s->sn[i], &x, &e);
        if (rc == -EFBIG && !src.read_err) {
            abort_finding(s, FK_SNAP_EXTRA_TOO_LARGE, rc, (int)i, FIND_NONE);
            goto out;
        }
        if (rc < 0)
            goto read_fail;
        s->nb_sn = (uint32_t)(i + 1);
        pos = at + x.len;
        if (qcow2_snapshot_table_too_big(pos - off)) {
            rc = -EFBIG;
            abort_finding(s, FK_SNAP_TABLE_TOO_BIG, rc, (int)i, nb - i);
            goto out;
        }
    }
    s->sn_size = pos - off;
    if (s->h.version >= 3) {
        for (uint32_t i = 0; i < s->nb_sn; i++) {
            if (s->sn[i].extra_data_size >= QCOW2_SN_EXTRA_V3_MIN)
                continue;
            struct finding f = finding_make(FK_SNAP_INCOMPLETE);
            f.snapshot = (int)i;
            f.found = s->sn[i].extra_data_size;
            f.expected = QCOW2_SN_EXTRA_V3_MIN;
            qc2_report(s, &f);
        }
    }
    goto out;
read_fail:
    abort_finding(s, FK_SNAP_TABLE_POINTER_READ, rc, -1, FIND_NONE);
out:
    return rc;
}
