/* qcow2 header decoder: qemu 7.2 qcow2_do_open() checks on header bytes, in its order. */
#include "format/qcow2_header.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_ext.h"

static const char HDR[] = "qcow2 header";

#define FAIL(code, field, value, off, ...) \
    fmt_error_set(err, code, HDR, field, value, true, off, __VA_ARGS__)

/* qemu's qcow2_validate_table(): size first (-EFBIG), then offset (-EINVAL). */
static int validate_table(const struct qcow2_header *h, uint64_t offset, uint64_t entries,
                          uint64_t entry_len, uint64_t max_bytes, const char *name,
                          const char *count_field, unsigned count_off,
                          const char *off_field, unsigned off_off, struct fmt_error *err)
{
    if (entries > max_bytes / entry_len) {
        FAIL(-EFBIG, count_field, entries, count_off, "table of %llu bytes exceeds %llu",
             (unsigned long long)(entries * entry_len), (unsigned long long)max_bytes);
        fmt_error_qemu(err, "%s too large", name);
        return -EFBIG;
    }
    /* entries*entry_len <= max_bytes, so no overflow; qemu bounds ends by INT64_MAX. */
    if ((uint64_t)INT64_MAX - entries * entry_len < offset ||
        (offset & (h->cluster_size - 1)) != 0) {
        FAIL(-EINVAL, off_field, offset, off_off,
             "must be cluster aligned and the table must end below 2^63");
        fmt_error_qemu(err, "%s offset invalid", name);
        return -EINVAL;
    }
    return 0;
}

uint64_t qcow2_size_to_l1(const struct qcow2_header *h, uint64_t size)
{
    unsigned shift = h->cluster_bits + h->l2_bits;
    return (size >> shift) + ((size & ((1ull << shift) - 1)) != 0);
}

/* qemu's size_to_l1(size) = (size + span - 1) >> shift in 64 bits (span: the bytes one L1
 * entry maps) wraps for sizes within one span of 2^64: true then, with *wrapped (NULL: not
 * wanted) set to qemu's wrapped count. */
static bool size_to_l1_wraps(const struct qcow2_header *h, uint64_t *wrapped)
{
    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return false;
    unsigned ext = (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) ? 4 : 3;
    unsigned shift = 2 * h->cluster_bits - ext;
    if (wrapped)
        *wrapped = (h->size + (1ull << shift) - 1) >> shift;
    return h->size + (1ull << shift) - 1 < h->size;
}

bool qcow2_size_wrap_waived(const struct qcow2_header *h)
{
    uint64_t wrapped;
    return size_to_l1_wraps(h, &wrapped) && wrapped <= INT32_MAX && h->l1_size >= wrapped &&
           (uint64_t)h->l1_size * 8 <= QCOW2_MAX_L1_SIZE;
}

static const struct { unsigned type, bit; const char *name; } feature_names[] = {
    {0, 0, "dirty bit"}, {0, 1, "corrupt bit"}, {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"},
    {1, 0, "lazy refcounts"}, {2, 0, "bitmaps"}, {2, 1, "raw external data"},
};

const char *qcow2_feature_name(unsigned type, unsigned bit)
{
    for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++)
        if (feature_names[i].type == type && feature_names[i].bit == bit)
            return feature_names[i].name;
    return NULL;
}

/* "Unsupported qcow2 feature(s): a, b, Unknown incompatible feature: 20". Names come
 * from the image's own feature table, read the way qemu does: errors ignored. */
static void report_unsupported(const struct qcow2_header *h, const uint8_t *buf,
                               size_t buf_len, uint64_t mask, struct fmt_error *err)
{
    struct qcow2_ext x;
    char list[FMT_ERROR_MSG_MAX - 40];
    size_t used = 0;

    qcow2_ext_parse(h, buf, buf_len, &x, NULL);
    list[0] = '\0';
    for (size_t i = 0; i < x.n_features && x.features[i].name[0]; i++) {
        const struct qcow2_feature *f = &x.features[i];
        if (f->type != QCOW2_FEAT_INCOMPAT || f->bit >= 64 || !(mask & (1ull << f->bit)))
            continue;
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
                                 used ? ", " : "", f->name);
        if (used >= sizeof(list))
            used = sizeof(list) - 1;
        mask &= ~(1ull << f->bit);
    }
    if (mask) {
        used += (size_t)snprintf(list + used, sizeof(list) - used,
                                 "%sUnknown incompatible feature: %llx", used ? ", " : "",
                                 (unsigned long long)mask);
    }
    qcow2_ext_free(&x);
    fmt_error_qemu(err, "Unsupported qcow2 feature(s): %s", list);
}

int qcow2_header_decode(const uint8_t *buf, size_t buf_len, unsigned flags,
                        struct qcow2_header *h, struct fmt_error *err)
{
    uint8_t hb[QCOW2_HDR_V3_LEN];
    int rc;

    memset(h, 0, sizeof(*h));
    memset(hb, 0, sizeof(hb));
    /* Bytes past the end read as zero, as qemu's reads past EOF do. */
    memcpy(hb, buf, buf_len < sizeof(hb) ? buf_len : sizeof(hb));

    h->magic = be32_get(hb + QCOW2_OFF_MAGIC);
    h->version = be32_get(hb + QCOW2_OFF_VERSION);
    h->backing_file_offset = be64_get(hb + QCOW2_OFF_BACKING_OFFSET);
    h->backing_file_size = be32_get(hb + QCOW2_OFF_BACKING_SIZE);
    h->cluster_bits = be32_get(hb + QCOW2_OFF_CLUSTER_BITS);
    h->size = be64_get(hb + QCOW2_OFF_SIZE);
    h->crypt_method = be32_get(hb + QCOW2_OFF_CRYPT_METHOD);
    h->l1_size = be32_get(hb + QCOW2_OFF_L1_SIZE);
    h->l1_table_offset = be64_get(hb + QCOW2_OFF_L1_OFFSET);
    h->refcount_table_offset = be64_get(hb + QCOW2_OFF_REFTABLE_OFFSET);
    h->refcount_table_clusters = be32_get(hb + QCOW2_OFF_REFTABLE_CLUSTERS);
    h->nb_snapshots = be32_get(hb + QCOW2_OFF_NB_SNAPSHOTS);
    h->snapshots_offset = be64_get(hb + QCOW2_OFF_SNAPSHOTS_OFFSET);

    /* Step 1: magic and version. */
    if (h->magic != QCOW2_MAGIC) {
        FAIL(-EINVAL, "magic", h->magic, QCOW2_OFF_MAGIC, "must be 0x514649fb (QFI\\xfb)");
        fmt_error_qemu(err, "Image is not in qcow2 format");
        return -EINVAL;
    }
    if (h->version < 2 || h->version > 3) {
        FAIL(-ENOTSUP, "version", h->version, QCOW2_OFF_VERSION, "must be 2 or 3");
        fmt_error_qemu(err, "Unsupported qcow2 version %u", h->version);
        return -ENOTSUP;
    }
    /* Step 2: cluster size. */
    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        FAIL(-EINVAL, "cluster_bits", h->cluster_bits, QCOW2_OFF_CLUSTER_BITS, "must be %u..%u",
             QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
        fmt_error_qemu(err, "Unsupported cluster size: 2^%u", h->cluster_bits);
        return -EINVAL;
    }
    h->cluster_size = 1ull << h->cluster_bits;

    /* Step 3: v3 fields and header length. */
    if (h->version == 2) {
        h->refcount_order = 4;
        h->header_length = QCOW2_HDR_V2_LEN;
    } else {
        h->incompatible_features = be64_get(hb + QCOW2_OFF_INCOMPAT);
        h->compatible_features = be64_get(hb + QCOW2_OFF_COMPAT);
        h->autoclear_features = be64_get(hb + QCOW2_OFF_AUTOCLEAR);
        h->refcount_order = be32_get(hb + QCOW2_OFF_REFCOUNT_ORDER);
        h->header_length = be32_get(hb + QCOW2_OFF_HEADER_LENGTH);
        if (h->header_length < QCOW2_HDR_V3_MIN_LEN) {
            FAIL(-EINVAL, "header_length", h->header_length, QCOW2_OFF_HEADER_LENGTH,
                 "must be at least %u for version 3", QCOW2_HDR_V3_MIN_LEN);
            fmt_error_qemu(err, "qcow2 header too short");
            return -EINVAL;
        }
    }
    if (h->header_length > h->cluster_size) {
        FAIL(-EINVAL, "header_length", h->header_length, QCOW2_OFF_HEADER_LENGTH,
             "must not exceed the cluster size %llu", (unsigned long long)h->cluster_size);
        fmt_error_qemu(err, "qcow2 header exceeds cluster size");
        return -EINVAL;
    }
    if (h->header_length > QCOW2_HDR_V3_LEN) {
        h->unknown_offset = QCOW2_HDR_V3_LEN;
        h->unknown_len = h->header_length - QCOW2_HDR_V3_LEN;
    }
    h->buf_short = buf_len < h->header_length;
    if (h->buf_short && (flags & QCOW2_HDR_STRICT)) {
        FAIL(-EINVAL, "header_length", h->header_length, QCOW2_OFF_HEADER_LENGTH,
             "header is truncated: only %zu bytes available", buf_len);
        return -EINVAL;
    }

    /* Step 4: backing file offset. */
    if (h->backing_file_offset > h->cluster_size) {
        FAIL(-EINVAL, "backing_file_offset", h->backing_file_offset, QCOW2_OFF_BACKING_OFFSET,
             "must not exceed the cluster size %llu", (unsigned long long)h->cluster_size);
        fmt_error_qemu(err, "Invalid backing file offset");
        return -EINVAL;
    }
    h->ext_end = h->backing_file_offset ? h->backing_file_offset : h->cluster_size;

    /* Step 5: compression type (present only if header_length > 104). */
    h->has_compression_type = h->header_length > QCOW2_HDR_OFF_COMPRESSION_TYPE;
    if (h->has_compression_type)
        h->compression_type = hb[QCOW2_OFF_COMPRESSION_TYPE];
    if (h->compression_type > QCOW2_COMPRESSION_ZSTD) {
        FAIL(-ENOTSUP, "compression_type", h->compression_type, QCOW2_OFF_COMPRESSION_TYPE,
             "must be 0 (zlib) or 1 (zstd)");
        fmt_error_qemu(err, "qcow2: unknown compression type: %u", h->compression_type);
        return -ENOTSUP;
    }
    if (h->compression_type == QCOW2_COMPRESSION_ZLIB &&
        (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
        FAIL(-EINVAL, "incompatible_features", h->incompatible_features, QCOW2_OFF_INCOMPAT,
             "bit 3 (compression type) must be clear with zlib compression");
        fmt_error_qemu(err, "qcow2: Compression type incompatible feature bit must not be set");
        return -EINVAL;
    }
    if (h->compression_type != QCOW2_COMPRESSION_ZLIB &&
        !(h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
        FAIL(-EINVAL, "incompatible_features", h->incompatible_features, QCOW2_OFF_INCOMPAT,
             "bit 3 (compression type) must be set with compression_type %u",
             h->compression_type);
        fmt_error_qemu(err, "qcow2: Compression type incompatible feature bit must be set");
        return -EINVAL;
    }

    /* Step 6: unknown incompatible features. */
    if (h->incompatible_features & ~QCOW2_INCOMPAT_MASK) {
        uint64_t unknown = h->incompatible_features & ~QCOW2_INCOMPAT_MASK;
        FAIL(-ENOTSUP, "incompatible_features", h->incompatible_features, QCOW2_OFF_INCOMPAT,
             "unknown bits 0x%llx set", (unsigned long long)unknown);
        report_unsupported(h, buf, buf_len, unknown, err);
        return -ENOTSUP;
    }

    /* Step 7: corrupt images may only be opened read/write for repair. */
    if ((h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && (flags & QCOW2_HDR_RDWR) &&
        !(flags & QCOW2_HDR_CHECK)) {
        FAIL(-EACCES, "incompatible_features", h->incompatible_features, QCOW2_OFF_INCOMPAT,
             "corrupt bit set: image may only be opened read-only or for repair");
        fmt_error_qemu(err, "qcow2: Image is corrupt; cannot be opened read/write");
        return -EACCES;
    }

    /* Step 8: subclusters and refcount width. */
    bool extl2 = h->incompatible_features & QCOW2_INCOMPAT_EXTL2;
    h->subclusters_per_cluster = extl2 ? QCOW2_EXTL2_SUBCLUSTERS : 1;
    h->subcluster_size = h->cluster_size / h->subclusters_per_cluster;
    if (h->subcluster_size < (1u << QCOW2_MIN_CLUSTER_BITS)) {
        FAIL(-EINVAL, "cluster_bits", h->cluster_bits, QCOW2_OFF_CLUSTER_BITS,
             "extended L2 entries need cluster_bits >= 14 (subclusters of 512 bytes)");
        fmt_error_qemu(err, "Unsupported subcluster size: %d", (int)h->subcluster_size);
        return -EINVAL;
    }
    if (h->refcount_order > 6) {
        FAIL(-EINVAL, "refcount_order", h->refcount_order, QCOW2_OFF_REFCOUNT_ORDER,
             "must be 0..6");
        fmt_error_qemu(err, "Reference count entry width too large; may not exceed 64 bits");
        return -EINVAL;
    }

    /* Derived geometry; all shifts are small now that the ranges are checked. */
    h->refcount_bits = 1u << h->refcount_order;
    h->refcount_max = h->refcount_bits == 64 ? UINT64_MAX : (1ull << h->refcount_bits) - 1;
    h->refcount_block_bits = h->cluster_bits + 3 - h->refcount_order;
    h->refcount_block_entries = 1ull << h->refcount_block_bits;
    h->l2_entry_size = extl2 ? 16 : 8;
    h->l2_bits = h->cluster_bits - (extl2 ? 4 : 3);
    h->l2_entries = 1ull << h->l2_bits;
    h->csize_shift = 62 - (h->cluster_bits - 8);
    h->csize_mask = (1ull << (h->cluster_bits - 8)) - 1;
    h->cluster_offset_mask = (1ull << h->csize_shift) - 1;
    h->reftable_entries = (uint64_t)h->refcount_table_clusters << (h->cluster_bits - 3);

    /* Step 10: refcount table. */
    if (h->refcount_table_clusters == 0 && !(flags & QCOW2_HDR_CHECK)) {
        FAIL(-EINVAL, "refcount_table_clusters", 0, QCOW2_OFF_REFTABLE_CLUSTERS,
             "must not be 0");
        fmt_error_qemu(err, "Image does not contain a reference count table");
        return -EINVAL;
    }
    if (!(flags & QCOW2_HDR_SALVAGE)) {
        rc = validate_table(h, h->refcount_table_offset, h->refcount_table_clusters,
                            h->cluster_size, QCOW2_MAX_REFTABLE_SIZE, "Reference count table",
                            "refcount_table_clusters", QCOW2_OFF_REFTABLE_CLUSTERS,
                            "refcount_table_offset", QCOW2_OFF_REFTABLE_OFFSET, err);
        if (rc)
            return rc;
    }

    /* Step 11: snapshot table, skipped in check mode (check reports it itself). */
    if (!(flags & QCOW2_HDR_CHECK)) {
        rc = validate_table(h, h->snapshots_offset, h->nb_snapshots, QCOW2_SNAPSHOT_HDR_SIZE,
                            (uint64_t)QCOW2_SNAPSHOT_HDR_SIZE * QCOW2_MAX_SNAPSHOTS,
                            "Snapshot table", "nb_snapshots", QCOW2_OFF_NB_SNAPSHOTS,
                            "snapshots_offset", QCOW2_OFF_SNAPSHOTS_OFFSET, err);
        if (rc)
            return rc;
    }

    /* Step 12: active L1 table. */
    rc = validate_table(h, h->l1_table_offset,
                        (flags & QCOW2_HDR_SALVAGE) && h->l1_size > QCOW2_MAX_L1_SIZE / 8
                            ? QCOW2_MAX_L1_SIZE / 8 : h->l1_size, 8, QCOW2_MAX_L1_SIZE,
                        "Active L1 table", "l1_size", QCOW2_OFF_L1_SIZE, "l1_table_offset",
                        QCOW2_OFF_L1_OFFSET, err);
    if (rc)
        return rc;
    /* qemu's size_to_l1 can wrap for sizes near 2^64; ours cannot, so such sizes are
     * "too big" here rather than silently accepted (or called too big for the L1 table,
     * which qemu's wrapped count of 0 never is): the opener waives it as qemu goes on. */
    h->l1_vm_state_index = qcow2_size_to_l1(h, h->size);
    bool wraps = size_to_l1_wraps(h, NULL);
    if (h->l1_vm_state_index > INT_MAX || wraps) {
        if (wraps)
            FAIL(-EFBIG, "size", h->size, QCOW2_OFF_SIZE,
                 "is within one L1 entry's span of 2^64 (qemu's L1 count wraps)");
        else
            FAIL(-EFBIG, "size", h->size, QCOW2_OFF_SIZE, "needs %llu L1 entries, more than %d",
                 (unsigned long long)h->l1_vm_state_index, INT_MAX);
        fmt_error_qemu(err, "Image is too big");
        return -EFBIG;
    }
    if (h->l1_size < h->l1_vm_state_index && !(flags & QCOW2_HDR_SALVAGE)) {
        FAIL(-EINVAL, "l1_size", h->l1_size, QCOW2_OFF_L1_SIZE,
             "must be at least %llu to map the virtual size",
             (unsigned long long)h->l1_vm_state_index);
        fmt_error_qemu(err, "L1 table is too small");
        return -EINVAL;
    }
    /* Step 13: qemu checks the method only when it parses the open options, after the
     * L1 checks (so with no refcount table, info and check fail on different rules). */
    if (h->crypt_method > QCOW2_CRYPT_LUKS) {
        FAIL(-EINVAL, "crypt_method", h->crypt_method, QCOW2_OFF_CRYPT_METHOD,
             "must be 0 (none), 1 (AES) or 2 (LUKS)");
        fmt_error_qemu(err, "Unsupported encryption method %d", (int32_t)h->crypt_method);
        return -EINVAL;
    }
    return 0;
}

/* A table [off, off+len) must lie inside the file and not at offset 0 (the header). */
static int table_in_file(uint64_t off, uint64_t len, uint64_t file_size, const char *field,
                         unsigned field_off, const char *what, struct fmt_error *err)
{
    if (len == 0)
        return 0;
    if (off == 0)
        return FAIL(-EINVAL, field, off, field_off, "%s overlaps the header", what);
    if (range_outside(off, len, file_size))
        return FAIL(-EINVAL, field, off, field_off,
                    "%s of %llu bytes extends past the end of the file (%llu bytes)", what,
                    (unsigned long long)len, (unsigned long long)file_size);
    return 0;
}

int qcow2_header_check_layout(const struct qcow2_header *h, uint64_t file_size,
                              struct fmt_error *err)
{
    int rc;

    if (h->refcount_table_clusters == 0)
        return FAIL(-EINVAL, "refcount_table_clusters", 0, QCOW2_OFF_REFTABLE_CLUSTERS,
                    "image has no reference count table");
    rc = table_in_file(h->refcount_table_offset,
                       (uint64_t)h->refcount_table_clusters * h->cluster_size, file_size,
                       "refcount_table_offset", QCOW2_OFF_REFTABLE_OFFSET,
                       "reference count table", err);
    if (!rc)
        rc = table_in_file(h->l1_table_offset, (uint64_t)h->l1_size * 8, file_size,
                           "l1_table_offset", QCOW2_OFF_L1_OFFSET, "active L1 table", err);
    if (!rc)
        rc = table_in_file(h->snapshots_offset,
                           (uint64_t)h->nb_snapshots * QCOW2_SNAPSHOT_HDR_SIZE, file_size,
                           "snapshots_offset", QCOW2_OFF_SNAPSHOTS_OFFSET,
                           "snapshot table (minimum size)", err);
    if (!rc && h->backing_file_offset &&
        range_outside(h->backing_file_offset, h->backing_file_size, file_size))
        rc = FAIL(-EINVAL, "backing_file_offset", h->backing_file_offset,
                  QCOW2_OFF_BACKING_OFFSET, "backing file name extends past the end of the file");
    return rc;
}

int qcow2_header_encode(const struct qcow2_header *h, uint8_t *buf, size_t buf_len)
{
    size_t len;

    if (h->version == 2)
        len = QCOW2_HDR_V2_LEN;
    else if (h->version == 3)
        len = h->header_length == QCOW2_HDR_V3_MIN_LEN ? QCOW2_HDR_V3_MIN_LEN : QCOW2_HDR_V3_LEN;
    else
        return -EINVAL;
    if (buf_len < len)
        return -ENOSPC;
    memset(buf, 0, len);
    be32_put(buf + QCOW2_OFF_MAGIC, QCOW2_MAGIC);
    be32_put(buf + QCOW2_OFF_VERSION, h->version);
    be64_put(buf + QCOW2_OFF_BACKING_OFFSET, h->backing_file_offset);
    be32_put(buf + QCOW2_OFF_BACKING_SIZE, h->backing_file_size);
    be32_put(buf + QCOW2_OFF_CLUSTER_BITS, h->cluster_bits);
    be64_put(buf + QCOW2_OFF_SIZE, h->size);
    be32_put(buf + QCOW2_OFF_CRYPT_METHOD, h->crypt_method);
    be32_put(buf + QCOW2_OFF_L1_SIZE, h->l1_size);
    be64_put(buf + QCOW2_OFF_L1_OFFSET, h->l1_table_offset);
    be64_put(buf + QCOW2_OFF_REFTABLE_OFFSET, h->refcount_table_offset);
    be32_put(buf + QCOW2_OFF_REFTABLE_CLUSTERS, h->refcount_table_clusters);
    be32_put(buf + QCOW2_OFF_NB_SNAPSHOTS, h->nb_snapshots);
    be64_put(buf + QCOW2_OFF_SNAPSHOTS_OFFSET, h->snapshots_offset);
    if (h->version == 3) {
        be64_put(buf + QCOW2_OFF_INCOMPAT, h->incompatible_features);
        be64_put(buf + QCOW2_OFF_COMPAT, h->compatible_features);
        be64_put(buf + QCOW2_OFF_AUTOCLEAR, h->autoclear_features);
        be32_put(buf + QCOW2_OFF_REFCOUNT_ORDER, h->refcount_order);
        be32_put(buf + QCOW2_OFF_HEADER_LENGTH, h->header_length);
        if (len > QCOW2_OFF_COMPRESSION_TYPE)
            buf[QCOW2_OFF_COMPRESSION_TYPE] = h->compression_type;
    }
    return (int)len;
}
