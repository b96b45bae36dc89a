/* Batched L2 table reads: a run of L1 entries whose tables are adjacent on disk is read
 * with one pread (up to L2_BATCH_BYTES), so walking 16.7M clusters costs ~64 syscalls. */
#ifndef QIMG_CHECKER_QCOW2_L2READ_H
#define QIMG_CHECKER_QCOW2_L2READ_H

#include <stdbool.h>
#include <stdint.h>

struct qc2;

#define L2_BATCH_BYTES (2u << 20)

struct l2_reader {
    uint8_t *buf;
    uint64_t off, len;        /* bytes of the file held in buf */
    uint64_t cap;
    bool huge;                /* buf from hugebuf_alloc (else the heap) */
};

/* The batch never exceeds the file (rounded up to a cluster), so a small image costs a
 * small buffer. */
void l2_reader_init(struct l2_reader *r, uint64_t cluster_size, uint64_t file_size);
void l2_reader_free(struct l2_reader *r);
/* The cluster_size bytes at off (the table l1[i] names); 0 or -errno. */
int l2_reader_get(struct qc2 *s, struct l2_reader *r, const uint64_t *l1, uint64_t l1_n,
                  uint64_t i, uint64_t off, const uint8_t **out);

#endif
