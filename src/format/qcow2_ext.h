/* qcow2 header extensions (digest §1.3) and the backing file name.
 *
 * Both work on the bytes of cluster 0 (buf, buf_len). As with the header, bytes past
 * buf_len read as zero (qemu's reads past EOF do). Allocation is bounded by the cluster
 * size: names are at most one cluster, lists at most cs/8 items. */
#ifndef QIMG_FORMAT_QCOW2_EXT_H
#define QIMG_FORMAT_QCOW2_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"
#include "format/qcow2_header.h"

#define QCOW2_EXT_END             0x00000000u
#define QCOW2_EXT_BACKING_FORMAT  0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE   0x6803f857u
#define QCOW2_EXT_BITMAPS         0x23852875u
#define QCOW2_EXT_CRYPTO          0x0537be77u
#define QCOW2_EXT_DATA_FILE       0x44415441u   /* "DATA" */

#define QCOW2_BACKING_FORMAT_MAX  16u            /* qemu: len >= 16 is refused */
#define QCOW2_FEATURE_ENTRY_SIZE  48u
#define QCOW2_FEATURE_NAME_LEN    46u
#define QCOW2_BITMAPS_EXT_SIZE    24u
#define QCOW2_CRYPTO_EXT_SIZE     16u
#define QCOW2_MAX_BITMAPS         65535u
#define QCOW2_MAX_BITMAP_DIR_SIZE (1024u * 65535u)

enum qcow2_feature_type {
    QCOW2_FEAT_INCOMPAT = 0, QCOW2_FEAT_COMPAT = 1, QCOW2_FEAT_AUTOCLEAR = 2,
};

struct qcow2_feature {
    uint8_t type;                              /* enum qcow2_feature_type, or other */
    uint8_t bit;
    char name[QCOW2_FEATURE_NAME_LEN + 1];     /* NUL-terminated copy */
};

/* Where one extension sits in cluster 0. */
struct qcow2_ext_loc {
    uint32_t magic;
    uint64_t offset;   /* file offset of the 8-byte extension header */
    uint32_t len;      /* data length, without padding */
};

struct qcow2_ext {
    bool has_backing_format;
    char backing_format[QCOW2_BACKING_FORMAT_MAX];     /* NUL-terminated */

    bool has_data_file;
    char *data_file;                 /* allocated, NUL-terminated; may hold inner NULs */
    uint32_t data_file_len;

    /* Last feature-name table seen (qemu keeps the last one). Entries are read in
     * 48-byte units; a partial last entry is zero-padded like qemu does. */
    struct qcow2_feature *features;
    size_t n_features;

    bool has_bitmaps;                /* present and accepted */
    bool bitmaps_ignored;            /* present but autoclear bit 0 clear: qemu warns
                                        "Some clusters may be leaked, ..." and drops it */
    uint32_t nb_bitmaps;
    uint32_t bitmaps_reserved;
    uint64_t bitmap_directory_size;
    uint64_t bitmap_directory_offset;

    bool has_crypto;
    uint64_t crypto_offset;
    uint64_t crypto_length;

    /* Every extension in file order, END excluded; unknown ones also listed apart
     * (qemu writes them back when it rewrites the header). */
    struct qcow2_ext_loc *all;
    size_t n_all;
    struct qcow2_ext_loc *unknown;
    size_t n_unknown;

    bool has_end;                    /* END entry found before ext_end */
    uint64_t end_offset;             /* offset just past END (or where parsing stopped) */
};

/* Parse extensions from h->header_length to h->ext_end. h must be decoded (or at least
 * have cluster_size, header_length, ext_end, crypt_method, autoclear_features set).
 * On error *x holds what was parsed before it (free it anyway). 0 or negative errno. */
int qcow2_ext_parse(const struct qcow2_header *h, const uint8_t *buf, size_t buf_len,
                    struct qcow2_ext *x, struct fmt_error *err);

void qcow2_ext_free(struct qcow2_ext *x);

/* Look a feature up in a parsed table; NULL if absent. */
const char *qcow2_ext_feature_name(const struct qcow2_ext *x, unsigned type, unsigned bit);

/* Backing file name (qemu step 17): if backing_file_offset != 0, the name is
 * backing_file_size bytes at that offset, at most min(1023, cs - offset)
 * ("Backing file name too long"). out gets a NUL-terminated copy, *out_len its length.
 * has_backing is false when backing_file_offset == 0. */
int qcow2_backing_name(const struct qcow2_header *h, const uint8_t *buf, size_t buf_len,
                       char out[QCOW2_MAX_BACKING_NAME + 1], uint32_t *out_len,
                       bool *has_backing, struct fmt_error *err);

/* Append one extension (header, data, zero padding to 8) at *pos in buf; advances *pos.
 * Returns 0 or -ENOSPC. For writing cluster 0 in repair/create/amend. */
int qcow2_ext_encode(uint8_t *buf, size_t buf_len, size_t *pos, uint32_t magic,
                     const void *data, uint32_t len);

#endif
