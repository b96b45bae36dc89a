/* Bitmap directory entries and bitmap table entries (qemu 7.2 qcow2-bitmap.c rules). */
#include "format/qcow2_bitmap.h"

#include <errno.h>
#include <string.h>

#include "format/be.h"

static const char BME[] = "bitmap directory entry";

uint64_t qcow2_bitmap_dirent_size(uint32_t name_size, uint32_t extra_data_size)
{
    uint64_t n = QCOW2_BME_HDR_SIZE + (uint64_t)name_size + extra_data_size;
    return (n + 7) & ~(uint64_t)7;   /* < 2^34, no overflow */
}

uint64_t qcow2_bitmap_table_clusters(uint64_t virtual_size, uint32_t granularity_bits,
                                     uint32_t cluster_bits)
{
    if (!virtual_size || granularity_bits > 63 || cluster_bits > 63)
        return 0;
    uint64_t bits = ((virtual_size - 1) >> granularity_bits) + 1;
    uint64_t bytes = (((bits - 1) >> 6) + 1) * 8;    /* < 2^61: no overflow */
    return ((bytes - 1) >> cluster_bits) + 1;
}

int qcow2_bitmap_dirent_decode(const uint8_t *buf, size_t buf_len, uint64_t entry_file_offset,
                               struct qcow2_bitmap_dirent *e, uint64_t *entry_len,
                               struct fmt_error *err)
{
    memset(e, 0, sizeof(*e));
    *entry_len = 0;
    if (buf_len < QCOW2_BME_HDR_SIZE) {
        fmt_error_set(err, -EINVAL, BME, NULL, buf_len, true, entry_file_offset,
                      "entry header runs past the end of the directory");
        fmt_error_qemu(err, "Broken bitmap directory");
        return -EINVAL;
    }
    e->bitmap_table_offset = be64_get(buf);
    e->bitmap_table_size = be32_get(buf + 8);
    e->flags = be32_get(buf + 12);
    e->type = buf[16];
    e->granularity_bits = buf[17];
    e->name_size = be16_get(buf + 18);
    e->extra_data_size = be32_get(buf + 20);
    e->extra_offset = QCOW2_BME_HDR_SIZE;

    /* Name follows extra data; both must lie inside the directory. */
    uint64_t name_end = QCOW2_BME_HDR_SIZE + (uint64_t)e->extra_data_size + e->name_size;
    if (name_end > buf_len) {
        fmt_error_set(err, -EINVAL, BME, "name_size", e->name_size, true,
                      entry_file_offset + 18,
                      "extra data and name (%llu bytes) run past the end of the directory",
                      (unsigned long long)name_end);
        fmt_error_qemu(err, "Broken bitmap directory");
        return -EINVAL;
    }
    size_t n = e->name_size <= QCOW2_BME_MAX_NAME_SIZE ? e->name_size : QCOW2_BME_MAX_NAME_SIZE;
    memcpy(e->name, buf + QCOW2_BME_HDR_SIZE + e->extra_data_size, n);
    e->name[n] = '\0';
    *entry_len = qcow2_bitmap_dirent_size(e->name_size, e->extra_data_size);
    return 0;
}

#define CFAIL(field, value, off, ...)                                                   \
    do {                                                                                \
        fmt_error_set(err, -EINVAL, BME, field, value, true, entry_file_offset + (off), \
                      __VA_ARGS__);                                                     \
        fmt_error_qemu(err, "Bitmap '%.*s' doesn't satisfy the constraints",            \
                       (int)e->name_size, e->name);                                     \
        return -EINVAL;                                                                 \
    } while (0)

int qcow2_bitmap_dirent_validate(const struct qcow2_bitmap_dirent *e, uint32_t cluster_bits,
                                 uint64_t virtual_size, uint64_t entry_file_offset,
                                 struct fmt_error *err)
{
    if (e->extra_data_size != 0) {
        fmt_error_set(err, -EINVAL, BME, "extra_data_size", e->extra_data_size, true,
                      entry_file_offset + 20, "must be 0");
        fmt_error_qemu(err, "Bitmap extra data is not supported");
        return -EINVAL;
    }
    if (cluster_bits < 9 || cluster_bits > 21)
        return fmt_error_set(err, -EINVAL, BME, "cluster_bits", cluster_bits, false, 0,
                             "invalid image cluster_bits");
    uint64_t cs = 1ull << cluster_bits;
    if (e->bitmap_table_size == 0 || e->bitmap_table_size > QCOW2_BME_MAX_TABLE_SIZE)
        CFAIL("bitmap_table_size", e->bitmap_table_size, 8, "must be 1..0x%x",
              QCOW2_BME_MAX_TABLE_SIZE);
    if (e->bitmap_table_offset == 0 || (e->bitmap_table_offset & (cs - 1)))
        CFAIL("bitmap_table_offset", e->bitmap_table_offset, 0,
              "must be non-zero and cluster aligned");
    if (e->granularity_bits < QCOW2_BME_MIN_GRANULARITY ||
        e->granularity_bits > QCOW2_BME_MAX_GRANULARITY)
        CFAIL("granularity_bits", e->granularity_bits, 17, "must be %u..%u",
              QCOW2_BME_MIN_GRANULARITY, QCOW2_BME_MAX_GRANULARITY);
    if (e->flags & QCOW2_BME_RESERVED_FLAGS)
        CFAIL("flags", e->flags, 12, "reserved bits 0x%x set", e->flags & QCOW2_BME_RESERVED_FLAGS);
    if (e->name_size > QCOW2_BME_MAX_NAME_SIZE)
        CFAIL("name_size", e->name_size, 18, "must be 1..%u", QCOW2_BME_MAX_NAME_SIZE);
    /* qemu accepts an empty name; the spec does not. Our rule, so no qemu_msg. */
    if (e->name_size == 0)
        return fmt_error_set(err, -EINVAL, BME, "name_size", 0, true, entry_file_offset + 18,
                             "must be 1..%u (empty names are not allowed by the spec)",
                             QCOW2_BME_MAX_NAME_SIZE);
    if (e->type != QCOW2_BME_TYPE_DIRTY)
        CFAIL("type", e->type, 16, "must be 1 (dirty tracking bitmap)");
    /* table_size <= 2^27 and cs <= 2^21: product fits; then *8 << 31 fits in 2^63. */
    uint64_t phys = (uint64_t)e->bitmap_table_size * cs;
    if (phys > QCOW2_BME_MAX_PHYS_SIZE)
        CFAIL("bitmap_table_size", e->bitmap_table_size, 8,
              "table covers %llu bytes of clusters, more than 512 MiB",
              (unsigned long long)phys);
    if (!(e->flags & QCOW2_BME_FLAG_IN_USE) &&
        virtual_size > ((phys * 8) << e->granularity_bits))
        CFAIL("bitmap_table_size", e->bitmap_table_size, 8,
              "table does not cover the virtual size %llu", (unsigned long long)virtual_size);
    return 0;
}

void qcow2_bitmap_tentry_decode(uint64_t entry, struct qcow2_bitmap_tentry *out)
{
    out->offset = entry & QCOW2_BME_TABLE_OFFSET_MASK;
    out->all_ones = out->offset == 0 && (entry & QCOW2_BME_TABLE_ALL_ONES);
    out->reserved = entry & QCOW2_BME_TABLE_RESERVED_MASK;
}

int qcow2_bitmap_tentry_validate(uint64_t entry, uint32_t cluster_bits,
                                 uint64_t entry_file_offset, struct fmt_error *err)
{
    static const char BT[] = "bitmap table entry";
    uint64_t off = entry & QCOW2_BME_TABLE_OFFSET_MASK;

    if (entry & QCOW2_BME_TABLE_RESERVED_MASK)
        return fmt_error_set(err, -EINVAL, BT, "entry", entry, true, entry_file_offset,
                             "reserved bits set");
    if (off && (entry & QCOW2_BME_TABLE_ALL_ONES))
        return fmt_error_set(err, -EINVAL, BT, "entry", entry, true, entry_file_offset,
                             "bit 0 must be clear when an offset is set");
    if (cluster_bits < 9 || cluster_bits > 21 || (off & ((1ull << cluster_bits) - 1)))
        return fmt_error_set(err, -EINVAL, BT, "entry", entry, true, entry_file_offset,
                             "data cluster offset is not cluster aligned");
    return 0;
}
