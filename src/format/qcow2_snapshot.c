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
    sn->l1_table_offset = be64_get(buf);
    sn->l1_size = be32_get(buf + 8);
    sn->id_str_size = be16_get(buf + 12);
    sn->name_size = be16_get(buf + 14);
    sn->date_sec = be32_get(buf + 16);
    sn->date_nsec = be32_get(buf + 20);
    sn->vm_clock_nsec = be64_get(buf + 24);
    sn->vm_state_size32 = be32_get(buf + 32);
    sn->extra_data_size = be32_get(buf + 36);
    sn->vm_state_size = sn->vm_state_size32;

    uint32_t extra = sn->extra_data_size;
    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
        if (!(flags & QCOW2_SN_TRUNCATE_EXTRA)) {
            fmt_error_set(err, -EFBIG, SN, "extra_data_size", extra, true,
                          entry_file_offset + 36, "must be at most %u (entry %u)",
                          QCOW2_MAX_SNAPSHOT_EXTRA, index);
            fmt_error_qemu(err, "Too much extra metadata in snapshot table entry %u", index);
            return -EFBIG;
        }
        sn->extra_truncated = true;
    }
    /* 40 + u32 + 2 * u16 cannot overflow u64. */
    uint64_t len = QCOW2_SN_HDR_SIZE + (uint64_t)extra + sn->id_str_size + sn->name_size;
    if (len > buf_len)
        return fmt_error_set(err, -EINVAL, SN, "extra_data_size", extra, true,
                             entry_file_offset + 36,
                             "entry %u needs %llu bytes, only %zu available", index,
                             (unsigned long long)len, buf_len);

    const uint8_t *x = buf + QCOW2_SN_HDR_SIZE;
    if (extra >= 8)
        sn->vm_state_size = be64_get(x);
    sn->has_disk_size = extra >= 16;
    sn->disk_size = sn->has_disk_size ? be64_get(x + 8) : virtual_size;
    sn->has_icount = extra >= 24;
    sn->icount = sn->has_icount ? be64_get(x + 16) : UINT64_MAX;
    sn->incomplete = version >= 3 && extra < QCOW2_SN_EXTRA_V3_MIN;
    if (extra > QCOW2_SN_EXTRA_KNOWN) {
        uint32_t kept = (sn->extra_truncated ? QCOW2_MAX_SNAPSHOT_EXTRA : extra) -
                        QCOW2_SN_EXTRA_KNOWN;
        sn->unknown_extra = xmalloc(kept);
        memcpy(sn->unknown_extra, x + QCOW2_SN_EXTRA_KNOWN, kept);
        sn->unknown_extra_len = kept;
    }
    const uint8_t *id = x + extra;
    sn->id_str = dup_str(id, sn->id_str_size);
    sn->name = dup_str(id + sn->id_str_size, sn->name_size);
    *entry_len = len;
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
