/* QED header (first 64 bytes of cluster 0, little-endian): decode and validate in the order
 * of qemu 7.2's bdrv_qed_do_open(), with its messages in err->qemu_msg.
 *
 * Also the offset predicates the driver and the checker share. They keep qemu's exact
 * arithmetic, including qed_bytes_to_clusters(), which divides by (cluster_size - 1): it
 * maps cluster k to index k + k / (cluster_size - 1), so images larger than about
 * cluster_size^2 show a false leak in qemu-img check. We reproduce it because check
 * output must match; the driver never uses it for addressing. */
#ifndef QIMG_FORMAT_QED_HEADER_H
#define QIMG_FORMAT_QED_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define QED_MAGIC 0x00444551u            /* "QED\0" */
#define QED_HEADER_LEN 64u

#define QED_F_BACKING_FILE            ((uint64_t)0x1)
#define QED_F_NEED_CHECK              ((uint64_t)0x2)
#define QED_F_BACKING_FORMAT_NO_PROBE ((uint64_t)0x4)
#define QED_FEATURE_MASK              ((uint64_t)0x7)
#define QED_AUTOCLEAR_FEATURE_MASK    ((uint64_t)0)

#define QED_MIN_CLUSTER_SIZE (4u * 1024)
#define QED_MAX_CLUSTER_SIZE (64u * 1024 * 1024)
#define QED_MIN_TABLE_SIZE 1u
#define QED_MAX_TABLE_SIZE 16u
#define QED_MAX_BACKING_NAME 4095u       /* qemu: n >= sizeof(auto_backing_file) fails */

/* Field offsets, for error reports and in-place header updates. */
enum {
    QED_OFF_MAGIC = 0, QED_OFF_CLUSTER_SIZE = 4, QED_OFF_TABLE_SIZE = 8,
    QED_OFF_HEADER_SIZE = 12, QED_OFF_FEATURES = 16, QED_OFF_COMPAT = 24,
    QED_OFF_AUTOCLEAR = 32, QED_OFF_L1_OFFSET = 40, QED_OFF_IMAGE_SIZE = 48,
    QED_OFF_BACKING_OFFSET = 56, QED_OFF_BACKING_SIZE = 60,
};

struct qed_header {
    uint32_t magic, cluster_size, table_size, header_size;
    uint64_t features, compat_features, autoclear_features;
    uint64_t l1_table_offset, image_size;
    uint32_t backing_filename_offset, backing_filename_size;
    /* derived */
    uint64_t file_size;      /* file size rounded down to a cluster, as qemu keeps it */
    uint32_t table_nelems;   /* entries per L1/L2 table */
    uint32_t l2_shift;       /* log2(cluster_size) */
    uint32_t l1_shift;       /* l2_shift + log2(table_nelems) */
    uint64_t table_bytes;    /* table_size * cluster_size */
};

/* buf holds the first bytes of the file (zero-padded by the caller past EOF, as qemu's
 * reads are); at least QED_HEADER_LEN of them. file_size is the file's real size.
 * Returns 0 or -EINVAL/-ENOTSUP with err filled. The backing name itself is read by the
 * driver (bytes up to the first NUL of [offset, offset+size)). */
int qed_header_decode(const uint8_t *buf, size_t len, uint64_t file_size,
                      struct qed_header *h, struct fmt_error *err);


/* Encodes the 64 header bytes (for NEED_CHECK / autoclear updates). */
void qed_header_encode(const struct qed_header *h, uint8_t out[QED_HEADER_LEN]);

/* qemu's qed_check_cluster_offset / qed_check_table_offset. */
bool qed_cluster_offset_ok(const struct qed_header *h, uint64_t off);
bool qed_table_offset_ok(const struct qed_header *h, uint64_t off);

/* qemu's qed_bytes_to_clusters(), quirk included (see the top of this file). */
uint64_t qed_bytes_to_clusters_quirk(const struct qed_header *h, uint64_t bytes);

#endif
