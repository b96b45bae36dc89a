/* QED driver internals shared with the checker (checker/qed_check.c). */
#ifndef QIMG_BLOCK_QED_INT_H
#define QIMG_BLOCK_QED_INT_H

#include <stdint.h>

#include "format/qed_header.h"
#include "io/qio.h"

struct qed_state {
    struct qed_header h;
    uint64_t *l1;          /* table_nelems entries */
    uint64_t *l2;          /* one cached L2 table */
    uint64_t l2_offset;    /* its file offset, 0 = none cached */
};

/* Reads the header at offset 0 and validates it (qemu's messages in *errmsg). */
int qed_load_header(qio_t *f, struct qed_header *h, char **errmsg);
/* Reads / writes one whole table (table_nelems little-endian entries) at off. */
int qed_read_table(qio_t *f, const struct qed_header *h, uint64_t off, uint64_t *out);
int qed_write_table(qio_t *f, const struct qed_header *h, uint64_t off, const uint64_t *t);

#endif
