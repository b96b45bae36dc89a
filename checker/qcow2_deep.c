#include "checker/qcow2_deep.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "util/xalloc.h"

/* Inflate in (raw deflate, window 12, as qemu) into exactly cs bytes. 0 = good. */
static int check_zlib(const uint8_t *in, size_t in_len, uint8_t *out, size_t cs)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK)
        return -1;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)cs;
    int rc = inflate(&z, Z_FINISH);
    int bad = 1;
    if ((rc == Z_STREAM_END || rc == Z_BUF_ERROR || rc == Z_OK) && z.avail_out == 0) {
        bad = 0;
        if (rc != Z_STREAM_END) {
            /* output full: more decoded data would mean the cluster is too long */
            uint8_t extra;
            z.next_out = &extra;
            z.avail_out = 1;
            rc = inflate(&z, Z_FINISH);
            if (z.avail_out == 0)
                bad = 1;
        }
    }
    inflateEnd(&z);
    return bad ? -1 : 0;
}

static int check_zstd(const uint8_t *in, size_t in_len, uint8_t *out, size_t cs)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return -1;
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, cs, 0 };
    int bad = 0;
    while (ob.pos < ob.size) {
        size_t r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r)) {
            bad = 1;
            break;
        }
        if (ib.pos == ib.size && ob.pos < ob.size) {
            bad = 1;   /* input exhausted before one cluster came out */
            break;
        }
        if (r == 0 && ib.pos == ib.size)
            break;
    }
    if (ob.pos != cs)
        bad = 1;
    ZSTD_freeDCtx(d);
    return bad ? -1 : 0;
}

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
    int rc = qc2_read(s, in, in_len, c->host_offset);
    if (rc == 0)
        rc = s->h.compression_type == QCOW2_COMPRESSION_ZSTD
                 ? check_zstd(in, in_len, out, (size_t)s->cs)
                 : check_zlib(in, in_len, out, (size_t)s->cs);
    free(in);
    free(out);
    if (rc == 0)
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
