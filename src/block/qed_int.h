/* QED driver internals shared with the checker (checker/qed_check.c). */
#ifndef QIMG_BLOCK_QED_INT_H
#define QIMG_BLOCK_QED_INT_H

#include <stdint.h>

#include "format/qed_header.h"
#include "block/image.h"
#include "io/qio.h"
#include "io/wport.h"

struct qed_state {
    struct qed_header h;
    uint64_t *l1;          /* table_nelems entries */
    uint64_t *l2;          /* one cached L2 table */
    uint64_t l2_offset;    /* its file offset, 0 = none cached */
    struct wport w;        /* metadata writes (read-write opens only) */
};

/* qed_find_cluster's answers. */
enum { QED_FOUND, QED_ZERO, QED_UNALLOC };
/* Classifies the run at pos (img is a QED image), shortening *len to it; *host is the L2
 * entry of its first cluster. QED_* or -errno. */
int qed_find_cluster(image_t *img, uint64_t pos, uint64_t *len, uint64_t *host);

/* The write side (qed_write.c); s->w set up by a read-write open. */
int qed_write_header(struct qed_state *s);
int qed_write(image_t *img, uint64_t off, const void *buf, size_t n);
int qed_write_zeroes(image_t *img, uint64_t off, uint64_t n, bool may_unmap);
int qed_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc, char **errmsg);

/* Reads the header at offset 0 and validates it (qemu's messages in *errmsg). */
int qed_load_header(qio_t *f, struct qed_header *h, char **errmsg);
/* Reads one whole table (table_nelems little-endian entries) at off. Tables are written
 * through the write port only (qed_write.c, checker/qed_check.c). */
int qed_read_table(qio_t *f, const struct qed_header *h, uint64_t off, uint64_t *out);

#endif
