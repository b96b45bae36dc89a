/* The model's snapshot table reader (see image.h: qcow2_image_read_snapshots), in qemu's
 * open mode and in its repair mode. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "qcow2/image.h"
#include "util/xalloc.h"

static int stop(struct qcow2_sn_error *why, enum qcow2_sn_stop kind, int err, uint64_t i)
{
    why->kind = kind;
    why->err = err;
    why->index = (uint32_t)i;
    return err;
}

int qcow2_image_read_snapshots_opt(struct qcow2_image *m, uint32_t nb, unsigned flags,
                                   struct qcow2_sn_error *why)
{
    uint64_t off = m->h.snapshots_offset;
    m->sn_offset = off;
    m->sn_size = 0;
    why->extra = 0;
    fmt_error_clear(&why->e);
    if (!nb)
        return 0;
    m->sn = xcalloc((size_t)nb, sizeof(*m->sn));
    struct qcow2_sn_source src = { qio_pread_cb, m->q, m->h.version,
                                   m->h.size & ~(uint64_t)511,
                                   (flags & QCOW2_SN_READ_REPAIR) ? QCOW2_SN_TRUNCATE_EXTRA : 0,
                                   0 };
    uint64_t pos = off;   /* file offset of the running end of the table */
    uint64_t kept = 0;    /* the table as qemu measures it: entries as they are kept */
    for (uint32_t i = 0; i < nb; i++) {
        uint64_t at;
        if (!u64_align8(pos, &at))
            return stop(why, QCOW2_SN_OVERFLOW, -EFBIG, i);
        kept = (kept + 7) & ~7ull;   /* at most 64 MiB + one entry: no overflow */
        struct qcow2_sn_extent x;
        int rc = qcow2_snapshot_read(&src, at, i, &m->sn[i], &x, &why->e);
        if (rc < 0) {
            qcow2_snapshot_free(&m->sn[i]);
            memset(&m->sn[i], 0, sizeof(m->sn[i]));
            if (src.read_err)
                return stop(why, QCOW2_SN_READ_ERROR, rc, i);
            return stop(why, rc == -EFBIG ? QCOW2_SN_EXTRA_TOO_LARGE : QCOW2_SN_BAD_ENTRY, rc,
                        i);
        }
        kept += x.kept_len;
        if (qcow2_snapshot_table_too_big(kept) || at + x.len - off > INT_MAX) {
            /* entry i and those after it are not kept: the entries before are the table */
            why->extra = x.extra;
            qcow2_snapshot_free(&m->sn[i]);
            memset(&m->sn[i], 0, sizeof(m->sn[i]));
            m->sn_size = pos - off;
            return stop(why, QCOW2_SN_TOO_BIG, -EFBIG, i);
        }
        m->nb_sn = i + 1;
        pos = at + x.len;
    }
    m->sn_size = pos - off;
    return 0;
}

int qcow2_image_read_snapshots(struct qcow2_image *m, struct qcow2_sn_error *why)
{
    return qcow2_image_read_snapshots_opt(m, m->h.nb_snapshots, 0, why);
}
