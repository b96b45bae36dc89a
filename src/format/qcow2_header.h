/* qcow2 header (cluster 0, bytes 0..header_length): decode, validate, encode.
 *
 * qcow2_header_decode() follows qemu 7.2's qcow2_do_open() checks that depend on the
 * header bytes alone, in qemu's order, with qemu's messages in err->qemu_msg (see
 * digest §2 steps 1-12). Checks that need the file size are in
 * qcow2_header_check_layout(), because qemu does not refuse them at open.
 *
 * Input: the first bytes of the file, ideally the whole first cluster (or the whole file
 * if shorter). Bytes past buf_len read as zero, exactly as qemu's reads past EOF do, so
 * a short file gives qemu's verdict. QCOW2_HDR_STRICT additionally refuses a buffer
 * that ends before header_length. */
#ifndef QIMG_FORMAT_QCOW2_HEADER_H
#define QIMG_FORMAT_QCOW2_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define QCOW2_MAGIC 0x514649fbu            /* "QFI\xfb" */

#define QCOW2_HDR_V2_LEN      72u          /* v2 header struct */
#define QCOW2_HDR_V3_MIN_LEN  104u         /* v3 minimum header_length */
#define QCOW2_HDR_V3_LEN      112u         /* what qemu 7.2 knows and writes */
#define QCOW2_HDR_OFF_COMPRESSION_TYPE 104u

#define QCOW2_MIN_CLUSTER_BITS 9u
#define QCOW2_MAX_CLUSTER_BITS 21u

/* Incompatible feature bits (byte 72). */
#define QCOW2_INCOMPAT_DIRTY        (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ull << 4)
#define QCOW2_INCOMPAT_MASK         0x1full
/* Compatible feature bits (byte 80). */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_COMPAT_MASK           0x1ull
/* Autoclear feature bits (byte 88). */
#define QCOW2_AUTOCLEAR_BITMAPS       (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)
#define QCOW2_AUTOCLEAR_MASK          0x3ull

#define QCOW2_CRYPT_NONE 0u
#define QCOW2_CRYPT_AES  1u
#define QCOW2_CRYPT_LUKS 2u

#define QCOW2_COMPRESSION_ZLIB 0u
#define QCOW2_COMPRESSION_ZSTD 1u

/* qemu 7.2 limits (digest §1.10). */
#define QCOW2_MAX_REFTABLE_SIZE   (8ull << 20)        /* bytes */
#define QCOW2_MAX_L1_SIZE         (32ull << 20)       /* bytes */
#define QCOW2_MAX_SNAPSHOTS       65536u
#define QCOW2_SNAPSHOT_HDR_SIZE   40u
#define QCOW2_MAX_BACKING_NAME    1023u
#define QCOW2_EXTL2_SUBCLUSTERS   32u

/* Field offsets, for error reports and in-place header updates. */
enum {
    QCOW2_OFF_MAGIC = 0, QCOW2_OFF_VERSION = 4, QCOW2_OFF_BACKING_OFFSET = 8,
    QCOW2_OFF_BACKING_SIZE = 16, QCOW2_OFF_CLUSTER_BITS = 20, QCOW2_OFF_SIZE = 24,
    QCOW2_OFF_CRYPT_METHOD = 32, QCOW2_OFF_L1_SIZE = 36, QCOW2_OFF_L1_OFFSET = 40,
    QCOW2_OFF_REFTABLE_OFFSET = 48, QCOW2_OFF_REFTABLE_CLUSTERS = 56,
    QCOW2_OFF_NB_SNAPSHOTS = 60, QCOW2_OFF_SNAPSHOTS_OFFSET = 64,
    QCOW2_OFF_INCOMPAT = 72, QCOW2_OFF_COMPAT = 80, QCOW2_OFF_AUTOCLEAR = 88,
    QCOW2_OFF_REFCOUNT_ORDER = 96, QCOW2_OFF_HEADER_LENGTH = 100,
    QCOW2_OFF_COMPRESSION_TYPE = 104,
};

/* Decode flags: mirror qemu's BDRV_O_RDWR / BDRV_O_CHECK. */
#define QCOW2_HDR_RDWR   0x1u   /* refuse the corrupt bit (unless CHECK) */
#define QCOW2_HDR_CHECK  0x2u   /* check mode: accept 0 reftable clusters, skip snapshot table */
#define QCOW2_HDR_STRICT 0x4u   /* refuse buf_len < header_length (qemu zero-fills instead) */
/* with CHECK: salvage (block/salvage.h) reads guest data only: the refcount table is not
 * validated at all, and an L1 size that is too large or too small for the virtual size is
 * accepted (the reader bounds and reports it) */
#define QCOW2_HDR_SALVAGE 0x8u

struct qcow2_header {
    /* Raw fields, host byte order. v2 images get qemu's implied v3 values. */
    uint32_t magic;
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;                      /* virtual size, bytes */
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;     /* v2: 0 */
    uint64_t compatible_features;       /* v2: 0 */
    uint64_t autoclear_features;        /* v2: 0 */
    uint32_t refcount_order;            /* v2: 4 */
    uint32_t header_length;             /* v2: 72 */
    uint8_t  compression_type;          /* 0 unless header_length > 104 */
    bool     has_compression_type;      /* header_length > 104 */

    /* Derived, valid after a successful decode. */
    uint64_t cluster_size;              /* 1 << cluster_bits */
    uint32_t l2_entry_size;             /* 8, or 16 with extended L2 */
    uint32_t l2_bits;                   /* log2(l2_entries) */
    uint64_t l2_entries;                /* cluster_size / l2_entry_size */
    uint32_t subclusters_per_cluster;   /* 1, or 32 with extended L2 */
    uint64_t subcluster_size;
    uint32_t refcount_bits;             /* 1 << refcount_order */
    uint32_t refcount_block_bits;       /* log2(refcount_block_entries) */
    uint64_t refcount_block_entries;    /* cluster_size * 8 / refcount_bits */
    uint64_t refcount_max;              /* 2^refcount_bits - 1 */
    uint64_t reftable_entries;          /* refcount_table_clusters * cluster_size / 8 */
    uint64_t l1_vm_state_index;         /* L1 entries needed for size (size_to_l1) */
    uint64_t ext_end;                   /* extensions end: backing_file_offset or cs */
    /* Compressed descriptor geometry (digest §1.6). */
    uint32_t csize_shift;               /* 62 - (cluster_bits - 8) */
    uint64_t csize_mask;
    uint64_t cluster_offset_mask;
    /* Header bytes qemu does not know, [unknown_offset, unknown_offset+unknown_len);
     * a rewrite must preserve them (len 0 if none). */
    uint32_t unknown_offset;
    uint32_t unknown_len;
    bool     buf_short;                 /* buf_len < header_length: zero-filled */
};

/* Decode and validate (qemu open steps 1-12, header bytes only). 0 or negative errno. */
int qcow2_header_decode(const uint8_t *buf, size_t buf_len, unsigned flags,
                        struct qcow2_header *h, struct fmt_error *err);

/* Stricter, non-qemu placement checks against the file size: L1 table, reftable,
 * snapshot table start and backing name inside the file; refcount table must exist
 * (outside check mode decode already refuses 0 clusters). qemu does not refuse
 * these at open, so callers decide what to do with the verdict. */
int qcow2_header_check_layout(const struct qcow2_header *h, uint64_t file_size,
                              struct fmt_error *err);

/* Encode the known header fields into buf: 72 bytes for v2; for v3, 104 if
 * header_length == 104, else 112 (compression_type plus zero padding). Unknown header
 * bytes are the caller's to copy. Returns bytes written, or negative errno
 * (-EINVAL bad version, -ENOSPC buffer too small). Derived fields are ignored. */
int qcow2_header_encode(const struct qcow2_header *h, uint8_t *buf, size_t buf_len);

/* Name of a feature bit as qemu's feature table writes it, or NULL.
 * type: 0 incompatible, 1 compatible, 2 autoclear. */
const char *qcow2_feature_name(unsigned type, unsigned bit);

/* ceil(size / (cluster_size * l2_entries)) without overflow; h must be decoded. */
uint64_t qcow2_size_to_l1(const struct qcow2_header *h, uint64_t size);
/* qemu computes size_to_l1() in 64 bits and it wraps for sizes near 2^64; such headers
 * pass its L1 checks and its open fails only later, on the size ("Could not refresh total
 * sector count: File too large"). True when the decoder's "Image is too big" for h (the
 * decoder's arithmetic does not wrap) is only that: the caller goes on opening and then
 * refuses the size as qemu does. */
bool qcow2_size_wrap_waived(const struct qcow2_header *h);

/* qemu's open of an encrypted image (AES, or LUKS with its header extension) for I/O
 * without a key secret; qimg takes no --object secret, so every such open fails so
 * (info, which opens without I/O, works). */
#define QCOW2_NO_KEY_MSG "Parameter 'encrypt.key-secret' is required for cipher"

#endif
