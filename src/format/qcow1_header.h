/* qcow version 1 ("qcow", qemu's block/qcow.c): the 48-byte big-endian header and the
 * L2 entry layout. Decoded and validated in the order of qemu 7.2's qcow_open(), with its
 * messages in err->qemu_msg. Read-only: qimg never writes qcow v1.
 *
 * Layout: header, optional backing file name, L1 table (l1_size 64-bit entries: L2 table
 * offsets, 0 = unallocated), L2 tables of 2^l2_bits entries. An L2 entry is 0
 * (unallocated), a host offset of the cluster, or, with bit 63 set, a compressed cluster:
 * the deflate data (raw, window 2^12) of csize bytes at the offset in the low
 * 63 - cluster_bits bits, csize in the bits above (masked to cluster_size - 1). qemu
 * validates none of these offsets; the driver keeps its arithmetic (see qcow1_entry). */
#ifndef QIMG_FORMAT_QCOW1_HEADER_H
#define QIMG_FORMAT_QCOW1_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define QCOW1_MAGIC 0x514649fbu   /* "QFI\xfb", shared with qcow2 */
#define QCOW1_VERSION 1u
#define QCOW1_HEADER_LEN 48u
#define QCOW1_CRYPT_NONE 0u
#define QCOW1_CRYPT_AES 1u
#define QCOW1_OFLAG_COMPRESSED ((uint64_t)1 << 63)
#define QCOW1_MAX_BACKING_NAME 1023u
/* qemu's BDRV_REQUEST_MAX_BYTES: a longer L1 table read fails with EIO */
#define QCOW1_MAX_READ 2147483136u

/* Field offsets, for error reports. */
enum {
    QCOW1_OFF_MAGIC = 0, QCOW1_OFF_VERSION = 4, QCOW1_OFF_BACKING_OFFSET = 8,
    QCOW1_OFF_BACKING_SIZE = 16, QCOW1_OFF_MTIME = 20, QCOW1_OFF_SIZE = 24,
    QCOW1_OFF_CLUSTER_BITS = 32, QCOW1_OFF_L2_BITS = 33, QCOW1_OFF_CRYPT = 36,
    QCOW1_OFF_L1_OFFSET = 40,
};

struct qcow1_header {
    uint32_t magic, version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t mtime;
    uint64_t size;           /* bytes; the virtual size is this rounded down to 512 */
    uint8_t cluster_bits, l2_bits;
    uint32_t crypt_method;
    uint64_t l1_table_offset;
    /* derived */
    uint32_t cluster_size;
    uint32_t l2_size;        /* entries per L2 table */
    uint64_t l1_size;        /* entries of the L1 table, <= INT_MAX / 8 */
    uint64_t cluster_offset_mask; /* offset bits of a compressed entry */
};

/* buf holds at least QCOW1_HEADER_LEN bytes (zero-padded past EOF by the caller, as
 * qemu's read is). Returns 0 or -EINVAL/-ENOTSUP/-EIO with err filled. An encrypted
 * header (crypt_method 1) decodes fine: whether it opens depends on a key (driver). */
int qcow1_header_decode(const uint8_t *buf, size_t len, struct qcow1_header *h,
                        struct fmt_error *err);

enum qcow1_entry_kind { QCOW1_UNALLOCATED, QCOW1_NORMAL, QCOW1_COMPRESSED };

struct qcow1_entry {
    enum qcow1_entry_kind kind;
    uint64_t host;           /* NORMAL: the entry (cluster offset, unmasked, as qemu) */
    uint64_t coffset;        /* COMPRESSED: where the deflate data starts */
    uint32_t csize;          /* COMPRESSED: its length in bytes (< cluster_size) */
};

/* qemu's reading of an L2 entry (get_cluster_offset / decompress_cluster). */
struct qcow1_entry qcow1_entry(const struct qcow1_header *h, uint64_t entry);

/* Guest offset -> L1 index and L2 index (off < size). */
static inline uint64_t qcow1_l1_index(const struct qcow1_header *h, uint64_t off)
{
    return off >> (h->cluster_bits + h->l2_bits);
}

static inline uint32_t qcow1_l2_index(const struct qcow1_header *h, uint64_t off)
{
    return (uint32_t)((off >> h->cluster_bits) & (h->l2_size - 1));
}

#endif
