#include "checker/qcow2_deep.h"

#include <stdlib.h>
#include <string.h>

#include "format/qcow2_codec.h"
#include "util/xalloc.h"

void qc2_deep_compressed(struct qc2 *s, uint64_t entry, const struct qcow2_compressed *c,
                         const struct finding *where)
{
    (void)entry;
    /* csize <= 2 clusters by the descriptor geometry */
    size_t in_len = (size_t)c->csize;
    if (c->host_offset >= s->file_size)
        goto bad;
    if (c->host_offset + in_len > s->file_size)
        in_len = (size_t)(s->file_size - c->host_offset);
    uint8_t *in = xmalloc(in_len ? in_len : 1);
    uint8_t *out = xmalloc((size_t)s->cs);
    /* stricter than qemu: a stream that would inflate past the cluster is corrupt too */
    bool good = qc2_read(s, in, in_len, c->host_offset) == 0 &&
                qcow2_inflate_strict_ok(qcow2_decompress(s->h.compression_type, out,
                                                         (size_t)s->cs, in, in_len));
    free(in);
    free(out);
    if (good)
        return;
bad:;
    struct finding f = *where;
    f.kind = FK_DEEP_COMPRESSED_BAD;
    f.severity = SEV_CORRUPTION;
    f.fix = FIX_NEVER;
    f.offset = c->host_offset;
    f.size = c->csize;
    qc2_report(s, &f);
}

void qc2_deep_l2_entry(struct qc2 *s, enum qcow2_cluster_type type, uint64_t entry,
                       const struct finding *where)
{
    struct finding f = *where;
    f.severity = SEV_CORRUPTION;
    f.fix = FIX_NEVER;
    if (s->h.version == 2 && (entry & QCOW2_OFLAG_ZERO) &&
        (type == QCOW2_CLUSTER_ZERO_PLAIN || type == QCOW2_CLUSTER_ZERO_ALLOC)) {
        f.kind = FK_DEEP_V2_ZERO_FLAG;
        qc2_report(s, &f);
    }
    if (!s->has_data_file || type == QCOW2_CLUSTER_ZERO_PLAIN || where->guest_offset == FIND_NONE)
        return;
    uint64_t off = entry & QCOW2_L2E_OFFSET_MASK;
    if (off != where->guest_offset) {
        f.kind = FK_DEEP_DATA_FILE_OFFSET;
        f.offset = off;
        qc2_report(s, &f);
    }
    uint64_t dsize;
    if (type != QCOW2_CLUSTER_NORMAL || qio_size(s->data, &dsize) < 0)
        return;
    /* the last cluster may be partial: only the guest-visible part must exist */
    uint64_t vsize = s->h.size, need = s->cs;
    if (where->guest_offset < vsize && vsize - where->guest_offset < need)
        need = vsize - where->guest_offset;
    if (off + need > dsize || off + need < off) {
        f.kind = FK_DEEP_DATA_FILE_SHORT;
        f.offset = off;
        f.found = dsize;
        f.expected = off + need;
        qc2_report(s, &f);
    }
}

void qc2_deep_snapshot(struct qc2 *s, uint32_t i)
{
    const struct qcow2_snapshot *sn = &s->sn[i];
    uint64_t need = qcow2_size_to_l1(&s->h, sn->disk_size);
    if (sn->l1_size >= need)
        return;
    struct finding f = finding_make(FK_DEEP_SNAP_L1_SIZE);
    f.snapshot = (int)i;
    f.offset = sn->l1_table_offset;
    f.found = sn->l1_size;
    f.expected = need;
    qc2_report(s, &f);
}

/* Image-wide deep checks, after the qemu passes. */
void qc2_pass_deep(struct qc2 *s)
{
    if (!s->ext.has_end) {
        struct finding f = finding_make(FK_DEEP_HEADER_EXT);
        f.offset = s->ext.end_offset;
        f.found = 1;
        qc2_report(s, &f);
    }
    if (s->has_data_file && (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW)) {
        uint64_t dsize;
        if (qio_size(s->data, &dsize) == 0 && dsize != s->h.size) {
            struct finding f = finding_make(FK_DEEP_DATA_FILE_RAW_SIZE);
            f.found = dsize;
            f.expected = s->h.size;
            qc2_report(s, &f);
        }
    }
}
