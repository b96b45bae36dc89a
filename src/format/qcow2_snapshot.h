/* Internal snapshot table entries (digest §1.8).
 *
 * The table is nb_snapshots entries starting at snapshots_offset; each entry starts on
 * an 8-byte boundary. An entry's size comes from its 40-byte header alone
 * (qcow2_snapshot_extent: the one place it is computed). Read a table like this:
 *
 *     uint64_t pos = table_off;
 *     for (i = 0; i < nb; i++) {
 *         u64_align8(pos, &pos);
 *         rc = qcow2_snapshot_read(&src, pos, i, &sn, &x, &err);   // or _decode on bytes
 *         pos += x.len;                    // table size = final pos (no end padding)
 *     }
 *
 * qcow2_snapshot_table_too_big() gives qemu's "Snapshot table is too big" test. */
#ifndef QIMG_FORMAT_QCOW2_SNAPSHOT_H
#define QIMG_FORMAT_QCOW2_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define QCOW2_SN_HDR_SIZE         40u
#define QCOW2_SN_EXTRA_KNOWN      24u             /* vm_state_size_large, disk_size, icount */
#define QCOW2_SN_EXTRA_V3_MIN     16u             /* v3 needs vm_state_size_large + disk_size */
#define QCOW2_MAX_SNAPSHOT_EXTRA  1024u
#define QCOW2_MAX_SNAPSHOTS_SIZE  (1024ull * 65536) /* 64 MiB table */

/* Decode flags. */
#define QCOW2_SN_TRUNCATE_EXTRA 0x1u   /* repair mode: accept extra > 1024, keep 1024 */

struct qcow2_snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    uint16_t id_str_size;
    uint16_t name_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint32_t vm_state_size32;        /* raw 32-bit field */
    uint32_t extra_data_size;        /* as stored (before any truncation) */

    uint64_t vm_state_size;          /* vm_state_size_large if present, else 32-bit */
    uint64_t disk_size;              /* from extra data, else the caller's virtual size */
    uint64_t icount;                 /* from extra data, else UINT64_MAX (-1) */
    bool has_disk_size, has_icount;
    bool incomplete;                 /* v3 and extra_data_size < 16 (check: "incomplete") */
    bool extra_truncated;            /* extra > 1024, kept only 1024 (TRUNCATE_EXTRA) */

    uint8_t *unknown_extra;          /* extra bytes past the known 24, allocated */
    uint32_t unknown_extra_len;      /* <= 1000 */
    char *id_str;                    /* allocated, NUL-terminated, id_str_size bytes */
    char *name;                      /* allocated, NUL-terminated, name_size bytes */
};

/* Where one entry's parts lie, from its 40-byte header (qemu's qcow2_do_read_snapshots
 * reads them in this order): the header, extra_data_size bytes of extra data of which a
 * reader keeps at most 1024 (the rest is "Too much extra metadata", or skipped under
 * QCOW2_SN_TRUNCATE_EXTRA), then the id and the name. */
struct qcow2_sn_extent {
    uint32_t extra;          /* extra_data_size as stored */
    uint32_t extra_kept;     /* min(extra, 1024) */
    uint32_t strs;           /* id_str_size + name_size */
    uint64_t len;            /* 40 + extra + strs: the entry in the table, unpadded */
    uint64_t kept_len;       /* 40 + extra_kept + strs: what a reader holds, and the entry as
                              * qemu measures a table it will rewrite (repair) */
};

void qcow2_snapshot_extent(const uint8_t *hdr, struct qcow2_sn_extent *x);

/* Decode one entry from buf (starting at the entry, already 8-aligned in the table).
 * entry_file_offset: for error reports. index: entry number, for qemu's messages.
 * *entry_len: bytes the entry occupies without its trailing padding, so the caller
 * can compute the table size. Errors: -EFBIG "Too much extra metadata in snapshot
 * table entry %i" (without TRUNCATE_EXTRA), -EINVAL truncated buffer. */
int qcow2_snapshot_decode(const uint8_t *buf, size_t buf_len, uint64_t entry_file_offset,
                          unsigned index, unsigned version, uint64_t virtual_size,
                          unsigned flags, struct qcow2_snapshot *sn, uint64_t *entry_len,
                          struct fmt_error *err);

/* Reading entries from a file through the caller's pread (0 or -errno; bytes past the end
 * of the file read as zeros, as qemu's do). Reads only what a reader keeps: the header, at
 * most 1024 bytes of extra data, and the strings from their place after all of it. */
typedef int (*qcow2_sn_pread_fn)(void *ctx, void *buf, uint64_t len, uint64_t off);

struct qcow2_sn_source {
    qcow2_sn_pread_fn pread;
    void *ctx;
    unsigned version;
    uint64_t virtual_size;   /* disk_size of entries without one */
    unsigned flags;          /* QCOW2_SN_TRUNCATE_EXTRA under repair */
    int read_err;            /* out: the failed read's -errno, else 0 */
};

/* Read and decode entry index at file offset at: the decode's errors (-EFBIG before reading
 * past the header, as qemu), or a failed read (its -errno, with src->read_err set). *x is
 * set as soon as the header is read (x->len: the entry's length in the table). */
int qcow2_snapshot_read(struct qcow2_sn_source *src, uint64_t at, unsigned index,
                        struct qcow2_snapshot *sn, struct qcow2_sn_extent *x,
                        struct fmt_error *err);

void qcow2_snapshot_free(struct qcow2_snapshot *sn);

/* qemu's running size test, done before and after each entry: true when the bytes
 * used so far exceed 64 MiB. */
static inline bool qcow2_snapshot_table_too_big(uint64_t bytes_so_far)
{
    return bytes_so_far > QCOW2_MAX_SNAPSHOTS_SIZE;
}

/* Size of the encoded entry (without trailing padding): 40 + extra + id + name, where
 * extra = 24 + unknown_extra_len as qemu writes. */
uint64_t qcow2_snapshot_encoded_size(const struct qcow2_snapshot *sn);

/* Encode one entry as qemu writes it: extra data is always the 24 known bytes
 * (vm_state_size, disk_size, icount) plus unknown_extra. The 32-bit vm_state_size
 * field gets vm_state_size if it fits, else 0 (as qemu). id_str_size/name_size come
 * from the struct. Returns bytes written (unpadded) or -ENOSPC / -EINVAL. */
int64_t qcow2_snapshot_encode(const struct qcow2_snapshot *sn, uint8_t *buf, size_t buf_len);

#endif
