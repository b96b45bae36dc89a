/* Snapshot table entries: qemu 7.2 qcow2_do_read_snapshots() per-entry rules. */
#include "format/qcow2_snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "util/xalloc.h"

static const char SN[] = "snapshot table entry";

static char *dup_str(const uint8_t *p, size_t n)
{
    char *s = xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

void qcow2_snapshot_extent(const uint8_t *hdr, struct qcow2_sn_extent *x)
{
    x->extra = be32_get(hdr + 36);
    x->extra_kept = x->extra > QCOW2_MAX_SNAPSHOT_EXTRA ? QCOW2_MAX_SNAPSHOT_EXTRA : x->extra;
    x->strs = (uint32_t)be16_get(hdr + 12) + be16_get(hdr + 14);
    /* 40 + u32 + 2 * u16 cannot overflow u64. */
    x->len = QCOW2_SN_HDR_SIZE + (uint64_t)x->extra + x->strs;
    x->kept_len = QCOW2_SN_HDR_SIZE + (uint64_t)x->extra_kept + x->strs;
}

/* qemu's "Too much extra metadata" test, on the header alone. */
static int extra_check(const struct qcow2_sn_extent *x, uint64_t entry_file_offset,
                       unsigned index, unsigned flags, struct fmt_error *err)
{
    if (x->extra <= QCOW2_MAX_SNAPSHOT_EXTRA || (flags & QCOW2_SN_TRUNCATE_EXTRA))
        return 0;
    fmt_error_set(err, -EFBIG, SN, "extra_data_size", x->extra, true, entry_file_offset + 36,
                  "must be at most %u (entry %u)", QCOW2_MAX_SNAPSHOT_EXTRA, index);
    fmt_error_qemu(err, "Too much extra metadata in snapshot table entry %u", index);
    return -EFBIG;
}

/* The entry from its parts: the 40-byte header, the kept extra data (x->extra_kept bytes)
 * and the strings (x->strs bytes). */
static void decode_parts(const uint8_t *hdr, const uint8_t *xd, const uint8_t *strs,
                         const struct qcow2_sn_extent *x, unsigned version,
                         uint64_t virtual_size, struct qcow2_snapshot *sn)
{
    sn->l1_table_offset = be64_get(hdr);
    sn->l1_size = be32_get(hdr + 8);
    sn->id_str_size = be16_get(hdr + 12);
    sn->name_size = be16_get(hdr + 14);
    sn->date_sec = be32_get(hdr + 16);
    sn->date_nsec = be32_get(hdr + 20);
    sn->vm_clock_nsec = be64_get(hdr + 24);
    sn->vm_state_size32 = be32_get(hdr + 32);
    sn->extra_data_size = x->extra;
    sn->extra_truncated = x->extra > QCOW2_MAX_SNAPSHOT_EXTRA;

    uint32_t kept = x->extra_kept;
    sn->vm_state_size = kept >= 8 ? be64_get(xd) : sn->vm_state_size32;
    sn->has_disk_size = kept >= 16;
    sn->disk_size = sn->has_disk_size ? be64_get(xd + 8) : virtual_size;
    sn->has_icount = kept >= 24;
    sn->icount = sn->has_icount ? be64_get(xd + 16) : UINT64_MAX;
    sn->incomplete = version >= 3 && x->extra < QCOW2_SN_EXTRA_V3_MIN;
    if (kept > QCOW2_SN_EXTRA_KNOWN) {
        sn->unknown_extra_len = kept - QCOW2_SN_EXTRA_KNOWN;
        sn->unknown_extra = xmalloc(sn->unknown_extra_len);
        memcpy(sn->unknown_extra, xd + QCOW2_SN_EXTRA_KNOWN, sn->unknown_extra_len);
    }
    sn->id_str = dup_str(strs, sn->id_str_size);
    sn->name = dup_str(strs + sn->id_str_size, sn->name_size);
}

int qcow2_snapshot_decode(const uint8_t *buf, size_t buf_len, uint64_t entry_file_offset,
                          unsigned index, unsigned version, uint64_t virtual_size,
                          unsigned flags, struct qcow2_snapshot *sn, uint64_t *entry_len,
                          struct fmt_error *err)
{
    memset(sn, 0, sizeof(*sn));
    *entry_len = 0;
    if (buf_len < QCOW2_SN_HDR_SIZE)
        return fmt_error_set(err, -EINVAL, SN, NULL, 0, true, entry_file_offset,
                             "entry %u truncated: %zu of %u header bytes", index, buf_len,
                             QCOW2_SN_HDR_SIZE);
    struct qcow2_sn_extent x;
    qcow2_snapshot_extent(buf, &x);
    int rc = extra_check(&x, entry_file_offset, index, flags, err);
    if (rc < 0)
        return rc;
    if (x.len > buf_len)
        return fmt_error_set(err, -EINVAL, SN, "extra_data_size", x.extra, true,
                             entry_file_offset + 36,
                             "entry %u needs %llu bytes, only %zu available", index,
                             (unsigned long long)x.len, buf_len);
    decode_parts(buf, buf + QCOW2_SN_HDR_SIZE, buf + QCOW2_SN_HDR_SIZE + x.extra, &x, version,
                 virtual_size, sn);
    *entry_len = x.len;
    return 0;
}

static int read_fail(struct qcow2_sn_source *src, int rc, uint64_t at, unsigned index,
                     struct fmt_error *err)
{
    src->read_err = rc;
    return fmt_error_set(err, rc, SN, NULL, 0, true, at, "entry %u could not be read", index);
}

int qcow2_snapshot_read(struct qcow2_sn_source *src, uint64_t at, unsigned index,
                        struct qcow2_snapshot *sn, struct qcow2_sn_extent *x,
                        struct fmt_error *err)
{
    memset(sn, 0, sizeof(*sn));
    memset(x, 0, sizeof(*x));
    src->read_err = 0;
    uint8_t hdr[QCOW2_SN_HDR_SIZE];
    int rc = src->pread(src->ctx, hdr, sizeof(hdr), at);
    if (rc < 0)
        return read_fail(src, rc, at, index, err);
    qcow2_snapshot_extent(hdr, x);
    rc = extra_check(x, at, index, src->flags, err);
    if (rc < 0)
        return rc;
    /* at most 1024 + 2 * 65535 bytes: the kept extra data, then the strings */
    uint64_t body = x->kept_len - QCOW2_SN_HDR_SIZE;
    uint8_t *b = xmalloc(body ? (size_t)body : 1);
    uint64_t xoff = at + QCOW2_SN_HDR_SIZE;
    if (x->extra == x->extra_kept)
        rc = src->pread(src->ctx, b, body, xoff);
    else if ((rc = src->pread(src->ctx, b, x->extra_kept, xoff)) == 0)
        rc = src->pread(src->ctx, b + x->extra_kept, x->strs, xoff + x->extra);
    if (rc < 0) {
        free(b);
        return read_fail(src, rc, at, index, err);
    }
    decode_parts(hdr, b, b + x->extra_kept, x, src->version, src->virtual_size, sn);
    free(b);
    return 0;
}

void qcow2_snapshot_free(struct qcow2_snapshot *sn)
{
    free(sn->unknown_extra);
    free(sn->id_str);
    free(sn->name);
    sn->unknown_extra = NULL;
    sn->id_str = sn->name = NULL;
}

uint64_t qcow2_snapshot_encoded_size(const struct qcow2_snapshot *sn)
{
    return QCOW2_SN_HDR_SIZE + QCOW2_SN_EXTRA_KNOWN + (uint64_t)sn->unknown_extra_len +
           sn->id_str_size + sn->name_size;
}

int64_t qcow2_snapshot_encode(const struct qcow2_snapshot *sn, uint8_t *buf, size_t buf_len)
{
    uint64_t len = qcow2_snapshot_encoded_size(sn);
    uint64_t extra = QCOW2_SN_EXTRA_KNOWN + (uint64_t)sn->unknown_extra_len;

    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA ||
        (sn->id_str_size && !sn->id_str) || (sn->name_size && !sn->name) ||
        (sn->unknown_extra_len && !sn->unknown_extra))
        return -EINVAL;
    if (len > buf_len)
        return -ENOSPC;
    be64_put(buf, sn->l1_table_offset);
    be32_put(buf + 8, sn->l1_size);
    be16_put(buf + 12, sn->id_str_size);
    be16_put(buf + 14, sn->name_size);
    be32_put(buf + 16, sn->date_sec);
    be32_put(buf + 20, sn->date_nsec);
    be64_put(buf + 24, sn->vm_clock_nsec);
    /* A VM state too big for 32 bits reads as "no VM state" to old readers. */
    be32_put(buf + 32, sn->vm_state_size <= UINT32_MAX ? (uint32_t)sn->vm_state_size : 0);
    be32_put(buf + 36, (uint32_t)extra);
    uint8_t *x = buf + QCOW2_SN_HDR_SIZE;
    be64_put(x, sn->vm_state_size);
    be64_put(x + 8, sn->disk_size);
    be64_put(x + 16, sn->icount);
    if (sn->unknown_extra_len)
        memcpy(x + QCOW2_SN_EXTRA_KNOWN, sn->unknown_extra, sn->unknown_extra_len);
    uint8_t *id = x + extra;
    if (sn->id_str_size)
        memcpy(id, sn->id_str, sn->id_str_size);
    if (sn->name_size)
        memcpy(id + sn->id_str_size, sn->name, sn->name_size);
    return (int64_t)len;
}
