/* qcow v1 header decoder: qemu 7.2 qcow_open() order and messages. */
#include "format/qcow1_header.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>

#include "format/be.h"

#define HDR "qcow header"
#define FAIL(code, field, value, off, ...) \
    fmt_error_set(err, code, HDR, field, value, true, off, __VA_ARGS__)

int qcow1_header_decode(const uint8_t *buf, size_t len, struct qcow1_header *h,
                        struct fmt_error *err)
{
    memset(h, 0, sizeof(*h));
    if (len < QCOW1_HEADER_LEN)
        return FAIL(-EINVAL, NULL, len, 0, "buffer of %zu bytes is shorter than the %u-byte "
                    "header", len, QCOW1_HEADER_LEN);
    h->magic = be32_get(buf + QCOW1_OFF_MAGIC);
    h->version = be32_get(buf + QCOW1_OFF_VERSION);
    h->backing_file_offset = be64_get(buf + QCOW1_OFF_BACKING_OFFSET);
    h->backing_file_size = be32_get(buf + QCOW1_OFF_BACKING_SIZE);
    h->mtime = be32_get(buf + QCOW1_OFF_MTIME);
    h->size = be64_get(buf + QCOW1_OFF_SIZE);
    h->cluster_bits = buf[QCOW1_OFF_CLUSTER_BITS];
    h->l2_bits = buf[QCOW1_OFF_L2_BITS];
    h->crypt_method = be32_get(buf + QCOW1_OFF_CRYPT);
    h->l1_table_offset = be64_get(buf + QCOW1_OFF_L1_OFFSET);

    if (h->magic != QCOW1_MAGIC) {
        FAIL(-EINVAL, "magic", h->magic, QCOW1_OFF_MAGIC, "must be 0x%08x", QCOW1_MAGIC);
        fmt_error_qemu(err, "Image not in qcow format");
        return -EINVAL;
    }
    if (h->version != QCOW1_VERSION) {
        FAIL(-ENOTSUP, "version", h->version, QCOW1_OFF_VERSION, "must be 1");
        /* qemu adds a hint line for 2 and 3; the driver prints it */
        fmt_error_qemu(err, "qcow (v1) does not support qcow version %" PRIu32, h->version);
        return -ENOTSUP;
    }
    if (h->size <= 1) {
        FAIL(-EINVAL, "size", h->size, QCOW1_OFF_SIZE, "must be at least 2");
        fmt_error_qemu(err, "Image size is too small (must be at least 2 bytes)");
        return -EINVAL;
    }
    if (h->cluster_bits < 9 || h->cluster_bits > 16) {
        FAIL(-EINVAL, "cluster_bits", h->cluster_bits, QCOW1_OFF_CLUSTER_BITS,
             "must be 9..16");
        fmt_error_qemu(err, "Cluster size must be between 512 and 64k");
        return -EINVAL;
    }
    /* l2_bits counts 8-byte entries: tables of 512 bytes to 64 KiB */
    if (h->l2_bits < 9 - 3 || h->l2_bits > 16 - 3) {
        FAIL(-EINVAL, "l2_bits", h->l2_bits, QCOW1_OFF_L2_BITS, "must be 6..13");
        fmt_error_qemu(err, "L2 table size must be between 512 and 64k");
        return -EINVAL;
    }
    if (h->crypt_method != QCOW1_CRYPT_NONE && h->crypt_method != QCOW1_CRYPT_AES) {
        FAIL(-EINVAL, "crypt_method", h->crypt_method, QCOW1_OFF_CRYPT, "must be 0 or 1");
        fmt_error_qemu(err, "invalid encryption method in qcow header");
        return -EINVAL;
    }
    h->cluster_size = 1u << h->cluster_bits;
    h->l2_size = 1u << h->l2_bits;
    h->cluster_offset_mask = ((uint64_t)1 << (63 - h->cluster_bits)) - 1;
    unsigned shift = h->cluster_bits + h->l2_bits;
    if (h->size > UINT64_MAX - ((uint64_t)1 << shift)) {
        FAIL(-EINVAL, "size", h->size, QCOW1_OFF_SIZE, "must leave room for one L2 range");
        fmt_error_qemu(err, "Image too large");
        return -EINVAL;
    }
    h->l1_size = (h->size + ((uint64_t)1 << shift) - 1) >> shift;
    if (h->l1_size > INT_MAX / sizeof(uint64_t)) {
        FAIL(-EINVAL, "size", h->size, QCOW1_OFF_SIZE, "needs %" PRIu64 " L1 entries, at "
             "most %zu", h->l1_size, INT_MAX / sizeof(uint64_t));
        fmt_error_qemu(err, "Image too large");
        return -EINVAL;
    }
    return 0;
}

struct qcow1_entry qcow1_entry(const struct qcow1_header *h, uint64_t entry)
{
    struct qcow1_entry e;
    memset(&e, 0, sizeof(e));
    if (!entry) {
        e.kind = QCOW1_UNALLOCATED;
    } else if (entry & QCOW1_OFLAG_COMPRESSED) {
        e.kind = QCOW1_COMPRESSED;
        e.coffset = entry & h->cluster_offset_mask;
        e.csize = (uint32_t)((entry >> (63 - h->cluster_bits)) & (h->cluster_size - 1));
    } else {
        e.kind = QCOW1_NORMAL;
        e.host = entry;
    }
    return e;
}
