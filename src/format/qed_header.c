/* QED header decoder: qemu 7.2 bdrv_qed_do_open() order and messages. */
#include "format/qed_header.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "format/be.h"

#define HDR "QED header"
#define FAIL(code, field, value, off, ...) \
    fmt_error_set(err, code, HDR, field, value, true, off, __VA_ARGS__)

static bool pow2(uint32_t v)
{
    return v && !(v & (v - 1));
}

static unsigned log2u(uint32_t v)
{
    return (unsigned)__builtin_ctz(v);
}

/* qemu's qed_max_image_size(), in its (wrapping) unsigned arithmetic. */
static uint64_t max_image_size(uint32_t cluster_size, uint32_t table_size)
{
    uint64_t entries = (uint32_t)(table_size * cluster_size) / sizeof(uint64_t);
    uint64_t l2_size = entries * cluster_size;
    return l2_size * entries;
}

bool qed_cluster_offset_ok(const struct qed_header *h, uint64_t off)
{
    uint64_t header_bytes = (uint64_t)h->header_size * h->cluster_size;
    if (off & (h->cluster_size - 1))
        return false;
    return off >= header_bytes && off < h->file_size;
}

bool qed_table_offset_ok(const struct qed_header *h, uint64_t off)
{
    /* qemu wraps here and rejects end <= off; that also rejects 1-cluster tables */
    uint64_t end = off + (uint64_t)(h->table_size - 1) * h->cluster_size;
    if (end <= off)
        return false;
    return qed_cluster_offset_ok(h, off) && qed_cluster_offset_ok(h, end);
}

uint64_t qed_bytes_to_clusters_quirk(const struct qed_header *h, uint64_t bytes)
{
    uint64_t cs = h->cluster_size;
    return ((bytes + (cs - 1)) & ~(cs - 1)) / (cs - 1);
}

int qed_header_decode(const uint8_t *buf, size_t len, uint64_t file_size,
                      struct qed_header *h, struct fmt_error *err)
{
    memset(h, 0, sizeof(*h));
    if (len < QED_HEADER_LEN)
        return FAIL(-EINVAL, NULL, len, 0, "buffer of %zu bytes is shorter than the %u-byte "
                    "header", len, QED_HEADER_LEN);
    h->magic = le32_get(buf + QED_OFF_MAGIC);
    h->cluster_size = le32_get(buf + QED_OFF_CLUSTER_SIZE);
    h->table_size = le32_get(buf + QED_OFF_TABLE_SIZE);
    h->header_size = le32_get(buf + QED_OFF_HEADER_SIZE);
    h->features = le64_get(buf + QED_OFF_FEATURES);
    h->compat_features = le64_get(buf + QED_OFF_COMPAT);
    h->autoclear_features = le64_get(buf + QED_OFF_AUTOCLEAR);
    h->l1_table_offset = le64_get(buf + QED_OFF_L1_OFFSET);
    h->image_size = le64_get(buf + QED_OFF_IMAGE_SIZE);
    h->backing_filename_offset = le32_get(buf + QED_OFF_BACKING_OFFSET);
    h->backing_filename_size = le32_get(buf + QED_OFF_BACKING_SIZE);

    if (h->magic != QED_MAGIC) {
        FAIL(-EINVAL, "magic", h->magic, QED_OFF_MAGIC, "must be 0x%08x (\"QED\\0\")",
             QED_MAGIC);
        fmt_error_qemu(err, "Image not in QED format");
        return -EINVAL;
    }
    if (h->features & ~QED_FEATURE_MASK) {
        FAIL(-ENOTSUP, "features", h->features, QED_OFF_FEATURES,
             "unknown bits 0x%" PRIx64, h->features & ~QED_FEATURE_MASK);
        fmt_error_qemu(err, "Unsupported QED features: %" PRIx64,
                       h->features & ~QED_FEATURE_MASK);
        return -ENOTSUP;
    }
    if (h->cluster_size < QED_MIN_CLUSTER_SIZE || h->cluster_size > QED_MAX_CLUSTER_SIZE ||
        !pow2(h->cluster_size)) {
        FAIL(-EINVAL, "cluster_size", h->cluster_size, QED_OFF_CLUSTER_SIZE,
             "must be a power of two in %u..%u", QED_MIN_CLUSTER_SIZE, QED_MAX_CLUSTER_SIZE);
        fmt_error_qemu(err, "QED cluster size is invalid");
        return -EINVAL;
    }
    h->file_size = file_size & ~(uint64_t)(h->cluster_size - 1);
    if (h->table_size < QED_MIN_TABLE_SIZE || h->table_size > QED_MAX_TABLE_SIZE ||
        !pow2(h->table_size)) {
        FAIL(-EINVAL, "table_size", h->table_size, QED_OFF_TABLE_SIZE,
             "must be a power of two in %u..%u", QED_MIN_TABLE_SIZE, QED_MAX_TABLE_SIZE);
        fmt_error_qemu(err, "QED table size is invalid");
        return -EINVAL;
    }
    uint64_t max = max_image_size(h->cluster_size, h->table_size);
    if (h->image_size % 512 || h->image_size > max) {
        FAIL(-EINVAL, "image_size", h->image_size, QED_OFF_IMAGE_SIZE,
             "must be a multiple of 512 and at most %" PRIu64, max);
        fmt_error_qemu(err, "QED image size is invalid");
        return -EINVAL;
    }
    if (!qed_table_offset_ok(h, h->l1_table_offset)) {
        FAIL(-EINVAL, "l1_table_offset", h->l1_table_offset, QED_OFF_L1_OFFSET,
             "must be cluster aligned, past the header, with the whole %u-cluster table "
             "inside the file (%" PRIu64 " bytes) and table_size > 1", h->table_size,
             h->file_size);
        fmt_error_qemu(err, "QED table offset is invalid");
        return -EINVAL;
    }
    h->table_bytes = (uint64_t)h->table_size * h->cluster_size;
    h->table_nelems = (uint32_t)(h->table_bytes / sizeof(uint64_t));
    h->l2_shift = log2u(h->cluster_size);
    h->l1_shift = h->l2_shift + log2u(h->table_nelems);
    if (h->header_size > UINT32_MAX / h->cluster_size) {
        FAIL(-EINVAL, "header_size", h->header_size, QED_OFF_HEADER_SIZE,
             "header_size * cluster_size must fit in 32 bits");
        fmt_error_qemu(err, "QED header size is too large");
        return -EINVAL;
    }
    if (h->features & QED_F_BACKING_FILE) {
        uint64_t end = (uint64_t)h->backing_filename_offset + h->backing_filename_size;
        if (end > (uint64_t)h->cluster_size * h->header_size) {
            FAIL(-EINVAL, "backing_filename_offset", h->backing_filename_offset,
                 QED_OFF_BACKING_OFFSET, "name (%" PRIu32 " bytes) must end inside the "
                 "%" PRIu32 "-cluster header", h->backing_filename_size, h->header_size);
            fmt_error_qemu(err, "QED backing filename offset is invalid");
            return -EINVAL;
        }
        if (h->backing_filename_size > QED_MAX_BACKING_NAME) {
            FAIL(-EINVAL, "backing_filename_size", h->backing_filename_size,
                 QED_OFF_BACKING_SIZE, "must be at most %u", QED_MAX_BACKING_NAME);
            fmt_error_qemu(err, "Failed to read backing filename");
            return -EINVAL;
        }
    }
    return 0;
}

void qed_header_encode(const struct qed_header *h, uint8_t out[QED_HEADER_LEN])
{
    le32_put(out + QED_OFF_MAGIC, h->magic);
    le32_put(out + QED_OFF_CLUSTER_SIZE, h->cluster_size);
    le32_put(out + QED_OFF_TABLE_SIZE, h->table_size);
    le32_put(out + QED_OFF_HEADER_SIZE, h->header_size);
    le64_put(out + QED_OFF_FEATURES, h->features);
    le64_put(out + QED_OFF_COMPAT, h->compat_features);
    le64_put(out + QED_OFF_AUTOCLEAR, h->autoclear_features);
    le64_put(out + QED_OFF_L1_OFFSET, h->l1_table_offset);
    le64_put(out + QED_OFF_IMAGE_SIZE, h->image_size);
    le32_put(out + QED_OFF_BACKING_OFFSET, h->backing_filename_offset);
    le32_put(out + QED_OFF_BACKING_SIZE, h->backing_filename_size);
}
