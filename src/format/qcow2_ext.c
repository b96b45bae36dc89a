/* qcow2 header extension parser: qemu 7.2 qcow2_read_extensions() rules and texts. */
#include "format/qcow2_ext.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "util/xalloc.h"

static const char EXT[] = "qcow2 header extension";

/* Copy [off, off+len) of cluster 0; bytes past buf_len read as zero (qemu's EOF). */
static void copy_zf(const uint8_t *buf, size_t buf_len, uint64_t off, uint64_t len, void *dst)
{
    memset(dst, 0, len);
    if (off >= buf_len)
        return;
    uint64_t avail = buf_len - off;
    memcpy(dst, buf + off, avail < len ? avail : len);
}

static void push_loc(struct qcow2_ext_loc **arr, size_t *n, uint32_t magic, uint64_t off,
                     uint32_t len)
{
    /* n is bounded by cs/8: each extension takes at least 8 bytes of cluster 0. */
    *arr = xreallocarray(*arr, *n + 1, sizeof(**arr));
    (*arr)[*n] = (struct qcow2_ext_loc){ .magic = magic, .offset = off, .len = len };
    (*n)++;
}

static void parse_features(struct qcow2_ext *x, const uint8_t *data, uint32_t len)
{
    size_t n = (len + QCOW2_FEATURE_ENTRY_SIZE - 1) / QCOW2_FEATURE_ENTRY_SIZE;

    free(x->features);              /* qemu keeps only the last table */
    x->features = n ? xcalloc(n, sizeof(*x->features)) : NULL;
    x->n_features = n;
    for (size_t i = 0; i < n; i++) {
        uint8_t e[QCOW2_FEATURE_ENTRY_SIZE] = { 0 };   /* partial entry: zero-padded */
        size_t off = i * QCOW2_FEATURE_ENTRY_SIZE;
        size_t take = len - off < sizeof(e) ? len - off : sizeof(e);
        memcpy(e, data + off, take);
        x->features[i].type = e[0];
        x->features[i].bit = e[1];
        memcpy(x->features[i].name, e + 2, QCOW2_FEATURE_NAME_LEN);
        x->features[i].name[QCOW2_FEATURE_NAME_LEN] = '\0';
    }
}

static int parse_bitmaps(const struct qcow2_header *h, struct qcow2_ext *x, const uint8_t *d,
                         uint32_t len, uint64_t off, struct fmt_error *err)
{
    if (len != QCOW2_BITMAPS_EXT_SIZE) {
        fmt_error_set(err, -EINVAL, EXT, "bitmaps.len", len, true, off + 4, "must be 24");
        fmt_error_qemu(err, "bitmaps_ext: Invalid extension length");
        return -EINVAL;
    }
    if (!(h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        /* Not an error: qemu warns and drops the extension on the next header write. */
        x->bitmaps_ignored = true;
        return 0;
    }
    x->nb_bitmaps = be32_get(d);
    x->bitmaps_reserved = be32_get(d + 4);
    x->bitmap_directory_size = be64_get(d + 8);
    x->bitmap_directory_offset = be64_get(d + 16);
    if (x->bitmaps_reserved != 0) {
        fmt_error_set(err, -EINVAL, EXT, "bitmaps.reserved32", x->bitmaps_reserved, true,
                      off + 12, "must be 0");
        fmt_error_qemu(err, "bitmaps_ext: Reserved field is not zero");
        return -EINVAL;
    }
    if (x->nb_bitmaps > QCOW2_MAX_BITMAPS) {
        fmt_error_set(err, -EINVAL, EXT, "bitmaps.nb_bitmaps", x->nb_bitmaps, true, off + 8,
                      "must be at most %u", QCOW2_MAX_BITMAPS);
        fmt_error_qemu(err, "bitmaps_ext: Image has %u bitmaps, exceeding the QEMU "
                       "supported maximum of %d", x->nb_bitmaps, (int)QCOW2_MAX_BITMAPS);
        return -EINVAL;
    }
    if (x->nb_bitmaps == 0) {
        fmt_error_set(err, -EINVAL, EXT, "bitmaps.nb_bitmaps", 0, true, off + 8,
                      "must not be 0");
        fmt_error_qemu(err, "found bitmaps extension with zero bitmaps");
        return -EINVAL;
    }
    if (x->bitmap_directory_offset & (h->cluster_size - 1)) {
        fmt_error_set(err, -EINVAL, EXT, "bitmaps.bitmap_directory_offset",
                      x->bitmap_directory_offset, true, off + 24, "must be cluster aligned");
        fmt_error_qemu(err, "bitmaps_ext: invalid bitmap directory offset");
        return -EINVAL;
    }
    if (x->bitmap_directory_size > QCOW2_MAX_BITMAP_DIR_SIZE) {
        fmt_error_set(err, -EINVAL, EXT, "bitmaps.bitmap_directory_size",
                      x->bitmap_directory_size, true, off + 16, "must be at most %u",
                      QCOW2_MAX_BITMAP_DIR_SIZE);
        fmt_error_qemu(err, "bitmaps_ext: bitmap directory size (%llu) exceeds the maximum "
                       "supported size (%d)", (unsigned long long)x->bitmap_directory_size,
                       (int)QCOW2_MAX_BITMAP_DIR_SIZE);
        return -EINVAL;
    }
    x->has_bitmaps = true;
    return 0;
}

static int parse_crypto(const struct qcow2_header *h, struct qcow2_ext *x, const uint8_t *d,
                        uint32_t len, uint64_t off, struct fmt_error *err)
{
    if (h->crypt_method != QCOW2_CRYPT_LUKS) {
        fmt_error_set(err, -EINVAL, EXT, "crypt_method", h->crypt_method, false, 0,
                      "crypto header extension requires crypt_method 2 (LUKS)");
        fmt_error_qemu(err, "CRYPTO header extension only expected with LUKS encryption method");
        return -EINVAL;
    }
    if (len != QCOW2_CRYPTO_EXT_SIZE) {
        fmt_error_set(err, -EINVAL, EXT, "crypto.len", len, true, off + 4, "must be 16");
        fmt_error_qemu(err, "CRYPTO header extension size %u, but expected size %u", len,
                       QCOW2_CRYPTO_EXT_SIZE);
        return -EINVAL;
    }
    x->crypto_offset = be64_get(d);
    x->crypto_length = be64_get(d + 8);
    if (x->crypto_offset & (h->cluster_size - 1)) {
        fmt_error_set(err, -EINVAL, EXT, "crypto.offset", x->crypto_offset, true, off + 8,
                      "must be cluster aligned");
        fmt_error_qemu(err, "Encryption header offset '%llu' is not a multiple of cluster "
                       "size '%llu'", (unsigned long long)x->crypto_offset,
                       (unsigned long long)h->cluster_size);
        return -EINVAL;
    }
    x->has_crypto = true;
    return 0;
}

int qcow2_ext_parse(const struct qcow2_header *h, const uint8_t *buf, size_t buf_len,
                    struct qcow2_ext *x, struct fmt_error *err)
{
    uint64_t offset = h->header_length, end = h->ext_end;
    uint8_t *data = NULL;
    int rc = 0;

    memset(x, 0, sizeof(*x));
    /* end <= cs <= 2 MiB (validated header), so every length below is small. */
    if (end > h->cluster_size || h->cluster_size == 0)
        return fmt_error_set(err, -EINVAL, EXT, "ext_end", end, false, 0,
                             "header not decoded: extension area exceeds the cluster");
    while (offset < end) {
        uint8_t eh[8];
        uint64_t hdr_off = offset;

        copy_zf(buf, buf_len, offset, 8, eh);
        uint32_t magic = be32_get(eh), len = be32_get(eh + 4);
        offset += 8;
        if (offset > end || len > end - offset) {
            rc = fmt_error_set(err, -EINVAL, EXT, "len", len, true, hdr_off + 4,
                               "extension 0x%08x does not fit before offset 0x%llx", magic,
                               (unsigned long long)end);
            fmt_error_qemu(err, "Header extension too large");
            break;
        }
        if (magic == QCOW2_EXT_END) {
            x->has_end = true;
            break;
        }
        data = xmalloc(len ? len : 1);
        copy_zf(buf, buf_len, offset, len, data);
        push_loc(&x->all, &x->n_all, magic, hdr_off, len);

        switch (magic) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (len >= QCOW2_BACKING_FORMAT_MAX) {
                rc = fmt_error_set(err, -EINVAL, EXT, "backing_format.len", len, true,
                                   hdr_off + 4, "must be less than %u", QCOW2_BACKING_FORMAT_MAX);
                fmt_error_qemu(err, "ERROR: ext_backing_format: len=%u too large (>=%u)", len,
                               QCOW2_BACKING_FORMAT_MAX);
                break;
            }
            memcpy(x->backing_format, data, len);
            x->backing_format[len] = '\0';
            x->has_backing_format = true;
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            parse_features(x, data, len);
            break;
        case QCOW2_EXT_CRYPTO:
            rc = parse_crypto(h, x, data, len, hdr_off, err);
            break;
        case QCOW2_EXT_BITMAPS:
            rc = parse_bitmaps(h, x, data, len, hdr_off, err);
            break;
        case QCOW2_EXT_DATA_FILE:
            free(x->data_file);
            x->data_file = xmalloc((size_t)len + 1);
            memcpy(x->data_file, data, len);
            x->data_file[len] = '\0';
            x->data_file_len = len;
            x->has_data_file = true;
            break;
        default:
            push_loc(&x->unknown, &x->n_unknown, magic, hdr_off, len);
            break;
        }
        free(data);
        data = NULL;
        if (rc)
            break;
        offset += ((uint64_t)len + 7) & ~(uint64_t)7;
    }
    x->end_offset = offset;
    return rc;
}

void qcow2_ext_free(struct qcow2_ext *x)
{
    free(x->data_file);
    free(x->features);
    free(x->all);
    free(x->unknown);
    memset(x, 0, sizeof(*x));
}

const char *qcow2_ext_feature_name(const struct qcow2_ext *x, unsigned type, unsigned bit)
{
    for (size_t i = 0; i < x->n_features && x->features[i].name[0]; i++)
        if (x->features[i].type == type && x->features[i].bit == bit)
            return x->features[i].name;
    return NULL;
}

int qcow2_backing_name(const struct qcow2_header *h, const uint8_t *buf, size_t buf_len,
                       char out[QCOW2_MAX_BACKING_NAME + 1], uint32_t *out_len,
                       bool *has_backing, struct fmt_error *err)
{
    out[0] = '\0';
    *out_len = 0;
    *has_backing = h->backing_file_offset != 0;
    if (!*has_backing)
        return 0;
    /* Decode guarantees backing_file_offset <= cs. */
    uint64_t room = h->cluster_size - h->backing_file_offset;
    uint64_t max = room < QCOW2_MAX_BACKING_NAME ? room : QCOW2_MAX_BACKING_NAME;
    if (h->backing_file_offset > h->cluster_size || h->backing_file_size > max) {
        fmt_error_set(err, -EINVAL, "qcow2 header", "backing_file_size", h->backing_file_size,
                      true, 16, "must be at most %llu (1023 and the rest of the cluster)",
                      (unsigned long long)max);
        fmt_error_qemu(err, "Backing file name too long");
        return -EINVAL;
    }
    copy_zf(buf, buf_len, h->backing_file_offset, h->backing_file_size, out);
    out[h->backing_file_size] = '\0';
    *out_len = h->backing_file_size;
    return 0;
}

int qcow2_ext_encode(uint8_t *buf, size_t buf_len, size_t *pos, uint32_t magic,
                     const void *data, uint32_t len)
{
    uint64_t padded = ((uint64_t)len + 7) & ~(uint64_t)7;
    if (range_outside(*pos, 8 + padded, buf_len))
        return -ENOSPC;
    be32_put(buf + *pos, magic);
    be32_put(buf + *pos + 4, len);
    memset(buf + *pos + 8, 0, padded);
    if (len)
        memcpy(buf + *pos + 8, data, len);
    *pos += 8 + padded;
    return 0;
}
